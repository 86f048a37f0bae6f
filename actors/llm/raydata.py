"""Batch inference through Ray Data LLM (`ray.data.llm`): an EngineSpec -> `vLLMEngineProcessorConfig`, the
prompts in shards, each finished shard written atomically as it completes (a rerun skips them).

    from actors.llm.raydata import run_batch
    summary = run_batch(spec, rows, Path("runs/batch"), shard_size=64)

Rows are {"id", "prompt"} or {"id", "messages"} (chat, the model's chat template applied), with optional
per-row "max_tokens", "temperature", "top_p", "top_k", "seed". The vLLM engine tokenizes and
detokenizes itself unless `tokenizer_stages` (separate Ray Data stages: two more actor pools, which
cost start-up time on a small machine). One pipeline runs every missing shard
(order preserved), so the engine starts once per run; a shard is written when its last row arrives.
Output: DIR/shards/shard-NNNNNN.parquet (id, prompt, generated_text, num_input_tokens,
num_generated_tokens, time_taken_llm_s, shard), DIR/spec.json (what the directory holds), DIR/summary.json.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from pydantic import Field

from actors.common.config import Strict
from actors.common.storage import atomic_write_json, claim_out_dir, parquet_store
from actors.llm.config import EngineSpec, engine_kwargs, runtime_env_vars

__all__ = ["BatchOptions", "load_prompts", "processor_config", "run_batch"]

COLUMNS = ["id", "prompt", "generated_text", "num_input_tokens", "num_generated_tokens", "time_taken_llm_s", "shard"]


class BatchOptions(Strict):
    """How the batch runs (the sampling defaults apply to rows that do not set their own)."""

    shard_size: int = Field(64, ge=1, le=1_000_000)
    batch_size: int = Field(16, ge=1, le=4096)        # rows per call to the engine actor
    concurrency: int = Field(1, ge=1, le=1024)        # engine replicas (data parallel)
    max_tokens: int = Field(64, ge=1, le=1_048_576)
    temperature: float = Field(0.0, ge=0, le=100)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    stage_cpus: float = Field(0.2, gt=0, le=64)       # each CPU stage (chat template, tokenize, detokenize, pre/post)
    tokenizer_stages: bool = False    # tokenize / detokenize in Ray Data stages (else inside the vLLM engine)


def load_prompts(path: Path) -> list[dict[str, Any]]:
    """The JSONL prompts file: one object per line with "prompt" (text) or "messages" (chat)."""
    from actors.common.errors import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError("--prompts", f"no such file {str(path)!r}", "a JSONL file")
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise InputError("--prompts", f"{path}:{i}: not JSON ({exc})", "one JSON object per line") from None
        if not isinstance(row, dict) or not (isinstance(row.get("prompt"), str) or isinstance(row.get("messages"), list)):
            raise InputError("--prompts", f"{path}:{i}: needs a \"prompt\" string or a \"messages\" list",
                             '{"prompt": "..."} or {"messages": [{"role": "user", "content": "..."}]}')
        row.setdefault("id", str(len(rows)))
        rows.append(row)
    if not rows:
        raise InputError("--prompts", f"{path} holds no prompts", "at least one JSON line")
    return rows


def processor_config(spec: EngineSpec, opts: BatchOptions, chat: bool) -> Any:
    """The `vLLMEngineProcessorConfig` running `spec`'s engine (CPU or GPU by the spec, as in Serve)."""
    from ray.data.llm import vLLMEngineProcessorConfig

    kw: dict[str, Any] = {}
    if spec.on_cpu:
        kw["placement_group_config"] = {"bundles": [{"CPU": spec.cpus_per_worker}]}
    elif spec.accelerator != "gpu":
        kw["accelerator_type"] = spec.accelerator
    config = vLLMEngineProcessorConfig(
        model_source=spec.source_path(), engine_kwargs=engine_kwargs(spec), batch_size=opts.batch_size,
        concurrency=opts.concurrency, runtime_env={"env_vars": runtime_env_vars(spec)}, log_engine_metrics=spec.log_engine_metrics,
        # small CPU shares for the CPU stages: on a 2-core machine the engine actor and four 1-CPU stage
        # actors would not all fit, and the pipeline would wait forever for its detokenizer
        chat_template_stage={"enabled": chat, "num_cpus": opts.stage_cpus},
        tokenize_stage={"enabled": opts.tokenizer_stages, "num_cpus": opts.stage_cpus},
        detokenize_stage={"enabled": opts.tokenizer_stages, "num_cpus": opts.stage_cpus}, **kw)
    return config


