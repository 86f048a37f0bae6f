"""The validation pool: named ValidationWorkers, one dimension per task, pull-based load balancing.

The pooled tables go to the object store once; each worker gets the next dimension as soon as it
returns one. Results equal the in-process `detect` (dimensions are seeded independently).
"""
from __future__ import annotations

import time

import pandas as pd
import ray
from ray.actor import ActorHandle

from actors.validation.actor import remote_worker_class
from actors.validation.config import DetectorConfig, WorkerConfig, validated
from actors.validation.detector import CollapseReport, DimensionResult, combine, prepare

WORKER_PREFIX = "validation-worker"
_COST = {"dependence": 4, "classifier": 3, "correlation": 3, "spectral": 2}   # rough relative run time


def workers(cfg: WorkerConfig, n_tasks: int) -> list[ActorHandle]:
    """Named ValidationWorkers `validation-worker-<cpu|gpu>-<i>`, created when missing."""
    if cfg.num_workers == "auto":
        per = cfg.num_gpus if cfg.num_gpus > 0 else cfg.num_cpus
        total = ray.cluster_resources().get("GPU" if cfg.num_gpus > 0 else "CPU", 1)
        n = max(1, min(n_tasks, int(total // per)))
    else:
        n = int(cfg.num_workers)
    cls = remote_worker_class(cfg.num_cpus, cfg.num_gpus, cfg.max_restarts, cfg.max_task_retries)
    tag = f"{WORKER_PREFIX}-{'gpu' if cfg.num_gpus else 'cpu'}"
    return [cls.options(name=f"{tag}-{i}", get_if_exists=True).remote(i) for i in range(n)]


def detect_on_cluster(real: pd.DataFrame, synth: pd.DataFrame, config: DetectorConfig | dict | None = None,
                      worker_cfg: WorkerConfig | dict | None = None) -> tuple[CollapseReport, dict]:
    """`detect` with each dimension a task on the worker pool; returns (report, stats)."""
    cfg = validated(DetectorConfig, config)
    wcfg = validated(WorkerConfig, worker_cfg, prefix="workers.")
    t0 = time.perf_counter()
    pooled = prepare(real, synth, cfg)
    ref = ray.put(pooled)
    queue = sorted(cfg.dimensions, key=lambda d: -_COST.get(d, 1))     # longest first
    pool = workers(wcfg, len(queue))
    config_json = cfg.model_dump_json()
    pending: dict[ray.ObjectRef, tuple[str, int]] = {}
    for w in range(len(pool)):
        if queue:
            name = queue.pop(0)
            pending[pool[w].run_dimension.remote(name, ref, config_json)] = (name, w)
    results: dict[str, DimensionResult] = {}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        name, w = pending.pop(ready[0])
        results[name] = ray.get(ready[0])
        if queue:
            nxt = queue.pop(0)
            pending[pool[w].run_dimension.remote(nxt, ref, config_json)] = (nxt, w)
    ordered = {d: results[d] for d in cfg.dimensions}
    stats = {"workers": len(pool), "wall_seconds": round(time.perf_counter() - t0, 3)}
    return combine(ordered, cfg, pooled.n_real, pooled.n_synth), stats
