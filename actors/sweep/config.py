"""Pydantic models for the sweep subsystem's YAML (configs/sweep/*.yaml) and requests."""
from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SaveConfig(_Strict):
    """Store the state at given times, from each solver's own interpolant (dense output)."""

    mode: Literal["interp"] = "interp"
    times: list[float] = Field(min_length=1, max_length=100_000)   # increasing, inside t_span


class PoincareConfig(_Strict):
    """A Poincaré section u[state] = level, located inside the generated kernels (triton backend):
    crossing count, the first max_saved crossing states, return-time mean/std/min/max per trajectory."""

    state: str
    level: float = 0.0
    direction: Literal["up", "down", "both"] = "up"
    t_min: float | None = None                 # crossings before it are ignored (default: t_span start)
    max_saved: int = Field(0, ge=0, le=10_000)


class SolverConfig(_Strict):
    """How to integrate and how to judge the result. Both backends read the same settings."""

    # triton: generated per-trajectory Tsit5 kernels; auto: triton where the device is CUDA, else torch
    # (the triton interpreter on a CPU is for tests only, far too slow for real sweeps)
    backend: Literal["torch", "scipy", "triton", "auto"] = "torch"
    method: Literal["DOP853", "LSODA", "RK45", "Radau"] = "DOP853"  # scipy backend only
    # triton backend: which generated solver (rosenbrock23: stiff, symbolic Jacobian in the kernel)
    kernel: Literal["tsit5", "dopri5", "rosenbrock23"] = "tsit5"
    save: SaveConfig | None = None           # state at given times (every backend)
    poincare: PoincareConfig | None = None   # section features (triton backend only)
    rtol: float = Field(1e-8, gt=1e-14, le=1e-2)
    atol: float = Field(1e-10, gt=1e-16, le=1e-2)
    dtype: Literal["float64", "float32"] = "float64"
    device: str = "auto"                     # torch backend: auto -> cuda when visible, else cpu
    compile: Literal["auto", "on", "off"] = "auto"  # torch.compile the trial step; auto -> on for CUDA
    t_span: tuple[float, float] | None = None  # None -> the model's own time_span
    window: float = Field(0.25, gt=0, lt=1)  # final fraction of t_span used for min/max and Lyapunov
    blowup_bound: float = Field(1e4, gt=0)   # |u_i| beyond this (or non-finite) means blow-up
    lyapunov: bool = True                    # estimate the largest exponent from a perturbed twin
    twin_separation: float = Field(1e-7, gt=0, lt=1e-2)
    renorm_interval: float = Field(2.0, gt=0)  # scipy backend: time between twin renormalisations
    max_steps: int = Field(2_000_000, gt=0)
    # regime rule thresholds (see docs/models/README.md "Regime rule")
    fixed_point_tol: float = Field(1e-4, gt=0)    # relative window amplitude below which: fixed point
    chaos_threshold: float = Field(0.01, ge=0)    # lambda_max above which (and not a fixed point): chaotic
    # a focus still spiralling in: amplitude below settle_amplitude and lambda_max < -decay_threshold
    settle_amplitude: float = Field(0.05, ge=0, le=1)
    decay_threshold: float = Field(0.01, gt=0)
    # chaotic also needs lambda - flow term > chaos_threshold + flow_margin * |flow term| (regime.py)
    flow_margin: float = Field(0.5, ge=0)

    @model_validator(mode="after")
    def _order(self) -> SolverConfig:
        if self.t_span is not None:
            t0, t1 = self.t_span
            if not (np.isfinite(t0) and np.isfinite(t1)) or t1 <= t0:
                raise ValueError(f"t_span must be finite and increasing, got {self.t_span}")
        return self


class Axis(_Strict):
    """One swept quantity: a parameter or an initial-state component over linspace(lo, hi, n)."""

    name: str
    kind: Literal["param", "state"] = "param"
    lo: float
    hi: float
    n: int = Field(gt=0, le=100_000)

    def values(self) -> np.ndarray:
        return np.linspace(self.lo, self.hi, self.n)


class WorkerConfig(_Strict):
    """Actor resources: the same code runs on a laptop (CPU actors) or one actor per GPU."""

    num_workers: int | Literal["auto"] = "auto"   # auto -> one per GPU, else 1
    num_gpus: float | Literal["auto"] = "auto"    # auto -> 1 when the cluster has GPUs, else 0
    num_cpus: float = 1.0
    max_restarts: int = -1
    max_task_retries: int = 3


class SpectrumAnalysis(_Strict):
    """Full Lyapunov spectra (actors/sweep/lyapunov.py, RK4 + QR) for a few selected trajectories.

    Selected: `sample` grid points drawn at random (seeded, so a resumed sweep picks the same ones)
    and, with `reference_points`, the model's documented points. Written to DIR/spectra.parquet.
    """

    sample: int = Field(0, ge=0, le=10_000)        # random grid points (capped at the grid size)
    reference_points: bool = False                 # also the model's documented reference points
    seed: int = Field(0, ge=0)
    k: int | None = Field(None, ge=1, le=64)       # exponents; None -> all (the number of states)
    dt: float = Field(0.01, gt=0, le=1)            # RK4 step
    t_transient: float = Field(100.0, gt=0)
    t_measure: float = Field(200.0, gt=0)
    classify: bool = True                          # add classify_spectrum columns (regime, period)
    zero_tol: float = Field(0.01, gt=0)
    chaos_threshold: float = Field(0.02, gt=0)
    fixed_point_tol: float = Field(1e-4, gt=0)
    section_tol: float = Field(1e-3, gt=0)
    blowup_bound: float = Field(1e6, gt=0)

    @model_validator(mode="after")
    def _some_points(self) -> SpectrumAnalysis:
        if self.sample == 0 and not self.reference_points:
            raise ValueError("analysis.spectrum selects no trajectory: set sample >= 1 or reference_points: true")
        if self.t_measure <= self.dt:
            raise ValueError(f"analysis.spectrum.t_measure must exceed dt={self.dt}, got {self.t_measure}")
        return self


class AnalysisConfig(_Strict):
    """Optional analysis after the sweep itself (each block absent -> skipped)."""

    spectrum: SpectrumAnalysis | None = None


class SweepSpec(_Strict):
    """A full sweep: model, fixed overrides, grid axes, solver and chunking."""

    name: str = "sweep"
    model: str = "gaslit_af"
    params: dict[str, float] = Field(default_factory=dict)          # fixed overrides
    initial_state: dict[str, float] = Field(default_factory=dict)   # fixed overrides
    axes: list[Axis] = Field(min_length=1, max_length=4)
    solver: SolverConfig = Field(default_factory=SolverConfig)
    workers: WorkerConfig = Field(default_factory=WorkerConfig)
    chunk_size: int = Field(256, gt=0, le=1_000_000)
    map_axes: tuple[str, str] | None = None    # which two axes the regime map plots (default: first two)
    analysis: AnalysisConfig | None = None      # optional post-sweep analysis (spectra)

    @property
    def n_points(self) -> int:
        return int(np.prod([a.n for a in self.axes]))
