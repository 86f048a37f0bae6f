"""Pydantic models for the sweep subsystem's YAML (configs/sweep/*.yaml) and requests.

The solver block is one class per backend (`TorchSolver`, `ScipySolver`, `TritonSolver`, `AutoSolver`),
chosen by its `backend` key (missing: torch, as before), so an option a backend would ignore cannot be
written: `method` is scipy's, `compile` torch's, `kernel` / `poincare` triton's, and `auto` (triton on
CUDA, torch on a CPU) takes the options of both. `SolverConfig` is their union; `make_solver` builds one
from a mapping or keywords. All models are frozen (actors.common.config.Strict).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import BeforeValidator, Discriminator, Field, Tag, TypeAdapter, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from actors.common.config import Strict, WorkerConfig, validated
from actors.common.errors import InputError
from actors.sweep.modelspec import ModelRef, ModelSpec, model_label

__all__ = [
    "CHUNK_TIMEOUT_S", "AnalysisConfig", "AutoSolver", "Axis", "AxisKind", "Backend", "CompileMode", "Direction",
    "Dtype", "Kernel", "ModelRef", "ModelSpec", "PoincareConfig", "SaveConfig", "ScipyMethod", "ScipySolver", "SolverConfig", "SpectrumAnalysis", "SweepSpec",
    "TorchSolver", "TritonSolver", "WorkerConfig", "make_solver", "validated",
]

# triton: generated per-trajectory kernels; auto: triton where the device is CUDA, else torch (the
# triton interpreter on a CPU is for tests only, far too slow for real sweeps)
Backend = Literal["torch", "scipy", "triton", "auto"]
DEFAULT_BACKEND = "torch"                                 # a solver block without `backend`
ScipyMethod = Literal["DOP853", "LSODA", "RK45", "Radau"]  # solve_ivp methods
Kernel = Literal["tsit5", "dopri5", "rosenbrock23"]       # generated solver (rosenbrock23: stiff, symbolic J)
CompileMode = Literal["auto", "on", "off"]                # torch.compile the trial step; auto -> on for CUDA
Dtype = Literal["float64", "float32"]
Direction = Literal["up", "down", "both"]                 # Poincaré crossing direction
AxisKind = Literal["param", "state"]


class SaveConfig(Strict):
    """Store the state at given times, from each solver's own interpolant (dense output)."""

    mode: Literal["interp"] = "interp"
    times: list[float] = Field(min_length=1, max_length=100_000)   # increasing, inside t_span


class PoincareConfig(Strict):
    """A Poincaré section u[state] = level, located inside the generated kernels (triton backend):
    crossing count, the first max_saved crossing states, return-time mean/std/min/max per trajectory."""

    state: str
    level: float = 0.0
    direction: Direction = "up"
    t_min: float | None = None                 # crossings before it are ignored (default: t_span start)
    max_saved: int = Field(0, ge=0, le=10_000)


# ---- the solver block: one class per backend ------------------------------------------------------
class _SolverBase(Strict):
    """Settings every backend reads: tolerances, horizon, window, blow-up, Lyapunov twin, regime rule."""

    backend: Backend                         # each subclass narrows it to its own name (the union's tag)
    save: SaveConfig | None = None           # state at given times (every backend)
    rtol: float = Field(1e-8, gt=1e-14, le=1e-2)
    atol: float = Field(1e-10, gt=1e-16, le=1e-2)
    t_span: tuple[float, float] | None = None  # None -> the model's own time_span
    window: float = Field(0.25, gt=0, lt=1)  # final fraction of t_span used for min/max and Lyapunov
    blowup_bound: float = Field(1e4, gt=0)   # |u_i| beyond this (or non-finite) means blow-up
    lyapunov: bool = True                    # estimate the largest exponent from a perturbed twin
    twin_separation: float = Field(1e-7, gt=0, lt=1e-2)
    # regime rule thresholds (see docs/models/README.md "Regime rule")
    fixed_point_tol: float = Field(1e-4, gt=0)    # relative window amplitude below which: fixed point
    chaos_threshold: float = Field(0.01, ge=0)    # lambda_max above which (and not a fixed point): chaotic
    # a focus still spiralling in: amplitude below settle_amplitude and lambda_max < -decay_threshold
    settle_amplitude: float = Field(0.05, ge=0, le=1)
    decay_threshold: float = Field(0.01, gt=0)
    # chaotic also needs lambda - flow term > chaos_threshold + flow_margin * |flow term| (regime.py)
    flow_margin: float = Field(0.5, ge=0)

    @model_validator(mode="after")
    def _order(self) -> _SolverBase:
        if self.t_span is not None:
            t0, t1 = self.t_span
            if not (np.isfinite(t0) and np.isfinite(t1)) or t1 <= t0:
                raise ValueError(f"t_span must be finite and increasing, got {self.t_span}")
        return self


