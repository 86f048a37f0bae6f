"""SweepWorker: a Ray actor pinned to one GPU (or CPU) that owns the sweep engine.

Options (num_gpus, num_cpus, restarts) come from WorkerConfig, so the same class runs as a CPU
actor on a laptop and as one actor per GPU on a cluster. `run_chunk` is idempotent: the same
chunk of the same spec gives the same rows, so Ray may retry it after a crash.
"""
from __future__ import annotations

import os
import socket
import time

import pandas as pd
import ray
from ray.util import metrics

from actors.sweep.config import SweepSpec
from actors.sweep.engine import grid_points, simulate


class SweepWorker:
    """Plain class; `remote_worker_class()` turns it into the Ray actor class."""

    def __init__(self, worker_index: int = 0):
        import torch

        self.worker_index = worker_index
        self.gpu_ids = [str(g) for g in ray.get_gpu_ids()]
        self.device = "cuda" if self.gpu_ids and torch.cuda.is_available() else "cpu"
        n_cpu = int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1) or 1)
        torch.set_num_threads(max(1, n_cpu))  # one actor per core: no oversubscription
        tags = {"worker": str(worker_index)}
        self._trajectories = metrics.Counter(
            "attractor_sweep_trajectories_total", "Trajectories integrated by sweep workers.",
            tag_keys=("worker",))
        self._latency = metrics.Histogram(
            "attractor_sweep_chunk_seconds", "Wall time of one sweep chunk.",
            boundaries=[0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600], tag_keys=("worker",))
        self._gpu_mem = metrics.Gauge(
            "attractor_sweep_worker_gpu_memory_bytes", "Peak CUDA memory allocated by the worker.",
            tag_keys=("worker",))
        for m in (self._trajectories, self._latency, self._gpu_mem):
            m.set_default_tags(tags)
        self.chunks_done = 0

    def info(self) -> dict:
        """Where this worker runs: node, pid, assigned GPU ids, torch device."""
        return {"worker_index": self.worker_index, "gpu_ids": self.gpu_ids, "device": self.device,
                "pid": os.getpid(), "host": socket.gethostname(),
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}

    def run_chunk(self, spec_json: str, index: int, start: int, stop: int) -> pd.DataFrame:
        """Integrate grid rows [start, stop) of the spec and return one row per trajectory."""
        import torch

        t = time.perf_counter()
        spec = SweepSpec.model_validate_json(spec_json)
        solver = spec.solver
        if solver.backend in ("torch", "triton", "auto") and solver.device == "auto":
            solver = solver.model_copy(update={"device": self.device})
        params, u0 = grid_points(spec, start, stop)
        result = simulate(spec.model, params, u0, solver)
        frame = pd.DataFrame(result.table())
        frame.insert(0, "point", range(start, stop))
        frame.insert(1, "chunk", index)
        frame["backend"] = result.meta["backend"]  # the backend that ran (auto resolved): the report names it
        elapsed = time.perf_counter() - t
        self._trajectories.inc(len(frame))
        self._latency.observe(elapsed)
        if self.device == "cuda":
            self._gpu_mem.set(float(torch.cuda.max_memory_allocated()))
        self.chunks_done += 1
        return frame


    def spectra(self, spec_json: str) -> pd.DataFrame:
        """The spec's `analysis.spectrum` table (actors/sweep/spectra.py) on this worker's device."""
        from actors.sweep.spectra import spectra_table

        return spectra_table(SweepSpec.model_validate_json(spec_json), device=self.device)


def remote_worker_class(num_cpus: float, num_gpus: float, max_restarts: int, max_task_retries: int):
    """The Ray actor class with this subsystem's resource options."""
    return ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=max_restarts,
                      max_task_retries=max_task_retries)(SweepWorker)
