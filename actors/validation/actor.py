"""ValidationWorker: a Ray actor (CPU, or pinned to a GPU) that runs collapse-detector dimensions.

Sizing, GPU ids, thread pinning, `info()` and the metrics factory come from `BaseWorker`; options
(num_gpus, num_cpus, restarts) from the validation WorkerConfig via `named_actors`. `run_dimension`
is idempotent: a dimension's resampling is seeded from (seed, dimension), so a retried task returns
the same result as the in-process engine.
"""
from __future__ import annotations

import time

from actors.common.worker import BaseWorker
from actors.validation.config import DetectorConfig
from actors.validation.data import Pooled
from actors.validation.detector import DimensionResult, run_dimension

__all__ = ["ValidationWorker"]


class ValidationWorker(BaseWorker):
    """Metrics: attractor_validation_dimensions_total, attractor_validation_dimension_seconds (by
    dimension) and attractor_validation_worker_gpu_memory_bytes."""

    subsystem = "validation"

    def __init__(self, worker_index: int = 0):
        super().__init__(worker_index)
        self._done = self.counter("dimensions_total", "Collapse-detector dimensions computed.", ("dimension",))
        self._latency = self.histogram("dimension_seconds", "Wall time of one dimension.", ("dimension",))

    def run_dimension(self, name: str, pooled: Pooled, config_json: str) -> DimensionResult:
        """One dimension (statistics + calibrated null) on the pooled tables."""
        t = time.perf_counter()
        res = run_dimension(name, pooled, DetectorConfig.model_validate_json(config_json))
        self._done.inc(1, tags={"dimension": name})
        self._latency.observe(time.perf_counter() - t, tags={"dimension": name})
        self.record_gpu_memory()
        return res