class _DeviceSolver(_SolverBase):
    """Backends that run on a torch device (a CPU or one GPU) in FP64 or FP32."""

    device: str = "auto"                     # auto -> cuda when visible, else cpu
    dtype: Dtype = "float64"
    max_steps: int = Field(2_000_000, gt=0)


class _TorchOptions(_DeviceSolver):
    compile: CompileMode = "auto"


class _TritonOptions(_DeviceSolver):
    kernel: Kernel = "tsit5"                   # which generated solver
    poincare: PoincareConfig | None = None     # section features, computed inside the kernels


class TorchSolver(_TorchOptions):
    """Batched adaptive Dormand–Prince 5(4) in torch (kernels/ode/dopri5.py), CPU or CUDA."""

    backend: Literal["torch"] = "torch"


class ScipySolver(_SolverBase):
    """solve_ivp per trajectory, the reference (float64, CPU)."""

    backend: Literal["scipy"] = "scipy"
    method: ScipyMethod = "DOP853"
    renorm_interval: float = Field(2.0, gt=0)  # time between twin renormalisations


class TritonSolver(_TritonOptions):
    """Generated per-trajectory kernels (kernels/ode/): compiled on CUDA, interpreted on a CPU (tests)."""

    backend: Literal["triton"] = "triton"


class AutoSolver(_TorchOptions, _TritonOptions):
    """triton on a CUDA device, torch on a CPU (and whenever time series are saved): both option sets."""

    backend: Literal["auto"] = "auto"

    def as_backend(self, backend: Literal["torch", "triton"]) -> TorchSolver | TritonSolver:
        """This block as the backend that runs, keeping that backend's options.

        Why: a section (`poincare`) is computed only by the generated kernels; resolving to torch with
        one set is an error, not a silently dropped feature.
        """
        if backend == "torch":
            if self.poincare is not None:
                raise InputError("solver.poincare", "sections are computed by the generated kernels, not the "
                                 "torch backend that `auto` picks here (a CPU device or saved time series)",
                                 "backend: triton on a CUDA device")
            return TorchSolver.model_validate(self.model_dump(exclude={"backend", "kernel", "poincare"}))
        return TritonSolver.model_validate(self.model_dump(exclude={"backend", "compile"}))


SOLVERS: dict[str, type[_SolverBase]] = {"torch": TorchSolver, "scipy": ScipySolver, "triton": TritonSolver,
                                         "auto": AutoSolver}


class _BackendKey(Strict):
    model_config = {"extra": "ignore"}
    backend: Backend = DEFAULT_BACKEND


