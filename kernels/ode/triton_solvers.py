"""Host side of the generated per-trajectory ODE kernels: validate, allocate, launch in time chunks.

`solve_ode` integrates a batch of (parameters, initial state) rows with a kernel generated from
the model's equations (kernels/ode/codegen.py): fixed-step RK4, adaptive Tsit5 / Dormand–Prince
5(4) with a PI step controller, or the linearly implicit Rosenbrock23 for stiff systems (symbolic
Jacobian, per-lane pivoted LU), in float32 or float64, on CUDA (compiled) or on the CPU (the same
kernels under TRITON_INTERPRET=1; slow, for CI on small batches).

Optional in-kernel outputs: the state at given times (`t_eval`, shared or per trajectory) from each
method's own interpolant, and a Poincaré `section` (crossings located on the interpolant: count,
first K crossing states, return-time mean/std/min/max: a limit cycle's period directly).

Long tails: each launch advances every working trajectory by at most `chunk_steps` trial steps;
between launches the unfinished rows are compacted into a fresh index list (the kernel reads and
writes its lanes' state through that list, so compaction moves no state). Lanes of a warp then
stay busy instead of idling behind one stiff or chaotic trajectory.

Bounded work: an optional `checkpoint()` callback runs after every launch (raising from it stops the
run: a caller's deadline or cancellation; on a GPU a launch is at most `chunk_steps` trial steps). A
lane whose step size is not finite or collapses below hmin stops as STATUS_STUCK: a blow-up with
`stalled` set, as the torch integrator and the scipy reference report it.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import sympy as sp
import torch

from kernels.ode.buffers import BUFFERS, INIT_BUFFERS, INTS, SCALARS
from kernels.ode.codegen import KernelSpec, OdeSystem, load_kernels, system_from_model
from kernels.ode.dopri5 import SolveResult
from kernels.ode.tableaus import TABLEAUS

METHODS = tuple(TABLEAUS)
STATUS_RUNNING, STATUS_DONE, STATUS_ESCAPED, STATUS_STUCK = 0, 1, 2, 3


class OdeInputError(ValueError):
    """An argument out of its allowed range; names the field (Serve/engines map it to a 4xx)."""

    def __init__(self, field: str, message: str, allowed: str | None = None):
        self.field = field
        self.message = message
        self.allowed = allowed
        super().__init__(f"{field}: {message}" + (f" (allowed: {allowed})" if allowed else ""))


@dataclass
class OdeKernelResult(SolveResult):
    """SolveResult (so the sweep engine's regime rule reads it unchanged) plus saved states."""

    saves: np.ndarray | None = None     # [B, n_save, n]: state after every save_every-th accepted step
    save_t: np.ndarray | None = None    # [B, n_save]: the times of those states (nan where not reached)
    launches: int = 0                   # kernel launches (time chunks) it took
    t_eval: np.ndarray | None = None    # [T] or [B, T]: the times of `ys` (ys: [B, T, n], nan where not reached)
    n_crossings: np.ndarray | None = None   # [B] section crossings (after section.t_min)
    crossings: np.ndarray | None = None     # [B, K, n] the first K crossing states (nan where fewer)
    crossing_t: np.ndarray | None = None    # [B, K] their times
    return_time: dict[str, np.ndarray] | None = None  # mean, std (population), min, max: [B], nan if < 2 crossings


@dataclass(frozen=True)
class Section:
    """A Poincaré section u[state] = level, crossed upwards (+1), downwards (-1) or either way (0).

    Crossings before t_min (default: t0) are ignored, so a transient does not enter the
    return-time statistics; the first `max_saved` crossing states are stored per trajectory.
    """

    state: int | str
    level: float = 0.0
    direction: int = 1
    t_min: float | None = None
    max_saved: int = 0


@dataclass
class DeviceState:
    """Per-trajectory buffers on the device (what the kernels read and write), batch first.

    One tensor per row of the buffer table (kernels/ode/buffers.py), read as attributes: st.u,
    st.status, ... (a feature that is off leaves a one-element unused tensor).
    """

    system: OdeSystem
    spec: KernelSpec
    buffers: dict[str, torch.Tensor]
    launches: int = 0

    def __getattr__(self, name: str) -> torch.Tensor:
        try:
            return self.__dict__["buffers"][name]
        except KeyError:
            raise AttributeError(name) from None

    def step_args(self) -> list[torch.Tensor]:
        """The buffers in the step kernel's argument order."""
        return [self.buffers[b.name] for b in BUFFERS]

    def init_args(self) -> list[torch.Tensor]:
        """The buffers in the init kernel's argument order."""
        return [self.buffers[name] for name in INIT_BUFFERS]


def allocate(dims: dict[str, int], on: set[str], given: dict[str, torch.Tensor], real: torch.dtype,
             device: str) -> dict[str, torch.Tensor]:
    """One tensor per buffer-table row: `given` (the rows without a fill), filled ones, and
    one-element unused tensors for features that are off.

    dims: the sizes the shape rules name (B, n, m, n_save, T, K); on: the features this run uses.
    """
    need = {b.name for b in BUFFERS if b.needed(on) and b.fill is None}
    if set(given) != need:
        raise ValueError(f"initial values given for {sorted(given)}, the table needs {sorted(need)}")
    out = {}
    for b in BUFFERS:
        dt = real if b.dtype == "real" else torch.int32
        if not b.needed(on):
            out[b.name] = torch.full((1,), float("nan") if b.dtype == "real" else 0, dtype=dt, device=device)
        elif b.fill is None:
            out[b.name] = given[b.name]
        else:
            shape = tuple(d if isinstance(d, int) else dims[d] for d in b.shape)
            out[b.name] = torch.full(shape, b.fill, dtype=dt, device=device)
    return out


def _check(cond: bool, field: str, message: str, allowed: str | None = None) -> None:
    if not cond:
        raise OdeInputError(field, message, allowed)


def _validate(model, params: np.ndarray, u0: np.ndarray, t_span, method: str, dtype: str, rtol: float,
              atol: float, n_steps: int | None, window: float, blowup_bound: float, twin_separation: float,
              save_every: int, n_save: int, max_steps: int, chunk_steps: int | None, block: int) -> None:
    n, m = len(model.state_names), len(model.param_names)
    _check(method in METHODS, "method", f"unknown method {method!r}", ", ".join(METHODS))
    _check(dtype in ("float32", "float64"), "dtype", f"unknown dtype {dtype!r}", "float32, float64")
    _check(params.ndim == 2 and params.shape[1] == m and params.shape[0] >= 1, "params",
           f"shape {params.shape} is not [B >= 1, {m}]", f"columns {list(model.param_names)}")
    _check(u0.shape == (params.shape[0], n), "initial_state", f"shape {u0.shape} is not [{params.shape[0]}, {n}]",
           f"columns {list(model.state_names)}")
    _check(bool(np.isfinite(params).all()), "params", "contains non-finite values", "finite real numbers")
    _check(bool(np.isfinite(u0).all()), "initial_state", "contains non-finite values", "finite real numbers")
    t0, t1 = (float(x) for x in t_span)
    _check(math.isfinite(t0) and math.isfinite(t1) and t1 > t0, "t_span",
           f"must be finite and increasing, got {tuple(t_span)}", "t0 < t1")
    if TABLEAUS[method].adaptive:
        lo = 1e-14 if dtype == "float64" else 5e-7   # below a few ulps the controller cannot succeed
        _check(lo <= rtol <= 0.1, "rtol", f"{rtol} out of range for {dtype}", f"[{lo:g}, 0.1]")
        _check(0 < atol <= 1.0 and math.isfinite(atol), "atol", f"{atol} out of range", "(0, 1]")
    else:
        _check(isinstance(n_steps, int | np.integer) and 0 < n_steps <= 2**31 - 1, "n_steps",
               f"fixed-step {method} needs a positive integer n_steps, got {n_steps!r}", "1 .. 2^31-1")
    _check(0 < window <= 1, "window", f"{window} out of range", "(0, 1]")
    _check(0 < blowup_bound < math.inf, "blowup_bound", f"{blowup_bound} out of range", "finite, > 0")
    _check(0 < twin_separation < 1e-2, "twin_separation", f"{twin_separation} out of range", "(0, 0.01)")
    _check(save_every >= 0 and n_save >= 0, "save_every", "must be >= 0 (and n_save >= 0)", ">= 0")
    _check(save_every == 0 or n_save > 0, "n_save", "must be > 0 when save_every > 0", ">= 1")
    _check(0 < max_steps <= 2**31 - 1, "max_steps", f"{max_steps} out of range", "1 .. 2^31-1")
    _check(chunk_steps is None or chunk_steps > 0, "chunk_steps", f"{chunk_steps} out of range", ">= 1")
    _check(block >= 16 and block & (block - 1) == 0, "block", f"{block} is not a power of two >= 16", "16, 32, ...")


def _check_t_eval(t_eval, batch: int, t0: float, t1: float) -> np.ndarray:
    te = np.asarray(t_eval, dtype=np.float64)
    _check(te.ndim in (1, 2) and te.shape[-1] >= 1 and (te.ndim == 1 or te.shape[0] == batch), "t_eval",
           f"shape {te.shape} is neither [T] nor [{batch}, T]", "one increasing time list, or one per trajectory")
    _check(bool(np.isfinite(te).all()) and bool((np.diff(te, axis=-1) > 0).all()), "t_eval",
           "must be finite and strictly increasing", "increasing times")
    _check(bool((te >= t0).all() and (te <= t1).all()), "t_eval", "outside t_span", f"[{t0}, {t1}]")
    return te


def _check_section(section: Section, state_names: list[str], t0: float, t1: float) -> tuple[int, float]:
    k = section.state
    if isinstance(k, str):
        _check(k in state_names, "section.state", f"unknown state {k!r}", ", ".join(state_names))
        k = state_names.index(k)
    _check(isinstance(k, int | np.integer) and 0 <= k < len(state_names), "section.state",
           f"index {k} out of range", f"0 .. {len(state_names) - 1} or a state name")
    _check(section.direction in (-1, 0, 1), "section.direction", f"{section.direction!r}", "-1, 0, 1")
    _check(math.isfinite(section.level), "section.level", f"{section.level} is not finite", "finite")
    t_min = t0 if section.t_min is None else float(section.t_min)
    _check(math.isfinite(t_min) and t0 <= t_min < t1, "section.t_min", f"{t_min} outside t_span", f"[{t0}, {t1})")
    _check(0 <= section.max_saved <= 100_000, "section.max_saved", f"{section.max_saved} out of range", "0 .. 100000")
    return int(k), t_min


def prepare(model, params, u0, t_span, *, method: str = "tsit5", dtype: str = "float32", rtol: float = 1e-6,
            atol: float = 1e-8, n_steps: int | None = None, window: float = 0.25, blowup_bound: float = 1e4,
            lyapunov: bool = False, twin_separation: float = 1e-7, save_every: int = 0, n_save: int = 0,
            max_steps: int = 1_000_000, chunk_steps: int | None = None, fold: bool = True,
            features: bool = True, inner: int = 8, device: str = "auto", block: int = 128,
            t_eval=None, section: Section | None = None, checkpoint: Callable[[], None] | None = None):
    """Validate, generate/load the kernel and allocate device state; returns a `run()` closure.

    Split from `solve_ode` so a benchmark can time the integration alone (no host copies).
    t_eval: [T] times shared by all rows or [B, T] per row, stored from the method's interpolant.
    """
    params = np.atleast_2d(np.asarray(params, dtype=np.float64))
    u0 = np.atleast_2d(np.asarray(u0, dtype=np.float64))
    _validate(model, params, u0, t_span, method, dtype, rtol, atol, n_steps, window, blowup_bound,
              twin_separation, save_every, n_save, max_steps, chunk_steps, block)
    t0, t1 = float(t_span[0]), float(t_span[1])
    te = None if t_eval is None else _check_t_eval(t_eval, params.shape[0], t0, t1)
    sec = None if section is None else _check_section(section, list(model.state_names), t0, t1)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    interpret = not device.startswith("cuda")
    _check(not (device.startswith("cuda") and not torch.cuda.is_available()), "device",
           f"{device!r} requested but CUDA is not available", "auto, cpu, cuda[:i]")
    # parameters equal across the batch are folded into the kernel as constants
    same = np.all(params == params[:1], axis=0) if fold else np.zeros(params.shape[1], dtype=bool)
    fixed = {name: float(params[0, j]) for j, name in enumerate(model.param_names) if same[j]}
    system = system_from_model(model, fixed)
    free_cols = [model.param_names.index(p) for p in system.params]
    tab = TABLEAUS[method]
    if not tab.adaptive:
        max_steps = int(n_steps)
    spec = KernelSpec(system, method, dtype, lyapunov=lyapunov, save_every=save_every > 0, features=features,
                      interp=te is not None, section=None if sec is None else (sec[0], int(section.direction)))
    mod = load_kernels(spec, interpret=interpret)

    tdt = torch.float64 if dtype == "float64" else torch.float32
    B, n = u0.shape
    ws = t1 - window * (t1 - t0)
    eps = float(torch.finfo(tdt).eps)
    # the real scalars, by name (kernels/ode/buffers.SCALARS); hmin is relative to the current |t|
    # (a step below a few ulps of t cannot advance it)
    scalars = dict(t0=t0, t1=t1, dt=(t1 - t0) / n_steps if not tab.adaptive else 0.0, rtol=rtol, atol=atol,
                   bound=blowup_bound, ws=ws, d0=twin_separation, hmin=max(1e-12, 10 * eps),
                   teps=4 * eps * max(abs(t1), 1.0), sep_floor=16 * eps, lev=float(section.level) if sec else 0.0,
                   smin=sec[1] if sec else t0)
    scal = torch.tensor([scalars[s.name] for s in SCALARS], dtype=tdt, device=device)

    u = torch.tensor(u0, dtype=tdt, device=device)  # a copy: the kernels write it in place
    on = {name for name, flag in (("adaptive", tab.adaptive), ("lyapunov", lyapunov), ("params", bool(free_cols)),
                                  ("save_every", save_every > 0), ("interp", te is not None),
                                  ("section", sec is not None), ("crossings", bool(sec and section.max_saved)))
          if flag}
    # feature buffers start as their identities; the window includes the start if it covers t0
    given = {"t": torch.full((B,), t0, dtype=tdt, device=device), "u": u,
             "wmin": u.clone() if ws <= t0 else torch.full((B, n), math.inf, dtype=tdt, device=device),
             "wmax": u.clone() if ws <= t0 else torch.full((B, n), -math.inf, dtype=tdt, device=device)}
    if lyapunov:  # tangent: the perturbation itself; twin (Rosenbrock): the perturbed state
        direction = torch.full((n,), 1.0 / math.sqrt(n), dtype=tdt, device=device)
        given["v"] = ((0 if spec.tangent else u) + twin_separation * direction).expand(B, n).contiguous()
    if free_cols:
        given["p"] = torch.as_tensor(params[:, free_cols], dtype=tdt, device=device).contiguous()
    if te is not None:  # outputs are stored time-major, [T, n, B] (lanes write neighbouring addresses)
        given["t_eval"] = torch.as_tensor(te.T, dtype=tdt, device=device).contiguous()
    if sec:  # per row: last crossing time, return-time mean, M2, min, max
        given["ret"] = torch.tensor([math.nan, 0.0, 0.0, math.inf, -math.inf], dtype=tdt, device=device).repeat(B, 1)
    n_t = 0 if te is None else te.shape[-1]
    dims = dict(B=B, n=n, m=len(free_cols), n_save=n_save, T=n_t, K=section.max_saved if sec else 0)
    st = DeviceState(system=system, spec=spec, buffers=allocate(dims, on, given, tdt, device))
    t_si, t_sr = (B, 1) if te is not None and te.ndim == 2 else (1, 0)  # time i of row r at i * t_si + r * t_sr
    # fixed step: one launch (all rows take the same steps); adaptive on a GPU: compact every 256
    chunk = chunk_steps or (max_steps if (interpret or not tab.adaptive) else 256)
    ints = dict(CHUNK=chunk, MAX_STEPS=max_steps, NSTEPS=int(n_steps or 0), SAVE_EVERY=max(save_every, 1),
                N_SAVE=n_save, TSI=t_si, TSR=t_sr, NT=n_t, NCB=dims["K"], NB=B)
    int_args = [ints[k] for k in INTS]
    tl_dt = _tl_dtype(dtype)
    idx = torch.arange(B, dtype=torch.int32, device=device)

    def grid(nw):
        return (triton_cdiv(nw, block),)

    def run(compact: bool = True) -> DeviceState:
        nonlocal idx
        if tab.adaptive:
            mod.init_kernel[grid(B)](idx, B, scal, *st.init_args(), BLOCK=block, DT=tl_dt)
        work = idx
        while work.numel():
            nw = work.numel()
            mod.step_kernel[grid(nw)](work, nw, scal, *st.step_args(), *int_args, BLOCK=block, DT=tl_dt, INNER=inner)
            st.launches += 1
            if checkpoint is not None:
                checkpoint()
            running = (st.status[work] == STATUS_RUNNING) & (st.nacc[work] + st.nrej[work] < max_steps)
            if compact:
                work = work[running]          # the one host sync per chunk
            elif not bool(running.any()):
                break
        return st

    return run


def triton_cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


def _tl_dtype(dtype: str):
    import triton.language as tl

    return tl.float64 if dtype == "float64" else tl.float32


@functools.lru_cache(maxsize=32)
def _numpy_rhs(system: OdeSystem):
    args = ([sp.Symbol(s) for s in system.states], [sp.Symbol(p) for p in system.params])
    return sp.lambdify(args, list(system.equations), modules="numpy")


def to_result(st: DeviceState) -> OdeKernelResult:
    """Copy the device state to numpy and derive the Lyapunov and flow-speed estimates."""

    def np_(x):
        x = x.detach().to("cpu")
        return x.to(torch.float64).numpy() if x.is_floating_point() else x.numpy()

    u, status = np_(st.u), np_(st.status)
    B, n = u.shape
    wmin, wmax, wsum, wlen = np_(st.wmin), np_(st.wmax), np_(st.wsum), np_(st.wlen)
    blow = status >= STATUS_ESCAPED
    none_in_window = ~np.isfinite(wmin).all(1)
    wmin[none_in_window] = u[none_in_window]
    wmax[none_in_window] = u[none_in_window]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(wlen[:, None] > 0, wsum / np.where(wlen > 0, wlen, 1.0)[:, None], u)
    lyap = flow = np.full(B, np.nan)
    if st.spec.lyapunov:
        lsum, ltime, speed0 = np_(st.lsum), np_(st.ltime), np_(st.speed0)
        ok = (ltime > 0) & ~blow
        p = np_(st.p) if st.system.params else np.zeros((B, 0))
        cols = _numpy_rhs(st.system)(list(u.T), list(p.T) if st.system.params else [])
        f_end = np.stack([np.broadcast_to(np.asarray(c, dtype=np.float64), (B,)) for c in cols], axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            lyap = np.where(ok, lsum / np.where(ok, ltime, 1.0), np.nan)
            flow = np.where(ok, np.log(np.maximum(np.linalg.norm(f_end, axis=1), 1e-300)
                                       / np.maximum(speed0, 1e-300)) / np.where(ok, ltime, 1.0), np.nan)
    saves = save_t = None
    if st.spec.save_every:
        saves, save_t = np_(st.saves), np_(st.save_t)
    sec: dict = {}
    if st.spec.section:
        ncross, ret = np_(st.ncross).astype(np.int64), np_(st.ret)
        two = ncross >= 2
        with np.errstate(invalid="ignore", divide="ignore"):
            rt = {"mean": np.where(two, ret[:, 1], np.nan),
                  "std": np.where(two, np.sqrt(np.maximum(ret[:, 2], 0.0) / np.maximum(ncross - 1, 1)), np.nan),
                  "min": np.where(two, ret[:, 3], np.nan), "max": np.where(two, ret[:, 4], np.nan)}
        sec = dict(n_crossings=ncross, return_time=rt,
                   crossings=np.ascontiguousarray(np_(st.cross).transpose(2, 0, 1)) if st.cross.dim() == 3 else None,
                   crossing_t=np.ascontiguousarray(np_(st.cross_t).T) if st.cross_t.dim() == 2 else None)
    return OdeKernelResult(
        t_final=np_(st.t), u_final=u, u_min=wmin, u_max=wmax, u_mean=mean, blowup=blow,
        t_blowup=np.where(blow, np_(st.tblow), np.nan), finished=status != STATUS_RUNNING,
        lyapunov_max=lyap, flow_log_ratio=flow, n_steps=np_(st.nacc).astype(np.int64),
        n_rejected=np_(st.nrej).astype(np.int64), saves=saves, save_t=save_t, launches=st.launches,
        ys=np.ascontiguousarray(np_(st.ys).transpose(2, 0, 1)) if st.spec.interp else None,
        t_eval=np.ascontiguousarray(np_(st.t_eval).T) if st.spec.interp else None, stalled=status == STATUS_STUCK,
        **sec)


def solve_ode(model, params, u0, t_span, *, compact: bool = True, **options) -> OdeKernelResult:
    """Integrate rows (params[i], u0[i]) of `model` over t_span with a generated Triton kernel.

    model: a registered model (actors.sweep.models.CompiledModel or anything with state_names,
    param_names and SymPy `equations`). options: see `prepare` (method rk4|tsit5|dopri5|rosenbrock23,
    dtype, rtol/atol or n_steps, window, blowup_bound, lyapunov, save_every/n_save, chunk_steps,
    device, t_eval, section, checkpoint).
    """
    return to_result(prepare(model, params, u0, t_span, **options)(compact=compact))
