"""SweepWorker: a Ray actor pinned to one GPU (or CPU) that owns the sweep engine.

Resources, GPU ids, thread pinning, `info()` and the GPU-memory gauge come from BaseWorker; this class
adds the sweep's methods. Every method is idempotent (the same chunk of the same spec gives the same
rows), so Ray may retry it after a crash. A chunk runs under a wall-clock budget of the spec's
`chunk_timeout_s` (actors.common.budget): past it the engine stops and the chunk fails with
BudgetExceeded naming that field, which reaches the job as its error (exit 2). Metrics: attractor_sweep_trajectories_total,
attractor_sweep_chunk_seconds, attractor_sweep_worker_gpu_memory_bytes.
"""
from __future__ import annotations

import time

import pandas as pd

from actors.common.budget import Budget, scope
from actors.common.config import validated
from actors.common.worker import BaseWorker
from actors.sweep.bifurcation import BifurcationSpec, diagram_chunk
from actors.sweep.config import ScipySolver, SolverConfig, SweepSpec
from actors.sweep.engine import grid_points, simulate

__all__ = ["SweepWorker"]


class SweepWorker(BaseWorker):
    """Integrates sweep chunks, bifurcation-diagram chunks and spectra on its device."""

    subsystem = "sweep"

    def __init__(self, worker_index: int = 0):
        super().__init__(worker_index)
        self._trajectories = self.counter("trajectories_total", "Trajectories integrated by sweep workers.")
        self._latency = self.histogram("chunk_seconds", "Wall time of one sweep chunk.")
        self.chunks_done = 0

    def _on_my_device(self, solver: SolverConfig) -> SolverConfig:
        """`device: auto` means this worker's device (its GPU when Ray assigned one)."""
        if isinstance(solver, ScipySolver) or solver.device != "auto":
            return solver
        return validated(type(solver), solver, device=self.device)

    def _done(self, rows: int, started: float) -> None:
        self._trajectories.inc(rows)
        self._latency.observe(time.perf_counter() - started)
        self.record_gpu_memory()
        self.chunks_done += 1

    def run_chunk(self, spec_json: str, index: int, start: int, stop: int) -> pd.DataFrame:
        """Integrate grid rows [start, stop) of the spec and return one row per trajectory.

        The spec carries its model when it is not a shipped preset (pool.run_sweep ships registered
        models inline), so this process needs no registration of its own.
        """
        t = time.perf_counter()
        spec = SweepSpec.model_validate_json(spec_json)
        with scope(Budget(spec.chunk_timeout_s, setting="chunk_timeout_s")):
            params, u0 = grid_points(spec, start, stop)
            result = simulate(spec.model, params, u0, self._on_my_device(spec.solver))
        frame = pd.DataFrame(result.table())
        frame.insert(0, "point", range(start, stop))
        frame.insert(1, "chunk", index)
        frame["backend"] = result.meta["backend"]  # the backend that ran (auto resolved): the report names it
        self._done(len(frame), t)
        return frame

    def bifurcation_chunk(self, spec_json: str, start: int, stop: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Values [start, stop) of a bifurcation diagram: (dots, per-value rows), see bifurcation.py."""
        t = time.perf_counter()
        spec = BifurcationSpec.model_validate_json(spec_json)
        spec = validated(BifurcationSpec, spec, solver=self._on_my_device(spec.solver))
        dots, rows = diagram_chunk(spec, start, stop)
        self._done(len(rows), t)
        return dots, rows

    def spectra(self, spec_json: str) -> pd.DataFrame:
        """The spec's `analysis.spectrum` table (actors/sweep/spectra.py) on this worker's device."""
        from actors.sweep.spectra import spectra_table

        return spectra_table(SweepSpec.model_validate_json(spec_json), device=self.device)
