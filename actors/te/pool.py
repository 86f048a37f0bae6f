"""The TE pool: TE networks on Ray, used by jobs.te_network and the Serve app's background jobs.

`run_network` (bivariate) shards the ordered pairs of a network into tasks for named TEEstimators
(`actors.common.worker.named_actors`), runs them with the shared pull scheduler
(`actors.common.scheduler.run_tasks`: each estimator keeps `inflight` tasks queued and gets the next
as soon as one returns), writes each finished task atomically to OUT/tasks/pairs-<i>.json and skips
tasks already there, then assembles the corrected network. Pair results are seeded per pair, so the
network equals the in-process `te_network` whatever the sharding.

`run_multivariate` runs the greedy multivariate network: with GPUs (or a torch/triton backend) as one
task per GPU for TEEstimators, each running its targets in lockstep batched launches; else one CPU Ray task
per target; in this process when Ray is not up (blocks and surrogate orders are seeded per block and per
round, so every sharding gives the same network). `compute_network` picks
one of the two from `spec.network.mode`.

Bounded work: when the caller runs under a budget (actors.common.budget, e.g. the Serve app's
`network_timeout_s` for background jobs), every task is sent with the seconds left and stops with
BudgetExceeded inside its actor, and the driver checks the budget between results, so a job past its
budget fails with that error instead of computing on.

Per-task overhead: the data goes into the object store once; pairs are ordered target-major, so a
task holds whole targets (each destination's blocks and sorted layout serve all its sources in one
launch); device estimators answer with compact arrays (TEEstimator.te_arrays) and the PairResults
are built here, not pickled one by one.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray.actor import ActorHandle

from actors.common.budget import TaskBudget, checkpoint, task_budget, task_scope
from actors.common.config import WorkerConfig
from actors.common.scheduler import run_tasks
from actors.common.storage import FileStore, claim_out_dir, json_store
from actors.common.worker import named_actors
from actors.te.actor import TEEstimator
from actors.te.batched import pair_results
from actors.te.config import NetworkConfig, TENetworkSpec
from actors.te.multivariate import (
    TargetResult,
    assemble_multivariate,
    multivariate_config,
    multivariate_network_results,
    select_sources,
)
from actors.te.network import (
    PairResult,
    TENetwork,
    all_pairs,
    assemble_network,
    auto_embeddings,
    check_data,
    resolve_pairs_per_task,
)

__all__ = ["ESTIMATOR_PREFIX", "TASK_ORDER", "compute_network", "estimators", "pair_store", "run_multivariate",
           "run_network"]

ESTIMATOR_PREFIX = "te-estimator"
TASK_ORDER = "target-major"   # pairs sorted by (target, source) before they are cut into tasks


def estimators(cfg: WorkerConfig, *, limit: int | None = None) -> list[ActorHandle]:
    """Named TEEstimators `te-estimator-<cpu|gpu>-<i>` in the current namespace, created when missing;
    `limit` caps an `auto` count (no more estimators than tasks)."""
    return named_actors(TEEstimator, cfg, ESTIMATOR_PREFIX, limit=limit)


def device_pool(spec: TENetworkSpec) -> bool:
    """Whether the estimators will run a device backend: an explicit torch/triton backend, GPUs asked
    for, or num_gpus "auto" on a cluster that has GPUs (WorkerConfig's meaning)."""
    backend = spec.network.params.backend
    if backend != "auto":
        return backend != "cpu"
    gpus = spec.workers.num_gpus
    if gpus == "auto":
        return ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0
    return gpus > 0


def _fingerprint(data: np.ndarray, names: list[str]) -> str:
    h = hashlib.sha256(np.ascontiguousarray(data).tobytes())
    h.update(json.dumps(names).encode())
    return h.hexdigest()


def _to_json(r: PairResult) -> dict:
    d = asdict(r)
    d["te_by_lag"] = {str(k): v for k, v in r.te_by_lag.items()}
    return d


def _from_json(d: dict) -> PairResult:
    return PairResult(source=d["source"], target=d["target"], te=d["te"], lag=d["lag"], p_raw=d["p_raw"],
                      surrogates=np.asarray(d["surrogates"], dtype=np.float64),
                      te_by_lag={int(k): v for k, v in d["te_by_lag"].items()}, n_obs=d["n_obs"])


def _as_pair_results(result: list[PairResult] | dict, lags: list[int]) -> list[PairResult]:
    """A task's PairResults from either answer: run_pairs' list or te_arrays' arrays (with their pairs)."""
    if isinstance(result, dict):
        return pair_results([tuple(p) for p in result["pairs"]], result, lags)
    return result


def pair_store(out_dir: Path, lags: list[int]) -> FileStore:
    """OUT/tasks/pairs-<i>.json: one JSON list of PairResults per finished task (the resume files)."""
    return json_store(Path(out_dir) / "tasks", "pairs-{:06d}.json",
                      encode=lambda r: [_to_json(p) for p in _as_pair_results(r, lags)],
                      decode=lambda d: [_from_json(p) for p in d])


def run_network(data, names: list[str] | None, spec: TENetworkSpec, out_dir: str | Path | None = None, *,
                progress: bool = True, inflight: int = 2) -> tuple[TENetwork, dict]:
    """Shard every ordered pair across the estimators, then correct and assemble; returns (network, stats).

    With `out_dir`, finished tasks are kept there and a rerun of the same spec on the same data skips
    them; a different spec or input in the same directory is an InputError naming `out`.
    """
    from tqdm.auto import tqdm

    arr, names = check_data(data, names)
    cfg = spec.network
    lags = cfg.lag_values()
    pairs = sorted(all_pairs(arr.shape[1]), key=lambda p: (p[1], p[0]))   # TASK_ORDER
    per_task = resolve_pairs_per_task(spec.pairs_per_task, cfg, arr.shape[1], arr.shape[0],
                                      device=device_pool(spec))
    tasks = [pairs[i:i + per_task] for i in range(0, len(pairs), per_task)]
    store = None
    if out_dir is not None:
        claim_out_dir(Path(out_dir), {"spec": json.loads(spec.model_dump_json()), "pairs_per_task": per_task,
                                      "data_sha256": _fingerprint(arr, names), "task_order": TASK_ORDER},
                      "TE network")
        store = pair_store(Path(out_dir), lags)
    t0 = time.perf_counter()
    embeddings = auto_embeddings(arr, cfg)   # checks the budget per candidate embedding
    config_json = cfg.model_dump_json()
    state: dict[str, Any] = {"infos": [], "arrays": False}

    def pool() -> list[ActorHandle]:   # called only when some task is not on disk
        workers = estimators(spec.workers, limit=len(tasks))
        state["infos"] = ray.get([w.info.remote() for w in workers])
        state["data"] = ray.put(arr)
        # device estimators (and the explicit device backends) answer with arrays; Ragwitz embeddings
        # differ per variable, so those networks stay on the pair-by-pair path
        state["arrays"] = not embeddings and (cfg.params.backend in ("torch", "triton")
                                              or all(i["backend"] != "cpu" for i in state["infos"]))
        return workers

    def submit(worker: ActorHandle, _: int, task: list[tuple[int, int]]) -> ray.ObjectRef:
        budget = task_budget()
        if state["arrays"]:
            return worker.te_arrays.remote(state["data"], np.asarray(task, dtype=np.int64), config_json,
                                           budget=budget)
        return worker.run_pairs.remote(state["data"], task, config_json, embeddings, budget=budget)

    def on_result(i: int, _r: Any, _w: int) -> None:
        bar.update(len(tasks[i]))
        checkpoint()   # past the budget: stop here (tasks in flight stop at their own budget)

    stored = sum(len(t) for i, t in enumerate(tasks) if store is not None and store.path(i).exists())
    bar = tqdm(total=len(pairs), initial=stored, desc=f"te {spec.name}", unit="pair", disable=not progress)
    run = run_tasks(pool, tasks, submit, store=store, inflight=inflight,
                    on_result=on_result)
    bar.close()
    results = [r for i in sorted(run.results) for r in _as_pair_results(run.results[i], lags)]
    network = assemble_network(results, names, cfg)
    stats = {"n_pairs": len(pairs), "n_tasks": len(tasks), "pairs_per_task": per_task, "tasks_computed": run.computed,
             "tasks_skipped": run.skipped, "wall_seconds": round(time.perf_counter() - t0, 3),
             "transport": "arrays" if state["arrays"] else "pair results",
             "workers": state["infos"], "embeddings": {names[j]: list(v) for j, v in embeddings.items()}}
    return network, stats


def select_sources_bounded(data: np.ndarray, target: int, cfg: NetworkConfig,
                           budget: TaskBudget | None) -> TargetResult:
    """select_sources under the caller's remaining budget (the Ray task of run_multivariate)."""
    with task_scope(budget):
        return select_sources(data, target, cfg)


def run_multivariate(data, names: list[str] | None, spec: TENetworkSpec) -> tuple[TENetwork, dict]:
    """The multivariate network on Ray (else in this process). Returns (network, stats) like run_network.

    With a device (device_pool: GPUs, or a torch/triton backend) the targets are cut into one task per GPU
    (one task without GPUs) for TEEstimators, each running its targets in lockstep batched launches
    (actors.te.multivariate_batched); otherwise one CPU Ray task per target (`spec.workers.num_cpus` CPUs,
    `max_task_retries` retries). Blocks and surrogate orders are seeded per block and per round, so every
    sharding gives the network multivariate_network(data, names, spec.network) gives in one process."""
    t0 = time.perf_counter()
    cfg = multivariate_config(spec.network)
    arr, names = check_data(data, names)
    n = len(names)
    infos: list[dict] = []
    if ray.is_initialized() and device_pool(spec):
        n_gpus = int(ray.cluster_resources().get("GPU", 0))
        per_task = -(-n // max(1, n_gpus))
        tasks = [list(range(j, min(n, j + per_task))) for j in range(0, n, per_task)]
        config_json = cfg.model_dump_json()
        state: dict[str, Any] = {}

        def pool() -> list[ActorHandle]:
            workers = estimators(spec.workers, limit=len(tasks))
            infos.extend(ray.get([w.info.remote() for w in workers]))
            state["data"] = ray.put(arr)
            return workers

        def submit(worker: ActorHandle, _: int, task: list[int]) -> ray.ObjectRef:
            return worker.select_targets.remote(state["data"], task, config_json, budget=task_budget())

        run = run_tasks(pool, tasks, submit, on_result=lambda *_: checkpoint())
        results = [r for i in sorted(run.results) for r in run.results[i]]
        engine, computed = "estimators (batched)", len(tasks)
    elif ray.is_initialized():
        task = ray.remote(num_cpus=spec.workers.num_cpus,
                          max_retries=spec.workers.max_task_retries)(select_sources_bounded)
        ref = ray.put(arr)
        budget = task_budget()
        results = ray.get([task.remote(ref, j, cfg, budget) for j in range(n)])
        engine, computed = "ray tasks", n
    else:
        results = multivariate_network_results(arr, cfg)
        engine, computed = "local", n
    network = assemble_multivariate(results, names, cfg)
    return network, {"mode": "multivariate", "engine": engine, "n_pairs": n * (n - 1), "tasks_computed": computed,
                     "tasks_skipped": 0, "wall_seconds": round(time.perf_counter() - t0, 3), "workers": infos}


def compute_network(data, names: list[str] | None, spec: TENetworkSpec, out_dir: str | Path | None = None, *,
                    progress: bool = True) -> tuple[TENetwork, dict]:
    """The network of `spec.network.mode`: bivariate pairs on the TEEstimator pool (resumable in
    `out_dir`), multivariate targets as Ray tasks. Returns (network, stats)."""
    if spec.network.mode == "multivariate":   # greedy and sequential per target, for small N
        return run_multivariate(data, names, spec)
    return run_network(data, names, spec, out_dir, progress=progress)
