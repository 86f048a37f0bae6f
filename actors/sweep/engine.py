"""Sweep engine: integrate a batch of (parameters, initial state) points and label each one.

Pure compute on one device, no Ray: usable from a notebook, a test, an actor or a Serve replica.
Three backends share one record and one regime rule: `torch` (batched adaptive Dormand–Prince 5(4),
CPU or CUDA), `scipy` (solve_ivp per trajectory, the reference) and `triton` (a Tsit5 kernel
generated from the model's equations, one trajectory per GPU lane; on the CPU it runs interpreted,
for tests only). `auto` picks triton on CUDA and torch on a CPU (see `resolve_backend`).
"""
from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from actors.common.budget import checkpoint
from actors.common.errors import InputError
from actors.sweep.config import (
    AutoSolver,
    Axis,
    ScipySolver,
    SolverConfig,
    SweepSpec,
    TorchSolver,
    TritonSolver,
)
from actors.sweep.models import CompiledModel, ModelSpec, resolve_model
from actors.sweep.regime import classify
from actors.sweep.scipy_backend import solve_scipy
from kernels.ode.dopri5 import SolveResult


@dataclass
class SimulationResult:
    """Per-trajectory features and labels (batch first), plus optional saved time series."""

    model: str
    state_names: list[str]
    param_names: list[str]
    params: np.ndarray            # [B, m]
    u0: np.ndarray                # [B, n]
    raw: SolveResult
    regime: np.ndarray            # [B] object: fixed_point / limit_cycle / chaotic / blow_up / ...
    attractor: np.ndarray         # [B] object: regime with fixed points named by the model
    t_eval: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def table(self) -> dict[str, np.ndarray]:
        """Column dict: parameters, initial and final state, features, Lyapunov, regime."""
        r = self.raw
        cols: dict[str, np.ndarray] = {}
        for j, name in enumerate(self.param_names):
            cols[name] = self.params[:, j]
        for i, s in enumerate(self.state_names):
            cols[f"{s}_0"] = self.u0[:, i]
        for i, s in enumerate(self.state_names):
            cols[f"{s}_final"] = r.u_final[:, i]
            cols[f"{s}_min"] = r.u_min[:, i]
            cols[f"{s}_max"] = r.u_max[:, i]
            cols[f"{s}_mean"] = r.u_mean[:, i]
        cols.update(t_final=r.t_final, blowup=r.blowup, t_blowup=r.t_blowup, lyapunov_max=r.lyapunov_max,
                    flow_log_ratio=r.flow_log_ratio,
                    n_steps=r.n_steps, regime=self.regime.astype(str), attractor=self.attractor.astype(str))
        if getattr(r, "n_crossings", None) is not None:  # Poincaré section (triton backend)
            cols["section_crossings"] = r.n_crossings
            cols.update({f"return_time_{k}": v for k, v in r.return_time.items()})
        return cols


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("solver.device", f"{device!r} requested but CUDA is not available", "auto, cpu, cuda[:i]")
    return device


def resolve_backend(backend: str, device: str, *, t_eval: np.ndarray | None = None) -> str:
    """The backend that runs: `auto` -> triton on a CUDA device, else torch.

    Why: the generated kernels are the fast path on a GPU, but interpreted on a CPU they are orders
    of magnitude slower than batched torch; they also do not save time series (t_eval -> torch).
    """
    if backend != "auto":
        return backend
    return "triton" if device.startswith("cuda") and t_eval is None else "torch"


def solver_device(solver: SolverConfig) -> str:
    """The torch device a solver block runs on (scipy: the CPU), `auto` resolved."""
    return "cpu" if isinstance(solver, ScipySolver) else resolve_device(solver.device)


def resolve_solver(solver: SolverConfig, *, t_eval: np.ndarray | None = None
                   ) -> TorchSolver | ScipySolver | TritonSolver:
    """The block of the backend that actually runs (`auto` resolved by `resolve_backend`)."""
    if isinstance(solver, AutoSolver):
        return solver.as_backend(resolve_backend("auto", resolve_device(solver.device), t_eval=t_eval))
    return solver


def _check_inputs(model: CompiledModel, params: np.ndarray, u0: np.ndarray) -> None:
    if params.ndim != 2 or params.shape[1] != len(model.param_names):
        raise InputError("params", f"shape {params.shape} does not match [B, {len(model.param_names)}]",
                         f"columns {model.param_names}")
    if u0.ndim != 2 or u0.shape[1] != len(model.state_names) or u0.shape[0] != params.shape[0]:
        raise InputError("initial_state", f"shape {u0.shape} does not match [{params.shape[0]}, "
                         f"{len(model.state_names)}]", f"columns {model.state_names}")
    if not np.isfinite(params).all():
        raise InputError("params", "contains non-finite values", "finite real numbers")
    if not np.isfinite(u0).all():
        raise InputError("initial_state", "contains non-finite values", "finite real numbers")



