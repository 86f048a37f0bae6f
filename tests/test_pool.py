"""Actors and pool: GPU pinning, idempotent chunks, resume after a killed worker or a partial run."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from actors.sweep.config import SweepSpec
from actors.sweep.pool import chunk_path
from configs import preset
from jobs.sweep import load_spec

pytestmark = pytest.mark.slow
CONFIG = preset("sweep", "ci_tiny.yaml")


def _spec(**overrides) -> SweepSpec:
    return load_spec(CONFIG, {"workers.num_gpus": 0, **overrides})


def _table(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "trajectories.parquet")


def test_fake_gpus_pin_each_worker_to_a_distinct_gpu(ray_cluster):
    from actors.common.config import WorkerConfig
    from actors.sweep.pool import workers

    pool = workers(WorkerConfig(num_cpus=0.5))  # auto: 2 fake GPUs -> 2 workers with num_gpus=1
    infos = ray_cluster.get([w.info.remote() for w in pool])
    assert len(infos) == 2
    ids = [tuple(i["gpu_ids"]) for i in infos]
    assert all(len(i) == 1 for i in ids) and len(set(ids)) == 2
    assert {i["cuda_visible_devices"] for i in infos} == {"0", "1"}
    for w in pool:
        ray_cluster.kill(w)


def test_uninterrupted_run_matches_the_engine_directly(ray_cluster, tmp_path):
    from actors.sweep.engine import grid_points, simulate
    from actors.sweep.pool import run_sweep

    spec = _spec()
    summary = run_sweep(spec, tmp_path / "a", progress=False)
    assert summary.chunks_computed == 4 and summary.chunks_skipped == 0
    table = _table(tmp_path / "a")
    params, u0 = grid_points(spec)
    direct = simulate(spec.model, params, u0, spec.solver)
    np.testing.assert_array_equal(table["point"], np.arange(36))
    # chunks fold different constant parameters into the rhs, so agreement is to rounding, not bitwise
    np.testing.assert_allclose(table[["x_final", "y_final"]].to_numpy(), direct.raw.u_final, rtol=1e-6)
    assert (table["regime"].to_numpy() == direct.regime.astype(str)).all()
    # Hopf of the Brusselator at b = 1 + a^2: fixed point below, limit cycle above
    below = table["b"] < 1 + table["a"] ** 2 - 0.3
    above = table["b"] > 1 + table["a"] ** 2 + 0.3
    assert (table.loc[below, "regime"] == "fixed_point").all()
    assert (table.loc[above, "regime"] == "limit_cycle").all()


def test_resume_after_killing_a_worker_mid_sweep(ray_cluster, tmp_path):
    from actors.sweep.pool import run_sweep, workers

    spec = _spec(chunk_size=3)  # 12 chunks, so the kill lands mid-sweep
    reference = run_sweep(spec, tmp_path / "ref", progress=False)
    assert reference.chunks_computed == 12
    pool = workers(spec.workers)
    killed = []

    def kill_when_running():
        chunks = tmp_path / "b" / "chunks"
        deadline = time.time() + 120
        while time.time() < deadline and len(list(chunks.glob("*.parquet"))) < 2:
            time.sleep(0.02)
        done_before = len(list(chunks.glob("*.parquet")))
        ray_cluster.kill(pool[0], no_restart=False)  # the actor restarts; its in-flight chunk is retried
        killed.append(done_before)

    killer = threading.Thread(target=kill_when_running)
    killer.start()
    summary = run_sweep(spec, tmp_path / "b", progress=False)
    killer.join()
    assert killed and 2 <= killed[0] < 12, killed  # the kill landed mid-sweep
    assert summary.chunks_computed == 12
    pd.testing.assert_frame_equal(_table(tmp_path / "ref"), _table(tmp_path / "b"))

    # a partial run: remove three chunks and the merged table, run again: only those are recomputed
    for i in (0, 5, 11):
        chunk_path(tmp_path / "b", i).unlink()
    (tmp_path / "b" / "trajectories.parquet").unlink()
    again = run_sweep(spec, tmp_path / "b", progress=False)
    assert (again.chunks_computed, again.chunks_skipped) == (3, 9)
    pd.testing.assert_frame_equal(_table(tmp_path / "ref"), _table(tmp_path / "b"))


def test_out_dir_with_a_different_sweep_is_refused(ray_cluster, tmp_path):
    from actors.common.errors import InputError
    from actors.sweep.pool import run_sweep

    run_sweep(_spec(), tmp_path / "c", progress=False)
    with pytest.raises(InputError, match="out: .* already holds a different sweep"):
        run_sweep(_spec(chunk_size=4), tmp_path / "c", progress=False)


# ---- issue 11: registered models reach the workers, chunk budgets, every run's summary kept ---------------
def test_a_model_registered_only_in_the_driver_sweeps_on_the_pool(ray_cluster, tmp_path):
    """register_model runs in this (driver) process only; the workers — separate processes that never
    saw it — failed with "unknown model". The spec now carries the model: x + iy = e^{(a + i) t}."""
    from actors.sweep.models import register_model
    from actors.sweep.pool import run_sweep, workers

    register_model({"name": "spiral_pool_test", "states": ["x", "y"], "params": {"a": 0.0, "w": 1.0},
                    "initial_state": {"x": 1.0, "y": 0.0}, "equations": {"x": "a*x - w*y", "y": "w*x + a*y"}})
    pids = {i["pid"] for i in ray_cluster.get([w.info.remote() for w in workers(_spec().workers)])}
    assert pids and __import__("os").getpid() not in pids
    spec = SweepSpec.model_validate({
        "name": "spiral", "model": "spiral_pool_test", "axes": [{"name": "a", "lo": -0.4, "hi": 0.2, "n": 6}],
        "solver": {"backend": "torch", "device": "cpu", "rtol": 1e-10, "atol": 1e-12, "t_span": [0, 3],
                   "lyapunov": False}, "chunk_size": 2, "workers": {"num_gpus": 0}})
    summary = run_sweep(spec, tmp_path / "s", progress=False)
    assert summary.chunks_computed == 3 and summary.model == "spiral_pool_test"
    table = _table(tmp_path / "s")
    z = np.exp((table["a"].to_numpy() + 1j) * 3.0)
    np.testing.assert_allclose(table["x_final"], z.real, atol=1e-8)
    np.testing.assert_allclose(table["y_final"], z.imag, atol=1e-8)


def test_a_chunk_past_its_budget_fails_naming_chunk_timeout_s(ray_cluster, tmp_path):
    """chunk_timeout_s bounds each chunk on its worker (the engine checks it every step); the error
    reaches the driver with its field, and the same sweep resumes with a larger budget."""
    from actors.common.budget import BudgetExceeded
    from actors.sweep.pool import run_sweep

    long = {"solver.backend": "torch", "solver.device": "cpu", "solver.t_span": [0.0, 1e5], "chunk_size": 18}
    t0 = time.perf_counter()
    with pytest.raises(BudgetExceeded) as err:
        run_sweep(_spec(chunk_timeout_s=0.5, **long), tmp_path / "t", progress=False)
    # cut short, not run out: 1e5 time units take hours; the bound leaves room for the workers' start-up
    # (57 s with three test processes on 2 cores, 2026-12-03)
    assert time.perf_counter() - t0 < 180
    assert err.value.field == "chunk_timeout_s" and "0.5 s" in str(err.value)
    short = {**long, "solver.t_span": [0.0, 5.0]}
    with pytest.raises(BudgetExceeded):
        run_sweep(_spec(chunk_timeout_s=1e-3, **short), tmp_path / "r", progress=False)
    summary = run_sweep(_spec(**short), tmp_path / "r", progress=False)   # same rows: the directory resumes
    assert summary.chunks_computed == 2


def test_a_resubmitted_sweep_keeps_every_summary_and_writes_0644(ray_cluster, tmp_path):
    """summary.json was overwritten by a resubmission; now it is the latest run and summaries.jsonl
    holds one line per run. Every output file is 0644 (was 0600)."""
    import json
    import os

    from actors.sweep.pool import run_sweep

    old = os.umask(0o077)   # even under a strict umask the outputs are readable by others
    try:
        first = run_sweep(_spec(), tmp_path / "h", progress=False)
        second = run_sweep(_spec(), tmp_path / "h", progress=False)
    finally:
        os.umask(old)
    runs = [json.loads(line) for line in (tmp_path / "h" / "summaries.jsonl").read_text().splitlines()]
    assert [(r["chunks_computed"], r["chunks_skipped"]) for r in runs] == [(4, 0), (0, 4)]
    assert runs[0]["wall_seconds"] == first.wall_seconds and runs[1]["finished_at"] == second.finished_at
    assert json.loads((tmp_path / "h" / "summary.json").read_text()) == runs[1]
    files = [p for p in (tmp_path / "h").rglob("*") if p.is_file()]
    assert len(files) == 4 + 4 and {oct(p.stat().st_mode & 0o777) for p in files} == {"0o644"}
