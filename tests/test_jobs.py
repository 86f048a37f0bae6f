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
    # issue 11, finding 7: the resubmission kept the first run's summary (summary.json is the latest run,
    # summaries.jsonl one line per run) and every output is readable by others (0644)
    runs = [json.loads(line) for line in (out / "summaries.jsonl").read_text().splitlines()]
    assert [(r["chunks_computed"], r["chunks_skipped"]) for r in runs] == [(4, 0), (0, 4)]
    assert json.loads((out / "summary.json").read_text()) == runs[-1] and runs[0]["started_at"] <= runs[1]["started_at"]
    outputs = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in outputs} >= {"summary.json", "summaries.jsonl", "spec.json", "trajectories.parquet",
                                         "regime_map.png", "chunk-000000.parquet"}
    assert {oct(p.stat().st_mode & 0o777) for p in outputs} == {"0o644"}


def test_bad_config_fails_with_the_field_named(job_head, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(job_head)
    entry = (f"{sys.executable} -m jobs.sweep --config configs/sweep/ci_tiny.yaml --out {tmp_path / 'x'} "
             f"--set solver.rtol=5")
    job = client.submit_job(entrypoint=entry, runtime_env={"working_dir": str(ROOT)})
    assert _wait(client, job) == JobStatus.FAILED
    assert "solver.rtol" in client.get_job_logs(job)


# ---- validation before Ray (issue 11, finding 4) ------------------------------------------------------------
def _job(args: list[str], timeout: float = 120) -> tuple[int, str, float]:
    """(exit status, stderr, seconds) of `python -m jobs.<...>` in a fresh process, as a user runs it."""
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=ROOT, env=env,
                         timeout=timeout)
    return out.returncode, out.stderr, time.perf_counter() - t0


JOBS = [("jobs.sweep", "configs/sweep/ci_tiny.yaml", []),
        ("jobs.bifurcation", "configs/bifurcation/brusselator_ci.yaml", ["--ray"]),
        ("jobs.continuation", "configs/continuation/lorenz_rho.yaml", [])]


