"""TEEstimator: a Ray actor (CPU, or pinned to a GPU) that owns the TE engine.

Resources (num_gpus, num_cpus, restarts) come from the TE spec's WorkerConfig through
`actors.common.worker.named_actors`, so the same class runs as a CPU actor on a laptop and as one
actor per GPU on a cluster. On top of BaseWorker's device, `backend` is the KSG path that
TEParams.backend "auto" resolves to in this process: the fused Triton kernel where CUDA is visible
(batching all pairs x delays x surrogates of a task, actors/te/batched.py), scipy's cKDTree otherwise.
`run_pairs` and `te_arrays` are idempotent: a pair's noise and surrogates are seeded from
(seed, source, target), so a retried task returns the same rows. Both take an optional `budget`
(seconds, setting): the caller's remaining time, under which the engine's loops stop with
BudgetExceeded naming that setting (actors.common.budget), so a timed-out job does not leave
its tasks computing.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from actors.common.budget import TaskBudget, task_scope
from actors.common.config import validated
from actors.common.worker import BaseWorker
from actors.te.batched import network_backend, pairs_te_arrays, pairs_te_batched, resolve_backend
from actors.te.config import NetworkConfig, TEParams
from actors.te.engine import transfer_entropy
from actors.te.multivariate import TargetResult, select_sources
from actors.te.network import PairResult, pair_params, pair_te

__all__ = ["TEEstimator"]


class TEEstimator(BaseWorker):
    """Plain class; `actors.te.pool.estimators` turns it into named Ray actors."""

    subsystem = "te"

    def __init__(self, worker_index: int = 0):
        super().__init__(worker_index)
        # KSG path under backend "auto": the fused Triton kernel where CUDA is visible, scipy's cKDTree otherwise
        self.backend = resolve_backend("auto")
        self.query_workers = self.num_cpus   # cKDTree threads: the CPUs this actor was given
        self._pairs = self.counter("pairs_total", "Ordered pairs estimated by TE estimators.")
        self._latency = self.histogram("task_seconds", "Wall time of one TE pair task.")
        self.tasks_done = 0

    def info(self) -> dict[str, Any]:
        """BaseWorker.info() plus `backend`, the KSG path of TEParams.backend "auto" on this actor."""
        return {**super().info(), "backend": self.backend}

    def _done(self, n_pairs: int, t0: float) -> None:
        self._pairs.inc(n_pairs)
        self._latency.observe(time.perf_counter() - t0)
        self.record_gpu_memory()
        self.tasks_done += 1

    def run_pairs(self, data: np.ndarray, pairs: list[tuple[int, int]], config_json: str,
                  embeddings: dict[int, tuple[int, int]] | None = None,
                  budget: TaskBudget | None = None) -> list[PairResult]:
        """TE, best lag and surrogates for each (source, target) column pair of `data`."""
        with task_scope(budget):
            return self._run_pairs(data, pairs, config_json, embeddings)

    def _run_pairs(self, data: np.ndarray, pairs: list[tuple[int, int]], config_json: str,
                   embeddings: dict[int, tuple[int, int]] | None) -> list[PairResult]:
        t0 = time.perf_counter()
        cfg = NetworkConfig.model_validate_json(config_json)
        cfg = validated(NetworkConfig, cfg, params=validated(TEParams, cfg.params, workers=self.query_workers))
        device = network_backend(cfg, embeddings)
        if device != "cpu":   # the task's pairs, delays and surrogates in batched kernel launches
            out = pairs_te_batched(data, pairs, cfg, backend=device)
        else:
            out = [pair_te(data, i, j, cfg, pair_params(cfg, i, j, embeddings)) for i, j in pairs]
        self._done(len(out), t0)
        return out

    def te_arrays(self, data: np.ndarray, pairs: np.ndarray, config_json: str,
                  n_surrogates: int | None = None, budget: TaskBudget | None = None) -> dict:
        """pairs_te_arrays for `pairs` ([P, 2] ints) on this actor's device, plus the pairs themselves:
        compact arrays, no per-pair objects, so a shard of a big network costs one call
        (jobs.bench.te --gpus shards by target) and the driver builds the PairResults."""
        t0 = time.perf_counter()
        cfg = NetworkConfig.model_validate_json(config_json)
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        with task_scope(budget):
            out = pairs_te_arrays(data, pairs, cfg, backend=resolve_backend(cfg.params.backend),
                                  n_surrogates=n_surrogates)
        self._done(len(pairs), t0)
        return {**out, "pairs": pairs}

    def select_targets(self, data: np.ndarray, targets: list[int], config_json: str,
                       budget: TaskBudget | None = None) -> list[TargetResult]:
        """The multivariate selection of `targets`: on this actor's device all of them in lockstep batched
        launches (actors.te.multivariate_batched), on the CPU one after another (select_sources)."""
        t0 = time.perf_counter()
        cfg = NetworkConfig.model_validate_json(config_json)
        with task_scope(budget):
            backend = resolve_backend(cfg.params.backend)
            if backend == "cpu":
                out = [select_sources(data, j, cfg) for j in targets]
            else:
                from actors.te.multivariate_batched import select_sources_batched

                out = select_sources_batched(data, targets, cfg, backend=backend)
        self._done(len(targets) * (data.shape[1] - 1), t0)
        return out

    def transfer_entropy(self, source: np.ndarray, target: np.ndarray, params: dict | None = None) -> dict:
        """One TE estimate (nats) with its local values, for interactive use."""
        res = transfer_entropy(source, target, params=TEParams.model_validate(params or {}))
        return {"te": res.te, "local": res.local, "times": res.times, "n_obs": res.n_obs}