def _by_backend(value: Any) -> Any:
    """Validate a solver mapping as the class its `backend` names, with errors on the option itself.

    Why not pydantic's tagged union alone: its error locations carry the tag (`solver.auto.rtol`),
    while users and the jobs' error lines name `solver.rtol`.
    """
    if not isinstance(value, Mapping):
        return value
    cls = SOLVERS[_BackendKey.model_validate(value).backend]
    foreign = [k for k in value if k not in cls.model_fields and any(k in c.model_fields for c in SOLVERS.values())]
    if foreign:
        errors: list[InitErrorDetails] = []
        for key in foreign:
            owners = " or ".join(b for b, c in SOLVERS.items() if key in c.model_fields)
            errors.append({"type": PydanticCustomError(
                "solver_option", "{option} is an option of backend {owners}, not {backend}",
                {"option": key, "owners": owners, "backend": cls.model_fields["backend"].default,
                 "expected": f"backend: {owners}"}), "loc": (key,), "input": value[key]})
        raise ValidationError.from_exception_data(cls.__name__, errors)
    return cls.model_validate(dict(value))


def _backend_tag(value: Any) -> str | None:
    """The union's discriminator: a block's `backend` (missing: torch)."""
    if isinstance(value, Mapping):
        return value.get("backend", DEFAULT_BACKEND)
    return value.backend if isinstance(value, _SolverBase) else None


SolverConfig = Annotated[Union[  # noqa: UP007
    Annotated[TorchSolver, Tag("torch")], Annotated[ScipySolver, Tag("scipy")],
    Annotated[TritonSolver, Tag("triton")], Annotated[AutoSolver, Tag("auto")]],
    Discriminator(_backend_tag, custom_error_type="solver_block", custom_error_message="not a solver block",
                  custom_error_context={"expected": "a mapping such as {backend: torch, rtol: 1e-8}"}),
    BeforeValidator(_by_backend)]
_SOLVER = TypeAdapter(SolverConfig)


def make_solver(data: Mapping[str, Any] | str | None = None, /, **fields: Any) -> SolverConfig:
    """The solver block (a mapping, its JSON text, or keywords) as its backend's class.

    Raises pydantic's ValidationError, as constructing the class itself would.
    """
    raw = json.loads(data) if isinstance(data, str) else dict(data or {})
    return _SOLVER.validate_python({**raw, **fields})


class Axis(Strict):
    """One swept quantity: a parameter or an initial-state component over linspace(lo, hi, n)."""

    name: str
    kind: AxisKind = "param"
    lo: float
    hi: float
    n: int = Field(gt=0, le=100_000)

    def values(self) -> np.ndarray:
        return np.linspace(self.lo, self.hi, self.n)


class SpectrumAnalysis(Strict):
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


class AnalysisConfig(Strict):
    """Optional analysis after the sweep itself (each block absent -> skipped)."""

    spectrum: SpectrumAnalysis | None = None


CHUNK_TIMEOUT_S = 3600.0   # default wall-clock budget of one sweep chunk on its worker


class SweepSpec(Strict):
    """A full sweep: model (a name, or a whole model inline), fixed overrides, grid axes, solver and
    chunking. `chunk_timeout_s` bounds each chunk's wall clock on its worker (BudgetExceeded naming it)."""

    name: str = "sweep"
    model: ModelRef = "gaslit_af"
    params: dict[str, float] = Field(default_factory=dict)          # fixed overrides
    initial_state: dict[str, float] = Field(default_factory=dict)   # fixed overrides
    axes: list[Axis] = Field(min_length=1, max_length=4)
    solver: SolverConfig = Field(default_factory=TorchSolver)
    workers: WorkerConfig = Field(default_factory=WorkerConfig)
    chunk_size: int = Field(256, gt=0, le=1_000_000)
    map_axes: tuple[str, str] | None = None    # which two axes the regime map plots (default: first two)
    analysis: AnalysisConfig | None = None      # optional post-sweep analysis (spectra)
    chunk_timeout_s: float = Field(CHUNK_TIMEOUT_S, gt=0, le=7 * 86_400)   # per chunk, on its worker

    @property
    def model_name(self) -> str:
        """The model's name, whether it is given by name or inline."""
        return model_label(self.model)

    @property
    def n_points(self) -> int:
        return int(np.prod([a.n for a in self.axes]))
