"""Kill tests for the three worker pools: a SweepWorker, a TEEstimator and a ValidationWorker die by
SIGKILL (os.kill of the actor's PID: a crash, not a polite ray.kill) while their job runs, and the
job's results equal an uninterrupted run.

How a killed worker is survived: the pools create their actors through actors.common.worker.named_actors
with the WorkerConfig's `max_restarts` (-1: always) and `max_task_retries` (3), so Ray restarts the
actor and re-sends the tasks it held; tasks are idempotent (seeded by index), so the retried result is
the same. Each test checks that the kill landed mid-job (some but not all tasks stored when it
happened) and that the actor was restarted (its NumRestarts in the GCS actor table).
"""
from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("ray_cluster", [{"num_gpus": 0}], indirect=True)]


def test_pools_restart_and_retry_by_default(ray_cluster):
    """What makes a kill survivable is on by default, for every subsystem's workers."""
    from actors.common.config import WorkerConfig
    from actors.sweep.config import SweepSpec
    from actors.te.config import TENetworkSpec
    from actors.validation.config import ValidationSpec

    for cfg in (WorkerConfig(), TENetworkSpec().workers, ValidationSpec().workers,
                SweepSpec.model_fields["workers"].get_default(call_default_factory=True)):
        assert cfg.max_restarts == -1 and cfg.max_task_retries >= 1, cfg


def _restarts(actor_name: str) -> int:
    import ray._private.state as state

    found = [a for a in state.actors().values() if a.get("Name") == actor_name]
    assert found, f"no actor {actor_name}"
    return max(a["NumRestarts"] for a in found)


def _kill_when(count: Callable[[], int], at_least: int, pid: int, timeout: float = 180) -> dict:
    """A thread that SIGKILLs `pid` once count() >= at_least; its dict records the count at the kill."""
    seen: dict = {}

    def run() -> None:
        deadline = time.time() + timeout
        while time.time() < deadline and count() < at_least:
            time.sleep(0.01)
        seen["done_before_kill"] = count()
        os.kill(pid, signal.SIGKILL)
        seen["killed"] = True

    threading.Thread(target=run, daemon=True).start()
    return seen


def _wait(seen: dict) -> None:
    deadline = time.time() + 30
    while "killed" not in seen and time.time() < deadline:
        time.sleep(0.05)


# ---- sweep ------------------------------------------------------------------------------------------
def test_sweep_worker_killed_mid_sweep(ray_cluster, tmp_path):
    from actors.sweep.pool import WORKER_PREFIX, run_sweep, workers
    from configs import preset
    from jobs.sweep import load_spec

    spec = load_spec(preset("sweep", "ci_tiny.yaml"), {"workers.num_gpus": 0, "chunk_size": 3,   # 12 chunks
                                                       "solver.t_span": [0.0, 40.0]})
    # the pool first, held for the whole test: both runs reuse these named actors (a handle taken just
    # after a run that held the only ones can name an actor Ray is tearing down: ActorDiedError)
    pool = workers(spec.workers)
    victim = ray_cluster.get(pool[0].info.remote())
    reference = run_sweep(spec, tmp_path / "ref", progress=False)
    assert reference.chunks_computed == 12
    chunks = tmp_path / "killed" / "chunks"
    seen = _kill_when(lambda: len(list(chunks.glob("*.parquet"))), 2, victim["pid"])
    summary = run_sweep(spec, tmp_path / "killed", progress=False)
    _wait(seen)
    assert 2 <= seen["done_before_kill"] < 12, seen            # the kill landed mid-sweep
    assert summary.chunks_computed == 12
    assert _restarts(f"{WORKER_PREFIX}-cpu-0") >= 1
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "ref" / "trajectories.parquet"),
                                  pd.read_parquet(tmp_path / "killed" / "trajectories.parquet"))


# ---- TE ---------------------------------------------------------------------------------------------
def _te_data(T: int = 300, N: int = 5, seed: int = 3) -> tuple[np.ndarray, list[str]]:
    """v0 -> v1 -> v2 at lag 1, v3 and v4 noise (seeded)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(T, N))
    for t in range(1, T):
        x[t, 1] += 0.8 * x[t - 1, 0]
        x[t, 2] += 0.8 * x[t - 1, 1]
    return x, [f"v{i}" for i in range(N)]


def test_te_estimator_killed_mid_network(ray_cluster, tmp_path):
    from actors.common.config import WorkerConfig
    from actors.te.config import NetworkConfig, TENetworkSpec
    from actors.te.network import te_network
    from actors.te.pool import ESTIMATOR_PREFIX, estimators, run_network

    data, names = _te_data()
    net = NetworkConfig.model_validate({"significance": {"n_surrogates": 29, "seed": 5}})
    spec = TENetworkSpec(name="kill", network=net, workers=WorkerConfig(num_workers=2, num_gpus=0),
                         pairs_per_task=1)                    # 20 tasks of one pair
    pool = estimators(spec.workers)          # held for the whole test (see the sweep test)
    victim = ray_cluster.get(pool[1].info.remote())
    reference, _ = run_network(data, names, spec, tmp_path / "ref", progress=False)
    tasks = tmp_path / "killed" / "tasks"
    seen = _kill_when(lambda: len(list(tasks.glob("*.json"))), 3, victim["pid"])
    killed, stats = run_network(data, names, spec, tmp_path / "killed", progress=False)
    _wait(seen)
    assert 3 <= seen["done_before_kill"] < 20, seen
    assert stats["tasks_computed"] == 20
    assert _restarts(f"{ESTIMATOR_PREFIX}-cpu-1") >= 1
    pd.testing.assert_frame_equal(reference.table, killed.table)
    assert sorted(killed.graph.edges) == sorted(reference.graph.edges)
    # and both equal the in-process network (the pool's promise)
    local = te_network(data, names, net)
    pd.testing.assert_frame_equal(local.table.reset_index(drop=True), killed.table.reset_index(drop=True))
    assert ("v0", "v1") in killed.graph.edges and ("v1", "v2") in killed.graph.edges


# ---- validation -------------------------------------------------------------------------------------
def test_validation_worker_killed_mid_detect(ray_cluster, tmp_path):
    from actors.common.config import WorkerConfig
    from actors.validation.config import DIMENSIONS, DetectorConfig
    from actors.validation.detector import detect
    from actors.validation.planted import plant
    from actors.validation.pool import WORKER_PREFIX, detect_on_cluster, workers

    pair = plant(case="mode_collapse", severity="high", dataset="wine", seed=4)
    cfg = DetectorConfig(n_null=99, classifier="logistic", mi_rows=100, mi_pairs=3)
    wcfg = WorkerConfig(num_workers=2, num_gpus=0)
    pool = workers(wcfg, len(DIMENSIONS))
    victim = ray_cluster.get(pool[0].info.remote())
    out = tmp_path / "killed"
    seen = _kill_when(lambda: len(list(Path(out).glob("dimension-*.pkl"))), 1, victim["pid"])
    report, stats = detect_on_cluster(pair.real, pair.synth, cfg, wcfg, out_dir=out)
    _wait(seen)
    assert 1 <= seen["done_before_kill"] < len(DIMENSIONS), seen
    assert stats["dimensions_computed"] == len(DIMENSIONS)
    assert _restarts(f"{WORKER_PREFIX}-cpu-0") >= 1
    assert report.to_json() == detect(pair.real, pair.synth, cfg).to_json()
    assert report.collapsed
