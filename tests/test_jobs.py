"""A real `ray job submit` of the sweep job against a local head (conftest `job_head`: a `ray start --head`
process with its own temp dir and ports), then a resubmission that resumes."""
from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _wait(client, job_id: str, timeout: float = 600) -> str:
    from ray.job_submission import JobStatus

    deadline = time.time() + timeout
    while time.time() < deadline:
        status = client.get_job_status(job_id)
        if status in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
            return status
        time.sleep(1)
    raise TimeoutError(job_id)


def _summary(logs: str) -> dict:
    match = re.search(r"^\{\n.*?^\}", logs, flags=re.S | re.M)
    assert match, logs[-2000:]
    return json.loads(match.group(0))


def test_sweep_job_submits_completes_and_resumes(job_head, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(job_head)
    out = tmp_path / "job_out"
    entry = (f"{sys.executable} -m jobs.sweep --config configs/sweep/ci_tiny.yaml --out {out} "
             f"--set workers.num_gpus=0 --no-progress")
    env = {"working_dir": str(ROOT), "env_vars": {"RAY_AUTH_MODE": "disabled"}}
    first = client.submit_job(entrypoint=entry, runtime_env=env)
    assert _wait(client, first) == JobStatus.SUCCEEDED, client.get_job_logs(first)[-3000:]
    logs = client.get_job_logs(first)
    s1 = _summary(logs)
    assert (s1["n_points"], s1["chunks_computed"], s1["chunks_skipped"]) == (36, 4, 0)
    assert "connected to Ray" in logs
    table = pd.read_parquet(out / "trajectories.parquet")
    assert len(table) == 36 and {"a", "b", "x_0", "x_final", "lyapunov_max", "regime"} <= set(table.columns)
    assert (out / "regime_map.png").stat().st_size > 10_000
    assert json.loads((out / "summary.json").read_text())["n_points"] == 36

    second = client.submit_job(entrypoint=entry, runtime_env=env)
    assert _wait(client, second) == JobStatus.SUCCEEDED, client.get_job_logs(second)[-3000:]
    s2 = _summary(client.get_job_logs(second))
    assert (s2["chunks_computed"], s2["chunks_skipped"]) == (0, 4)
    pd.testing.assert_frame_equal(table, pd.read_parquet(out / "trajectories.parquet"))


def test_bad_config_fails_with_the_field_named(job_head, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(job_head)
    entry = (f"{sys.executable} -m jobs.sweep --config configs/sweep/ci_tiny.yaml --out {tmp_path / 'x'} "
             f"--set solver.rtol=5")
    job = client.submit_job(entrypoint=entry, runtime_env={"working_dir": str(ROOT)})
    assert _wait(client, job) == JobStatus.FAILED
    assert "solver.rtol" in client.get_job_logs(job)
