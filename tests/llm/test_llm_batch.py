"""jobs.llm_batch through Ray Data LLM on the tiny model (the job run as a subprocess with its embedded
Ray, as `ray job submit` would run it): completions with token counts and timings, greedy text equal
to transformers, and resume by shard (a deleted shard is recomputed identically, the others skipped)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

TINY_PRESET = Path(__file__).resolve().parents[2] / "configs" / "llm" / "tiny.yaml"
PROMPTS = ["The state of a", "A sweep runs the same", "Information flows", "Two trajectories"]


def _run(args, env):
    return subprocess.run([sys.executable, "-m", "jobs.llm_batch", *args], capture_output=True, text=True,
                          timeout=900, env=env)


def test_batch_job_writes_shards_and_resumes(tiny_dir, hf_tiny, tmp_path):
    import torch

    tok, model = hf_tiny
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": p}) + "\n" for i, p in enumerate(PROMPTS)))
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)
    common = ["--config", str(TINY_PRESET), "--set", f"model_source={tiny_dir}", "--out", str(out), "--profile", "cpu",
              "--shard-size", "2", "--max-tokens", "12", "--batch-size", "4"]
    args = [*common, "--prompts", str(prompts)]
    first = _run(args, env)
    assert first.returncode == 0, first.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows"] == 4 and summary["shards_run"] == 2 and summary["generated_tokens"] > 0
    rows = pd.concat([pd.read_parquet(out / "shards" / f"shard-{k:06d}.parquet") for k in (0, 1)])
    assert list(rows["id"]) == ["p0", "p1", "p2", "p3"]
    assert (rows["time_taken_llm_s"] > 0).all() and (rows["num_generated_tokens"] <= 12).all()
    for prompt, (_, row) in zip(PROMPTS, rows.iterrows()):
        ids = tok(prompt, return_tensors="pt").input_ids
        assert row["num_input_tokens"] == ids.shape[1]
        with torch.no_grad():
            ref = model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
        assert row["generated_text"] == tok.decode(ref[0, ids.shape[1]:], skip_special_tokens=True), prompt

    shard1 = out / "shards" / "shard-000001.parquet"
    before = pd.read_parquet(shard1)
    shard1.unlink()
    second = _run(args, env)
    assert second.returncode == 0, second.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["shards_run"] == 1 and summary["shards_skipped"] == 1
    after = pd.read_parquet(shard1)
    pd.testing.assert_frame_equal(before.drop(columns="time_taken_llm_s"), after.drop(columns="time_taken_llm_s"))

    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"prompt": "something else"}) + "\n")
    refused = _run([*common, "--prompts", str(other)], env)
    assert refused.returncode == 2 and "out:" in refused.stderr and "different LLM batch" in refused.stderr


def test_batch_job_bad_input_exits_2_before_ray(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"no_prompt": 1}\n')
    env = {**os.environ}
    config = tmp_path / "c.yaml"
    config.write_text("model_id: x\nmodel_source: /no/such/dir\n")
    done = _run(["--config", str(config), "--prompts", str(prompts), "--out", str(tmp_path / "o")], env)
    assert done.returncode == 2 and "/no/such/dir" in done.stderr
    config.write_text(f"model_id: x\nmodel_source: {tmp_path}\nmax_model_len: 1\n")
    done = _run(["--config", str(config), "--prompts", str(prompts), "--out", str(tmp_path / "o")], env)
    assert done.returncode == 2 and "max_model_len" in done.stderr