@pytest.mark.parametrize(("job", "config", "extra"), JOBS, ids=[j for j, _, _ in JOBS])
def test_a_wrong_model_name_fails_at_once_before_ray(tmp_path, job, config, extra):
    """jobs.sweep with an unknown model started Ray, failed in a worker after ~40 s with a traceback and
    exit 1. Every job now checks the spec's names first: the documented one-line error, exit 2, no Ray."""
    rc, err, seconds = _job([job, "--config", config, "--out", str(tmp_path / "o"), "--set", "model=x", *extra])
    assert rc == 2, err[-2000:]
    assert err.startswith("error: model: unknown model 'x' (allowed: ") and "lorenz" in err, err[-2000:]
    assert "Traceback" not in err and "Ray" not in err
    assert seconds < 15, seconds    # interpreter, torch and SymPy imports: a few seconds on a loaded CI core
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("job", "config", "extra"), JOBS, ids=[j for j, _, _ in JOBS])
def test_missing_files_and_bad_names_are_clean_errors(tmp_path, job, config, extra):
    """A missing config, a missing --model file, a bad name inside the spec: one error line, exit 2."""
    rc, err, _ = _job([job, "--config", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o"), *extra])
    assert (rc, err.strip()) == (2, f"error: --config: no such file '{tmp_path / 'nope.yaml'}' "
                                    "(allowed: a readable YAML file)")
    rc, err, _ = _job([job, "--config", config, "--out", str(tmp_path / "o"), "--model", str(tmp_path / "m.yaml"),
                       *extra])
    assert rc == 2 and err.startswith("error: --model: no such file") and "Traceback" not in err, err
    bad = {"jobs.sweep": "params.nope=1", "jobs.bifurcation": "parameter=nope", "jobs.continuation": "parameter=nope"}
    rc, err, _ = _job([job, "--config", config, "--out", str(tmp_path / "o"), "--set", bad[job], *extra])
    field = bad[job].split("=")[0]
    assert rc == 2 and err.startswith(f"error: {field}: ") and "Traceback" not in err, err


# ---- user models as data (issue 11, finding 5) ---------------------------------------------------------------
CUBIC = ("name: cubic_job_test\nstates: [x]\nparams: {mu: 0.0}\ninitial_state: {x: -1.2}\n"
         "equations: {x: mu + x - x^3}\n")
CUBIC_CONT = {"name": "cubic", "parameter": "mu", "bounds": [-1.0, 1.0],
              "branches": [{"start": -1.0, "initial_state": {"x": -1.2}}], "settings": {"step_max": 0.05}}


def _folds(out: Path) -> list[float]:
    return sorted(p["param"] for p in json.loads((out / "special_points.json").read_text()) if p["kind"] == "fold")


def test_continuation_with_a_model_file_and_an_inline_model(tmp_path):
    """x' = mu + x - x^3 from a file outside the repository (--model) and inline under `model:`: the
    S-curve's folds at mu = -+2 / (3 sqrt 3), both ways."""
    import yaml

    from jobs.continuation import main

    (tmp_path / "cubic.yaml").write_text(CUBIC)
    (tmp_path / "by_name.yaml").write_text(yaml.safe_dump({**CUBIC_CONT, "model": "cubic_job_test"}))
    (tmp_path / "inline.yaml").write_text(yaml.safe_dump({**CUBIC_CONT, "model": yaml.safe_load(CUBIC)}))
    fold = 2 / (3 * 3 ** 0.5)
    assert main(["--config", str(tmp_path / "by_name.yaml"), "--out", str(tmp_path / "a"),
                 "--model", str(tmp_path / "cubic.yaml")]) == 0
    assert main(["--config", str(tmp_path / "inline.yaml"), "--out", str(tmp_path / "b")]) == 0
    for out in ("a", "b"):
        folds = _folds(tmp_path / out)
        assert len(folds) == 2 and abs(folds[0] + fold) < 1e-8 and abs(folds[1] - fold) < 1e-8, folds
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["model"] == "cubic_job_test"
    bad = yaml.safe_load(CUBIC)
    bad["equations"] = {"x": "__import__('os').system('touch " + str(tmp_path / "pwned") + "')"}
    (tmp_path / "evil.yaml").write_text(yaml.safe_dump({**CUBIC_CONT, "model": bad}))
    assert main(["--config", str(tmp_path / "evil.yaml"), "--out", str(tmp_path / "c")]) == 2
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "c").exists()


def test_bifurcation_of_an_inline_model_matches_the_hopf_normal_form(tmp_path):
    """r' = mu r - r^3 (the supercritical Hopf normal form) inline in a bifurcation config: the maxima of
    x are sqrt(mu) beyond mu = 0 and the equilibrium x = 0 before it."""
    import yaml

    from jobs.bifurcation import main

    hopf = {"name": "hopf_job_test", "states": ["x", "y"], "params": {"mu": 0.5},
            "initial_state": {"x": 0.1, "y": 0.0},
            "equations": {"x": "mu*x - y - x*(x^2 + y^2)", "y": "x + mu*y - y*(x^2 + y^2)"}}
    spec = {"model": hopf, "parameter": "mu", "lo": -0.4, "hi": 1.1, "n": 4, "n_save": 400,
            "solver": {"backend": "torch", "device": "cpu", "rtol": 1e-9, "atol": 1e-11, "t_span": [0, 120],
                       "lyapunov": False}}
    (tmp_path / "hopf.yaml").write_text(yaml.safe_dump(spec))
    assert main(["--config", str(tmp_path / "hopf.yaml"), "--out", str(tmp_path / "o")]) == 0
    dots = pd.read_parquet(tmp_path / "o" / "bifurcation.parquet")
    for mu, group in dots.groupby("mu"):
        expect = mu ** 0.5 if mu > 0 else 0.0
        assert abs(group["x"] - expect).max() < 2e-3, (mu, group["x"].tolist())
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["model"] == "hopf_job_test"


def test_sweep_job_with_a_model_file_outside_the_repository(job_head, tmp_path):
    """`ray job submit ... jobs.sweep --model FILE.yaml`: the file is read by the driver only; the workers
    get the model inside the spec. x' = -k x from x0 = 1: x_final = exp(-k T) for every k."""
    import numpy as np
    import yaml
    from ray.job_submission import JobStatus, JobSubmissionClient

    (tmp_path / "decay.yaml").write_text("name: decay_job_test\nstates: [x]\nparams: {k: 1}\n"
                                         "initial_state: {x: 1}\nequations: {x: -k*x}\n")
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({
        "name": "decay", "model": "decay_job_test", "axes": [{"name": "k", "lo": 0.1, "hi": 1.0, "n": 6}],
        "solver": {"backend": "torch", "device": "cpu", "rtol": 1e-10, "atol": 1e-12, "t_span": [0, 2],
                   "lyapunov": False}, "chunk_size": 3, "workers": {"num_gpus": 0}}))
    out = tmp_path / "o"
    client = JobSubmissionClient(job_head)
    entry = (f"{sys.executable} -m jobs.sweep --model {tmp_path / 'decay.yaml'} --config {tmp_path / 'sweep.yaml'} "
             f"--out {out} --no-progress")
    job = client.submit_job(entrypoint=entry, runtime_env={"working_dir": str(ROOT),
                                                           "env_vars": {"RAY_AUTH_MODE": "disabled"}})
    assert _wait(client, job) == JobStatus.SUCCEEDED, client.get_job_logs(job)[-3000:]
    table = pd.read_parquet(out / "trajectories.parquet")
    np.testing.assert_allclose(table["x_final"], np.exp(-2 * table["k"]), rtol=1e-8)
    assert json.loads((out / "spec.json").read_text())["model"]["equations"] == {"x": "-k*x"}
