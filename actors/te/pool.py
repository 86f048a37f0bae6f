"""The TE pool: find or create named TEEstimators, shard the ordered pairs of a network into tasks,
write each finished task atomically, skip tasks already on disk, and assemble the corrected network.

Load balancing is pull-based (as the sweep pool): each estimator keeps `inflight` tasks queued and
gets the next as soon as one returns. Pair results are seeded per pair, so the network equals the
in-process `te_network` whatever the sharding.

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

import numpy as np
import ray
from ray.actor import ActorHandle

from actors.common.errors import InputError
from actors.common.storage import atomic_write_json
from actors.te.actor import remote_estimator_class
from actors.te.batched import pair_results
from actors.te.config import TENetworkSpec, WorkerConfig
from actors.te.network import PairResult, TENetwork, all_pairs, assemble_network, auto_embeddings, check_data

ESTIMATOR_PREFIX = "te-estimator"
TASK_ORDER = "target-major"   # pairs sorted by (target, source) before they are cut into tasks


def resolve_worker_resources(cfg: WorkerConfig) -> tuple[int, float]:
    """(number of estimators, GPUs per estimator): one per GPU when GPUs are asked for, else per num_cpus."""
    total_gpus = int(ray.cluster_resources().get("GPU", 0))
    num_gpus = (1.0 if total_gpus > 0 else 0.0) if cfg.num_gpus == "auto" else float(cfg.num_gpus)
    if cfg.num_workers != "auto":
        return int(cfg.num_workers), num_gpus
    if num_gpus > 0:
        return max(1, int(total_gpus // num_gpus)), num_gpus
    total_cpus = int(ray.cluster_resources().get("CPU", 1))
    return max(1, int(total_cpus // cfg.num_cpus)), 0.0


def estimators(cfg: WorkerConfig) -> list[ActorHandle]:
    """Named TEEstimators `te-estimator-<cpu|gpu>-<i>` in the current namespace, created when missing."""
    n, num_gpus = resolve_worker_resources(cfg)
    cls = remote_estimator_class(cfg.num_cpus, num_gpus, cfg.max_restarts, cfg.max_task_retries)
    tag = f"{ESTIMATOR_PREFIX}-{'gpu' if num_gpus else 'cpu'}"
    return [cls.options(name=f"{tag}-{i}", get_if_exists=True).remote(i) for i in range(n)]


def task_path(out_dir: Path, index: int) -> Path:
    return out_dir / "tasks" / f"pairs-{index:06d}.json"


def _fingerprint(data: np.ndarray, names: list[str]) -> str:
    h = hashlib.sha256(np.ascontiguousarray(data).tobytes())
    h.update(json.dumps(names).encode())
    return h.hexdigest()


def _check_out_dir(spec: TENetworkSpec, data: np.ndarray, names: list[str], out_dir: Path) -> None:
    """Resume only into a directory that holds the same network (same spec, same data, same task order)."""
    current = {"spec": json.loads(spec.model_dump_json()), "data_sha256": _fingerprint(data, names),
               "task_order": TASK_ORDER}
    spec_file = out_dir / "spec.json"
    if spec_file.exists():
        if json.loads(spec_file.read_text()) != current:
            raise InputError("out", f"{out_dir} already holds a different TE network ({spec_file})",
                             "an empty directory or one written by the same spec and input")
    else:
        atomic_write_json(spec_file, current)


def _to_json(r: PairResult) -> dict:
    d = asdict(r)
    d["te_by_lag"] = {str(k): v for k, v in r.te_by_lag.items()}
    return d


def _from_json(d: dict) -> PairResult:
    return PairResult(source=d["source"], target=d["target"], te=d["te"], lag=d["lag"], p_raw=d["p_raw"],
                      surrogates=np.asarray(d["surrogates"], dtype=np.float64),
                      te_by_lag={int(k): v for k, v in d["te_by_lag"].items()}, n_obs=d["n_obs"])


def _load_task(path: Path) -> list[PairResult] | None:
    try:
        return [_from_json(d) for d in json.loads(path.read_text())]
    except (OSError, ValueError, KeyError):
        return None


def run_network(data, names: list[str] | None, spec: TENetworkSpec, out_dir: str | Path | None = None, *,
                progress: bool = True, inflight: int = 2) -> tuple[TENetwork, dict]:
    """Shard every ordered pair across the estimators, then correct and assemble; returns (network, stats)."""
    from tqdm.auto import tqdm

    arr, names = check_data(data, names)
    cfg = spec.network
    pairs = sorted(all_pairs(arr.shape[1]), key=lambda p: (p[1], p[0]))   # TASK_ORDER
    tasks = [pairs[i:i + spec.pairs_per_task] for i in range(0, len(pairs), spec.pairs_per_task)]
    done: dict[int, list[PairResult]] = {}
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        _check_out_dir(spec, arr, names, out)
        for i in range(len(tasks)):
            loaded = _load_task(task_path(out, i)) if task_path(out, i).exists() else None
            if loaded is not None:
                done[i] = loaded
    todo = [i for i in range(len(tasks)) if i not in done]
    t0 = time.perf_counter()
    embeddings = auto_embeddings(arr, cfg)
    pool = estimators(spec.workers) if todo else []
    infos = ray.get([w.info.remote() for w in pool]) if pool else []
    data_ref = ray.put(arr)
    config_json = cfg.model_dump_json()
    # device estimators (and the explicit device backends) answer with arrays; Ragwitz embeddings
    # differ per variable, so those networks stay on the pair-by-pair path
    arrays = not embeddings and bool(infos) and (cfg.params.backend in ("torch", "triton")
                                                  or all(i["device"] != "cpu" for i in infos))
    bar = tqdm(total=len(pairs), initial=sum(len(tasks[i]) for i in done), desc=f"te {spec.name}",
               unit="pair", disable=not progress)
    pending: dict[ray.ObjectRef, tuple[int, int]] = {}
    queue = list(todo)

    def submit(worker_pos: int) -> None:
        i = queue.pop(0)
        if arrays:
            ref = pool[worker_pos].te_arrays.remote(data_ref, np.asarray(tasks[i], dtype=np.int64), config_json)
        else:
            ref = pool[worker_pos].run_pairs.remote(data_ref, tasks[i], config_json, embeddings)
        pending[ref] = (i, worker_pos)

    for _ in range(inflight):
        for w in range(len(pool)):
            if queue:
                submit(w)
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        i, w = pending.pop(ready[0])
        got = ray.get(ready[0])
        results: list[PairResult] = pair_results(tasks[i], got, cfg.lag_values()) if arrays else got
        if out is not None:
            atomic_write_json(task_path(out, i), [_to_json(r) for r in results])
        done[i] = results
        bar.update(len(results))
        if queue:
            submit(w)
    bar.close()
    network = assemble_network([r for i in sorted(done) for r in done[i]], names, cfg)
    stats = {"n_pairs": len(pairs), "n_tasks": len(tasks), "tasks_computed": len(todo),
             "tasks_skipped": len(tasks) - len(todo), "wall_seconds": round(time.perf_counter() - t0, 3),
             "transport": "arrays" if arrays else "pair results",
             "workers": infos, "embeddings": {names[j]: list(v) for j, v in embeddings.items()}}
    return network, stats