def label_regimes(model: CompiledModel, solver: SolverConfig, u_min, u_max, lyapunov_max, flow_log_ratio, blowup, finished,
                  u_final, params) -> tuple[np.ndarray, np.ndarray]:
    """(regime, attractor) by the sweep's rule with the solver's thresholds; fixed points named by the
    model (e.g. healthy / collapsed). One place, so the DOP853 reference relabels exactly as the engine."""
    regime = classify(u_min, u_max, lyapunov_max, flow_log_ratio, blowup, finished,
                      fixed_point_tol=solver.fixed_point_tol, chaos_threshold=solver.chaos_threshold,
                      settle_amplitude=solver.settle_amplitude, decay_threshold=solver.decay_threshold,
                      flow_margin=solver.flow_margin)
    attractor = regime.copy()
    fp = regime == "fixed_point"
    if fp.any():
        attractor[fp] = model.fixed_point_label(u_final[fp], params[fp])
    return regime, attractor

def simulate(model: CompiledModel | ModelSpec | str, params: np.ndarray, u0: np.ndarray,
             solver: SolverConfig | None = None, *, t_eval: np.ndarray | None = None,
             progress: Callable[[int, int], None] | None = None) -> SimulationResult:
    """Integrate every row (params[i], u0[i]) over solver.t_span (default: the model's) and classify.

    Bounded work: every backend calls `actors.common.budget.checkpoint()` as it goes (torch: every
    step; triton: between launches; scipy: every right-hand-side evaluation), so under a
    `scope(Budget(...))` — a Serve request, a sweep chunk — it stops with BudgetExceeded or Cancelled.
    A trajectory whose state cannot be advanced (a non-finite step size or right-hand side, or a step
    collapsed below the floor) stops at once as a blow-up with `raw.stalled` set, on every backend.
    """
    model = resolve_model(model)
    solver = solver or TorchSolver()
    params = np.atleast_2d(np.asarray(params, dtype=np.float64))
    u0 = np.atleast_2d(np.asarray(u0, dtype=np.float64))
    _check_inputs(model, params, u0)
    t0, t1 = solver.t_span or model.spec.time_span
    if t_eval is None and solver.save is not None:
        t_eval = np.asarray(solver.save.times, dtype=np.float64)
    if t_eval is not None:
        t_eval = np.asarray(t_eval, dtype=np.float64)
        if t_eval.ndim != 1 or not np.all(np.diff(t_eval) > 0) or t_eval[0] < t0 or t_eval[-1] > t1:
            raise InputError("t_eval", "must be strictly increasing and inside t_span", f"[{t0}, {t1}]")
    window_start = t1 - solver.window * (t1 - t0)
    solver = resolve_solver(solver, t_eval=t_eval)
    if isinstance(solver, TorchSolver):
        raw = _run_torch(model, params, u0, solver, t0, t1, window_start, t_eval, progress)
    elif isinstance(solver, TritonSolver):
        raw = _run_triton(model, params, u0, solver, t0, t1, t_eval, progress)
    else:
        raw = solve_scipy(model.rhs_numpy, u0, params, t0, t1, method=solver.method, rtol=solver.rtol,
                          atol=solver.atol, window_start=window_start, blowup_bound=solver.blowup_bound,
                          lyapunov=solver.lyapunov, twin_separation=solver.twin_separation,
                          renorm_interval=solver.renorm_interval, t_eval=t_eval, progress=progress,
                          checkpoint=checkpoint)
    regime, attractor = label_regimes(model, solver, raw.u_min, raw.u_max, raw.lyapunov_max, raw.flow_log_ratio,
                                      raw.blowup, raw.finished, raw.u_final, params)
    return SimulationResult(model=model.name, state_names=model.state_names, param_names=model.param_names,
                            params=params, u0=u0, raw=raw, regime=regime, attractor=attractor, t_eval=t_eval,
                            meta={"backend": solver.backend, "t_span": (t0, t1)})