def _sampling(row: dict[str, Any], opts: BatchOptions) -> dict[str, Any]:
    return {"max_tokens": int(row.get("max_tokens", opts.max_tokens)),
            "temperature": float(row.get("temperature", opts.temperature)),
            "top_p": float(row.get("top_p", opts.top_p)), "top_k": int(row.get("top_k", -1)),
            "seed": int(row.get("seed", opts.seed)), "detokenize": not opts.tokenizer_stages}


def run_batch(spec: EngineSpec, rows: list[dict[str, Any]], out: Path, opts: BatchOptions | None = None,
              prompts_file: str | None = None) -> dict[str, Any]:
    """Complete every row through Ray Data LLM into `out`, shard by shard; resumes a partial run."""
    import pandas as pd
    import ray
    from ray.data.llm import build_processor

    opts = opts or BatchOptions()
    out = Path(out)
    fingerprint = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
    claim_out_dir(out, {"engine": spec.model_dump(), "options": opts.model_dump(), "prompts_sha256": fingerprint},
                  "LLM batch")
    store = parquet_store(out / "shards", "shard-{:06d}.parquet")
    shards = [rows[i:i + opts.shard_size] for i in range(0, len(rows), opts.shard_size)]
    todo = [k for k in range(len(shards)) if store.load(k) is None]
    t0 = time.perf_counter()
    chat = any("messages" in r for r in rows)
    if todo:
        items = [{"id": str(r["id"]), "shard": k, "sampling_params": _sampling(r, opts),
                  **({"messages": r["messages"]} if chat else {"prompt": r["prompt"]})}
                 for k in todo for r in shards[k]]
        small = {"num_cpus": opts.stage_cpus}
        processor = build_processor(processor_config(spec, opts, chat), preprocess_map_kwargs=small,
                                    postprocess_map_kwargs=small, postprocess=lambda row: {
            "id": row["id"], "shard": row["shard"], "prompt": row.get("prompt", ""),
            "generated_text": row["generated_text"], "num_input_tokens": row["num_input_tokens"],
            "num_generated_tokens": row["num_generated_tokens"], "time_taken_llm_s": row["time_taken_llm"]})
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        pending: dict[int, list[dict]] = {}
        for row in processor(ray.data.from_items(items)).iter_rows():
            k = int(row["shard"])
            pending.setdefault(k, []).append({c: row[c] for c in COLUMNS})
            if len(pending[k]) == len(shards[k]):
                store.save(k, pd.DataFrame(pending.pop(k), columns=COLUMNS))
                print(f"shard {k}: {len(shards[k])} rows written", flush=True)
    frames = [pd.read_parquet(store.path(k)) for k in range(len(shards))]
    done = pd.concat(frames, ignore_index=True)
    summary = {"model_id": spec.model_id, "rows": len(done), "shards": len(shards), "shards_run": len(todo),
               "shards_skipped": len(shards) - len(todo), "input_tokens": int(done["num_input_tokens"].sum()),
               "generated_tokens": int(done["num_generated_tokens"].sum()),
               "seconds": round(time.perf_counter() - t0, 2), "prompts": prompts_file}
    if todo:
        summary["generated_tokens_per_s"] = round(
            float(done[done["shard"].isin(todo)]["num_generated_tokens"].sum()) / max(summary["seconds"], 1e-9), 2)
    atomic_write_json(out / "summary.json", summary)
    return summary
