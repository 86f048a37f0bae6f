"""TEEstimator: a Ray actor (CPU, or pinned to a GPU) that owns the TE engine.

Options (num_gpus, num_cpus, restarts) come from the TE WorkerConfig, so the same class runs as a
CPU actor on a laptop and as one actor per GPU on a cluster. A GPU-pinned actor runs
TEParams.backend "auto" as the fused Triton kernel, batching all pairs x delays x surrogates of a
task (actors/te/batched.py); a CPU actor runs scipy's cKDTree.
`run_pairs` is idempotent: a pair's noise and surrogates are seeded from (seed, source, target),
so a retried task returns the same rows.
"""
from __future__ import annotations

import os
import socket
import time

import numpy as np
import ray
from ray.util import metrics

from actors.te.batched import network_backend, pairs_te_arrays, pairs_te_batched, resolve_backend
from actors.te.config import NetworkConfig, TEParams
from actors.te.engine import transfer_entropy
from actors.te.network import PairResult, pair_params, pair_te


class TEEstimator:
    """Plain class; `remote_estimator_class()` turns it into the Ray actor class."""

    def __init__(self, worker_index: int = 0):
        self.worker_index = worker_index
        self.gpu_ids = [str(g) for g in ray.get_gpu_ids()]
        # KSG path under backend "auto": the fused Triton kernel on a GPU actor, scipy's cKDTree otherwise
        self.device = resolve_backend("auto")
        n_cpu = int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1) or 1)
        self.query_workers = max(1, n_cpu)   # cKDTree threads: the CPUs this actor was given
        tags = {"worker": str(worker_index)}
        self._pairs = metrics.Counter("attractor_te_pairs_total", "Ordered pairs estimated by TE estimators.",
                                      tag_keys=("worker",))
        self._latency = metrics.Histogram("attractor_te_task_seconds", "Wall time of one TE pair task.",
                                          boundaries=[0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600],
                                          tag_keys=("worker",))
        for m in (self._pairs, self._latency):
            m.set_default_tags(tags)
        self.tasks_done = 0

    def info(self) -> dict:
        """Where this estimator runs: node, pid, assigned GPU ids, compute device."""
        return {"worker_index": self.worker_index, "gpu_ids": self.gpu_ids, "device": self.device,
                "pid": os.getpid(), "host": socket.gethostname(),
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}

    def run_pairs(self, data: np.ndarray, pairs: list[tuple[int, int]], config_json: str,
                  embeddings: dict[int, tuple[int, int]] | None = None) -> list[PairResult]:
        """TE, best lag and surrogates for each (source, target) column pair of `data`."""
        t = time.perf_counter()
        cfg = NetworkConfig.model_validate_json(config_json)
        cfg = cfg.model_copy(update={"params": cfg.params.model_copy(update={"workers": self.query_workers})})
        device = network_backend(cfg, embeddings)
        if device != "cpu":   # the task's pairs, delays and surrogates in batched kernel launches
            out = pairs_te_batched(data, pairs, cfg, backend=device)
        else:
            out = [pair_te(data, i, j, cfg, pair_params(cfg, i, j, embeddings)) for i, j in pairs]
        self._pairs.inc(len(out))
        self._latency.observe(time.perf_counter() - t)
        self.tasks_done += 1
        return out

    def te_arrays(self, data: np.ndarray, pairs: np.ndarray, config_json: str,
                  n_surrogates: int | None = None) -> dict:
        """pairs_te_arrays for `pairs` ([P, 2] ints) on this actor's device: compact arrays, no per-pair
        objects, so a shard of a big network costs one call (jobs.te_bench --gpus shards by target)."""
        t = time.perf_counter()
        cfg = NetworkConfig.model_validate_json(config_json)
        out = pairs_te_arrays(data, pairs, cfg, backend=resolve_backend(cfg.params.backend),
                              n_surrogates=n_surrogates)
        self._pairs.inc(len(pairs))
        self._latency.observe(time.perf_counter() - t)
        self.tasks_done += 1
        return out

    def transfer_entropy(self, source: np.ndarray, target: np.ndarray, params: dict | None = None) -> dict:
        """One TE estimate (nats) with its local values, for interactive use."""
        res = transfer_entropy(source, target, params=TEParams.model_validate(params or {}))
        return {"te": res.te, "local": res.local, "times": res.times, "n_obs": res.n_obs}


def remote_estimator_class(num_cpus: float, num_gpus: float, max_restarts: int, max_task_retries: int):
    """The Ray actor class with this subsystem's resource options."""
    return ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=max_restarts,
                      max_task_retries=max_task_retries)(TEEstimator)