def _run_torch(model: CompiledModel, params: np.ndarray, u0: np.ndarray, solver: TorchSolver, t0: float, t1: float,
               window_start: float, t_eval: np.ndarray | None, progress: Callable | None) -> SolveResult:
    import torch

    from kernels.ode.dopri5 import solve_dopri5

    device = resolve_device(solver.device)
    dtype = torch.float64 if solver.dtype == "float64" else torch.float32
    d0 = solver.twin_separation if dtype == torch.float64 else max(solver.twin_separation, 1e-4)
    # parameters equal across the batch are folded into the rhs as constants
    same = np.all(params == params[:1], axis=0)
    fixed = {name: float(params[0, j]) for j, name in enumerate(model.param_names) if same[j]}
    rhs = model.specialized_rhs_torch(fixed)
    free = params[:, model.free_param_columns(fixed)]
    with torch.no_grad():
        return solve_dopri5(rhs, torch.as_tensor(u0, dtype=dtype, device=device),
                            torch.as_tensor(free, dtype=dtype, device=device), t0, t1,
                            rtol=solver.rtol, atol=solver.atol, window_start=window_start,
                            blowup_bound=solver.blowup_bound, lyapunov=solver.lyapunov, twin_separation=d0,
                            t_eval=t_eval, max_steps=solver.max_steps, progress=progress, checkpoint=checkpoint,
                            compile=solver.compile == "on" or (solver.compile == "auto" and device.startswith("cuda")))


def _run_triton(model: CompiledModel, params: np.ndarray, u0: np.ndarray, solver: TritonSolver, t0: float,
                t1: float, t_eval: np.ndarray | None, progress: Callable | None) -> SolveResult:
    """Generated per-trajectory kernel (solver.kernel, kernels/ode/): CUDA compiled, CPU interpreted (slow)."""
    from kernels.ode.triton_solvers import OdeInputError, Section, solve_ode

    device = resolve_device(solver.device)
    d0 = solver.twin_separation if solver.dtype == "float64" else max(solver.twin_separation, 1e-4)
    pc = solver.poincare
    section = None if pc is None else Section(pc.state, pc.level, {"up": 1, "down": -1, "both": 0}[pc.direction],
                                              pc.t_min, pc.max_saved)
    try:
        raw = solve_ode(model, params, u0, (t0, t1), method=solver.kernel, dtype=solver.dtype, rtol=solver.rtol,
                        atol=solver.atol, window=solver.window, blowup_bound=solver.blowup_bound,
                        lyapunov=solver.lyapunov, twin_separation=d0, max_steps=solver.max_steps, device=device,
                        t_eval=t_eval, section=section, checkpoint=checkpoint)
    except OdeInputError as exc:
        field = {"t_eval": "t_eval"}.get(exc.field, "solver." + exc.field.replace("section", "poincare"))
        raise InputError(field, exc.message, exc.allowed) from exc
    if progress is not None:
        progress(params.shape[0], params.shape[0])
    return raw


# ---- grids ---------------------------------------------------------------------------------------
def grid_points(spec: SweepSpec, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rows [start, stop) of the spec's full grid (C order over axes) as (params, u0) arrays."""
    model = resolve_model(spec.model)
    base_p = model.param_vector(spec.params, "params")
    base_u = model.state_vector(spec.initial_state, "initial_state")
    for ax in spec.axes:
        names = model.param_names if ax.kind == "param" else model.state_names
        if ax.name not in names:
            raise InputError(f"axes.{ax.name}", f"not a {ax.kind} of model {model.name}", ", ".join(names))
    stop = spec.n_points if stop is None else min(stop, spec.n_points)
    flat = np.arange(start, stop)
    coords = np.unravel_index(flat, [a.n for a in spec.axes])
    params = np.tile(base_p, (flat.size, 1))
    u0 = np.tile(base_u, (flat.size, 1))
    for ax, c in zip(spec.axes, coords):
        target, names = (params, model.param_names) if ax.kind == "param" else (u0, model.state_names)
        target[:, names.index(ax.name)] = ax.values()[c]
    return params, u0


def check_sweep(spec: SweepSpec) -> CompiledModel:
    """Every name of `spec` against its model — the model itself, params, initial_state, axes, map_axes,
    a Poincaré state — so a job reports a bad name (exit 2) before it starts Ray; the compiled model.

    Raises InputError naming the field (`model: unknown model 'x' (allowed: ...)`).
    """
    model = resolve_model(spec.model)
    grid_points(spec, 0, 0)   # params, initial_state and axis names, on an empty slice of the grid
    axes = [a.name for a in spec.axes]
    for name in spec.map_axes or ():
        if name not in axes:
            raise InputError("map_axes", f"{name!r} is not one of the axes", ", ".join(axes))
    poincare = getattr(spec.solver, "poincare", None)
    if poincare is not None and poincare.state not in model.state_names:
        raise InputError("solver.poincare.state", f"unknown state {poincare.state!r}", ", ".join(model.state_names))
    return model


def axis_columns(spec: SweepSpec) -> list[str]:
    """Table column of each axis (state axes are initial conditions, `<state>_0`)."""
    return [a.name if a.kind == "param" else f"{a.name}_0" for a in spec.axes]


def all_axes_values(axes: list[Axis]) -> list[tuple[float, ...]]:
    return list(itertools.product(*[a.values() for a in axes]))
