"""ValidationWorker: a Ray actor (CPU, or pinned to a GPU) that runs collapse-detector dimensions.

Options (num_gpus, num_cpus, restarts) come from the validation WorkerConfig. `run_dimension` is
idempotent: a dimension's resampling is seeded from (seed, dimension), so a retried task returns the
same result as the in-process engine.
"""
from __future__ import annotations

import os
import socket
import time

import ray
from ray.util import metrics

from actors.validation.config import DetectorConfig
from actors.validation.data import Pooled
from actors.validation.detector import DimensionResult, run_dimension


class ValidationWorker:
    """Plain class; `remote_worker_class()` turns it into the Ray actor class."""

    def __init__(self, worker_index: int = 0):
        self.worker_index = worker_index
        self.gpu_ids = [str(g) for g in ray.get_gpu_ids()]
        tags = {"worker": str(worker_index)}
        self._done = metrics.Counter("attractor_validation_dimensions_total",
                                     "Collapse-detector dimensions computed.", tag_keys=("worker", "dimension"))
        self._latency = metrics.Histogram("attractor_validation_dimension_seconds", "Wall time of one dimension.",
                                          boundaries=[0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600],
                                          tag_keys=("worker", "dimension"))
        for m in (self._done, self._latency):
            m.set_default_tags(tags)

    def info(self) -> dict:
        return {"worker_index": self.worker_index, "gpu_ids": self.gpu_ids, "pid": os.getpid(),
                "host": socket.gethostname()}

    def run_dimension(self, name: str, pooled: Pooled, config_json: str) -> DimensionResult:
        """One dimension (statistics + calibrated null) on the pooled tables."""
        t = time.perf_counter()
        res = run_dimension(name, pooled, DetectorConfig.model_validate_json(config_json))
        self._done.inc(1, tags={"dimension": name})
        self._latency.observe(time.perf_counter() - t, tags={"dimension": name})
        return res


def remote_worker_class(num_cpus: float, num_gpus: float, max_restarts: int, max_task_retries: int):
    """The Ray actor class with this subsystem's resource options."""
    return ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=max_restarts,
                      max_task_retries=max_task_retries)(ValidationWorker)
