"""Batched adaptive Dormand–Prince 5(4) in torch: one step size per trajectory.

This is the vectorised reference twin of the per-trajectory GPU kernels: every trajectory carries
its own time, step size and error control (scipy's RK45 tableau and controller), so a stiff corner
of a sweep never slows the easy ones down. Trajectories that finish (reached t_end, blew up) are
compacted out of the working set so long tails do not hold the device.

A trajectory blows up when its state escapes past the bound, or stalls: its state cannot be advanced
because the right-hand side there is not finite, or the step size is not finite (NaN: an overflowing
right-hand side at the start) or collapses below a floor. Both stop it at once (`blowup`, with
`stalled` telling which), as the generated kernels (kernels/ode/writer.py) and the scipy reference do.
An optional `checkpoint()` callback runs once per step: the caller's budget (a deadline, a cancelled
request) stops the loop by raising from it; kernels/ stays free of the runtime it belongs to.

Alongside the state it integrates a perturbed twin with the same steps and renormalises it after
every accepted step (Benettin et al. 1980): the sum of log growth factors over the final window,
divided by the window's length, is the finite-time largest Lyapunov exponent.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np
import scipy.integrate
import torch

# Dormand–Prince 5(4) tableau, dense-output polynomial and error weights, taken from scipy so the
# two backends share one source of truth.
_RK = scipy.integrate.RK45
_SAFETY, _MIN_FACTOR, _MAX_FACTOR = 0.9, 0.2, 10.0
_ERR_EXP = -1.0 / (_RK.error_estimator_order + 1)

RhsTorch = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class SolveResult:
    """Per-trajectory outputs (numpy, batch first)."""

    t_final: np.ndarray       # [B] time reached (t_end unless blown up / out of steps)
    u_final: np.ndarray       # [B, n]
    u_min: np.ndarray         # [B, n] over accepted points in the final window
    u_max: np.ndarray         # [B, n]
    u_mean: np.ndarray        # [B, n] time average over the final window (trapezoid)
    blowup: np.ndarray        # [B] bool
    t_blowup: np.ndarray      # [B] nan unless blown up
    finished: np.ndarray      # [B] bool: reached t_end or blew up within max_steps
    lyapunov_max: np.ndarray  # [B] nan when not requested or blown up
    flow_log_ratio: np.ndarray  # [B] log(|F(u_end)| / |F(u_window_start)|) / window: the part of
    #                             lambda_max due to the phase speed along the flow (O(1/T) on a cycle)
    n_steps: np.ndarray       # [B] accepted steps
    n_rejected: np.ndarray    # [B]
    ys: np.ndarray | None     # [B, len(t_eval), n] when t_eval was given
    stalled: np.ndarray | None = None  # [B] bool: a blow-up because the state could not be advanced (a
    #                                   non-finite right-hand side or step size, or a step below the floor),
    #                                   not by escaping past the bound; None where a backend does not say


def _initial_step(rhs, u, p, f0, t0, t1, rtol, atol):
    """Hairer–Wanner starting step, per trajectory (as scipy's select_initial_step)."""
    scale = atol + u.abs() * rtol
    d0 = torch.sqrt(((u / scale) ** 2).mean(1))
    d1 = torch.sqrt(((f0 / scale) ** 2).mean(1))
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1)
    h0 = torch.minimum(h0, t1 - t0)
    f1 = rhs(u + h0[:, None] * f0, p)
    d2 = torch.sqrt((((f1 - f0) / scale) ** 2).mean(1)) / h0
    big = torch.maximum(d1, d2)
    h1 = torch.where(big <= 1e-15, torch.maximum(torch.full_like(h0, 1e-6), h0 * 1e-3),
                     (0.01 / big.clamp_min(1e-300)) ** (1.0 / (_RK.error_estimator_order + 1)))
    return torch.minimum(torch.minimum(100 * h0, h1), t1 - t0)


_A = [[float(a) for a in row] for row in _RK.A]
_BW = [float(b) for b in _RK.B]
_EW = [float(e) for e in _RK.E]


def _lincomb(coeffs, terms):
    """sum(c * t) over nonzero coefficients, with Python-float coefficients (fusable when compiled)."""
    out = None
    for c, term in zip(coeffs, terms):
        if c != 0.0:
            out = c * term if out is None else out + c * term
    return out


def _attempt(rhs, x, fx, hx, px):
    """One Dormand–Prince trial step for every row: new state, its rhs, error estimate, stages."""
    K = [fx]
    for s in range(1, _RK.n_stages):
        K.append(rhs(x + hx[:, None] * _lincomb(_A[s][:s], K), px))
    x_new = x + hx[:, None] * _lincomb(_BW, K)
    f_new = rhs(x_new, px)
    K.append(f_new)
    err = hx[:, None] * _lincomb(_EW, K)
    return x_new, f_new, err, torch.stack(K)


def _bound_crossing(Q, u_old, t_old, h, bound, rows, iterations: int = 40):
    """Time at which max|u| first reaches `bound` within the step, by bisection on the interpolant."""
    lo = torch.zeros_like(h)
    hi = torch.ones_like(h)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        th = mid[:, None]
        y = u_old + h[:, None] * (Q @ torch.cat([th, th**2, th**3, th**4], dim=1)[:, :, None])[..., 0]
        over = ~(y.abs().amax(1) < bound)
        hi = torch.where(over, mid, hi)
        lo = torch.where(over, lo, mid)
    return t_old + hi * h


@dataclass
class _Lanes:
    """Per-trajectory state of the working set, row r of every field one trajectory (compacted together)."""

    idx: torch.Tensor        # [W] the trajectory's row in the batch
    t: torch.Tensor          # [W]
    u: torch.Tensor          # [W, n]
    f: torch.Tensor          # [W, n] rhs(u): the FSAL stage
    h: torch.Tensor          # [W] next trial step
    p: torch.Tensor          # [W, m]
    v: torch.Tensor | None   # [W, n] the perturbed twin and its rhs (lyapunov only)
    fv: torch.Tensor | None
    wmin: torch.Tensor       # [W, n] final-window running min / max / trapezoid integral, and its length
    wmax: torch.Tensor
    wsum: torch.Tensor
    wlen: torch.Tensor
    lsum: torch.Tensor       # Lyapunov: sum of log growth factors, the time they cover, |F| at the first
    ltime: torch.Tensor
    speed0: torch.Tensor
    nacc: torch.Tensor       # accepted / rejected steps
    nrej: torch.Tensor
    next_save: torch.Tensor  # index of the next t_eval time
    done: torch.Tensor       # reached t1 or blew up
    blow: torch.Tensor
    stall: torch.Tensor      # blew up by stalling (non-finite rhs or step size, step below the floor)
    tblow: torch.Tensor
    escaped: torch.Tensor    # escaped past the bound: the crossing is located from the step kept below
    cross_Q: torch.Tensor    # [W, n, 4] the escaping step's interpolant, its start state, time and size
    cross_u: torch.Tensor
    cross_t: torch.Tensor
    cross_h: torch.Tensor

    def take(self, rows: torch.Tensor) -> _Lanes:
        """The lanes `rows`, copied."""
        picked = {}
        for f in fields(self):
            x = getattr(self, f.name)
            picked[f.name] = None if x is None else x[rows]
        return _Lanes(**picked)

    def put(self, rows: torch.Tensor, src: _Lanes, src_rows: torch.Tensor) -> None:
        """Copy the result fields of src's lanes `src_rows` into lanes `rows` (by batch row)."""
        for name in _RESULT_FIELDS:
            getattr(self, name)[rows] = getattr(src, name)[src_rows]


_RESULT_FIELDS = ("t", "u", "wmin", "wmax", "wsum", "wlen", "blow", "stall", "tblow", "done", "lsum", "ltime", "f",
                  "speed0", "nacc", "nrej")


def _start(rhs, u0, p, t0, t1, rtol, atol, window_start, lyapunov, d0) -> _Lanes:
    """Every trajectory's lane at t0: F(u0), the starting step, features at their identities."""
    dev, dt = u0.device, u0.dtype
    B, n = u0.shape
    u = u0.clone()
    t = torch.full((B,), t0, dtype=dt, device=dev)
    direction = torch.full((n,), 1.0 / np.sqrt(n), dtype=dt, device=dev)
    v = u + d0 * direction if lyapunov else None
    f = rhs(u, p)
    fv = rhs(v, p) if lyapunov else None
    h = _initial_step(rhs, u, p, f, torch.full_like(t, t0), torch.full_like(t, t1), rtol, atol)
    wmin = torch.full((B, n), float("inf"), dtype=dt, device=dev)
    wmax = torch.full((B, n), float("-inf"), dtype=dt, device=dev)
    if window_start <= t0:  # window covers the start: count the initial point
        wmin, wmax = torch.minimum(wmin, u), torch.maximum(wmax, u)

    def zeros(*shape, dtype=dt):
        return torch.zeros(shape, dtype=dtype, device=dev)

    return _Lanes(idx=torch.arange(B, device=dev), t=t, u=u, f=f, h=h, p=p, v=v, fv=fv, wmin=wmin, wmax=wmax,
                  wsum=zeros(B, n), wlen=zeros(B), lsum=zeros(B), ltime=zeros(B),
                  speed0=torch.ones(B, dtype=dt, device=dev), nacc=zeros(B, dtype=torch.long),
                  nrej=zeros(B, dtype=torch.long), next_save=zeros(B, dtype=torch.long),
                  done=zeros(B, dtype=torch.bool), blow=zeros(B, dtype=torch.bool), stall=zeros(B, dtype=torch.bool),
                  tblow=torch.full((B,), float("nan"), dtype=dt, device=dev), escaped=zeros(B, dtype=torch.bool),
                  cross_Q=zeros(B, n, 4), cross_u=zeros(B, n), cross_t=zeros(B), cross_h=zeros(B))


def solve_dopri5(rhs: RhsTorch, u0: torch.Tensor, p: torch.Tensor, t0: float, t1: float, *,
                 rtol: float, atol: float, window_start: float, blowup_bound: float,
                 lyapunov: bool, twin_separation: float, t_eval: np.ndarray | None = None,
                 max_steps: int = 2_000_000, compact_fraction: float = 0.1, check_every: int = 16,
                 compile: bool = False,
                 progress: Callable[[int, int], None] | None = None,
                 checkpoint: Callable[[], None] | None = None) -> SolveResult:
    """Integrate u' = rhs(u, p) for a batch u0 [B, n], p [B, m] from t0 to t1 (per-row steps).

    window_start: accepted points with t >= window_start feed min/max/mean and the Lyapunov sum.
    t_eval: optional common save times in [t0, t1], filled by the method's 4th-order interpolant.
    compile: fuse the trial step (all stages and rhs calls) with torch.compile. On a GPU the eager
        step is launch-bound (hundreds of tiny kernels per step); fused, it is a handful.
    checkpoint: called once per step (no device sync); raising from it stops the integration.
    """
    attempt = functools.partial(_attempt, rhs)
    if compile:
        attempt = torch.compile(attempt, dynamic=True)
    dev, dt = u0.device, u0.dtype
    B, n = u0.shape
    P = torch.tensor(_RK.P, dtype=dt, device=dev)
    te = None if t_eval is None else torch.as_tensor(np.asarray(t_eval, dtype=np.float64), dtype=dt, device=dev)
    d0 = twin_separation
    s = _start(rhs, u0, p, t0, t1, rtol, atol, window_start, lyapunov, d0)  # the working set
    out = s.take(torch.arange(B, device=dev))  # results, by batch row (every row is written once, when it leaves)
    out_ys = None
    if te is not None:
        out_ys = torch.full((B, te.numel(), n), float("nan"), dtype=dt, device=dev)
        at_start = te <= t0
        out_ys[:, at_start, :] = u0[:, None, :]
        s.next_save += int(at_start.sum())
    h_min = 1e-12 * max(abs(t0), abs(t1), 1.0)

    def leave(rows: torch.Tensor) -> None:
        """Locate pending blow-up crossings, then write lanes `rows` to the results."""
        s.tblow = torch.where(s.escaped, _bound_crossing(s.cross_Q, s.cross_u, s.cross_t, s.cross_h, blowup_bound,
                                                         s.escaped), s.tblow)
        out.put(s.idx[rows], s, rows)

    iteration = 0
    finished_total = 0
    while s.idx.numel() > 0 and iteration < max_steps:
        iteration += 1
        if checkpoint is not None:
            checkpoint()
        active = ~s.done
        s.h = torch.where(active, torch.minimum(s.h, t1 - s.t), torch.zeros_like(s.h))
        # stages for the state and (stacked) the twin: one rhs call per stage for both
        x = torch.cat([s.u, s.v]) if lyapunov else s.u
        fx = torch.cat([s.f, s.fv]) if lyapunov else s.f
        px = torch.cat([s.p, s.p]) if lyapunov else s.p
        hx = torch.cat([s.h, s.h]) if lyapunov else s.h
        x_new, f_new, err_all, K = attempt(x, fx, hx, px)
        W = s.u.shape[0]
        un = x_new[:W]
        err = err_all[:W]
        scale = atol + torch.maximum(s.u.abs(), un.abs()) * rtol
        err_norm = torch.sqrt(((err / scale) ** 2).mean(1))
        if lyapunov:  # the twin's separation (size d0, below atol) must be resolved to rtol too
            sep_err = (err_all[W:] - err) / (rtol * d0)
            err_norm = torch.maximum(err_norm, torch.sqrt((sep_err**2).mean(1)))
        finite = torch.isfinite(err_norm) & torch.isfinite(un).all(1)
        accept = active & finite & (err_norm <= 1.0)
        reject = active & ~accept
        # step-size control (scipy RK45 rule), per trajectory
        safe_err = torch.where(finite, err_norm, torch.full_like(err_norm, 1e10))
        fac = torch.where(safe_err == 0, torch.full_like(safe_err, _MAX_FACTOR),
                          (_SAFETY * safe_err.clamp_min(1e-300) ** _ERR_EXP).clamp(_MIN_FACTOR, _MAX_FACTOR))
        fac = torch.where(reject, fac.clamp(max=1.0), fac)
        t_old, u_old, f_old = s.t, s.u, s.f
        s.t = torch.where(accept, s.t + s.h, s.t)
        s.u = torch.where(accept[:, None], un, s.u)
        s.f = torch.where(accept[:, None], f_new[:W], s.f)
        s.nacc += accept.long()
        s.nrej += reject.long()
        if te is not None and bool(accept.any()):
            _save_dense(s, out_ys, te, accept, t_old, u_old, torch.einsum("kwn,kj->wnj", K[:, :W], P))
        # final-window features at accepted points
        # (no host syncs in the step loop: the device runs ahead of Python)
        in_win = accept & (s.t >= window_start)
        iw = in_win[:, None]
        s.wmin = torch.where(iw, torch.minimum(s.wmin, s.u), s.wmin)
        s.wmax = torch.where(iw, torch.maximum(s.wmax, s.u), s.wmax)
        seg = torch.where(in_win, s.t - torch.clamp(t_old, min=window_start), torch.zeros_like(s.t))
        s.wsum = s.wsum + seg[:, None] * 0.5 * (s.u + u_old)
        s.wlen = s.wlen + seg
        if lyapunov:
            _renormalise(s, accept, x_new[W:], f_new[W:], t_old, f_old, window_start, d0)
        # blow-up: escape past the bound, or a stall: the step size collapsed below the floor or is not
        # finite (written so that NaN counts: NaN < h_min is false), or the rhs at the state is not finite
        # (every trial step from it is NaN: no smaller step can help)
        escaped = accept & (s.u.abs().amax(1) > blowup_bound)
        stuck = reject & (~(s.h * fac >= h_min) | ~torch.isfinite(f_old).all(1))
        newly_blown = (escaped | stuck) & ~s.done
        s.blow = s.blow | newly_blown
        s.stall = s.stall | (stuck & ~escaped & ~s.done)
        # keep the escaping step's interpolant; the crossing time is located when the row leaves
        esc = escaped & ~s.done
        s.cross_Q = torch.where(esc[:, None, None], torch.einsum("kwn,kj->wnj", K[:, :W], P), s.cross_Q)
        s.cross_u = torch.where(esc[:, None], u_old, s.cross_u)
        s.cross_t = torch.where(esc, t_old, s.cross_t)
        s.cross_h = torch.where(esc, s.h, s.cross_h)
        s.escaped = s.escaped | esc
        s.tblow = torch.where(newly_blown, torch.where(escaped, s.t, t_old), s.tblow)
        s.h = torch.where(active, s.h * fac, s.h)
        s.done = s.done | newly_blown | (accept & (s.t >= t1 - 1e-12 * max(abs(t1), 1.0)))
        if iteration % check_every:
            continue
        n_done = int(s.done.sum())  # the one host sync, every `check_every` steps
        if n_done and (n_done == s.idx.numel() or n_done >= compact_fraction * s.idx.numel()):
            rows = s.done.nonzero().flatten()
            leave(rows)
            finished_total += rows.numel()
            if progress is not None:
                progress(finished_total, B)
            s = s.take((~s.done).nonzero().flatten())
    if s.idx.numel() > 0:  # out of steps: record where they got to, marked unfinished
        leave(torch.arange(s.idx.numel(), device=dev))
    return _result(out, out_ys, lyapunov)


def _save_dense(s: _Lanes, out_ys: torch.Tensor, te: torch.Tensor, accept: torch.Tensor, t_old: torch.Tensor,
                u_old: torch.Tensor, Q: torch.Tensor) -> None:
    """Every t_eval time the accepted step covered, from its interpolant Q [W, n, 4]."""
    for _ in range(te.numel()):
        has = accept & (s.next_save < te.numel())
        ts = te[s.next_save.clamp(max=te.numel() - 1)]
        has = has & (ts <= s.t)
        if not bool(has.any()):
            break
        theta = ((ts - t_old) / torch.where(s.h > 0, s.h, torch.ones_like(s.h)))[:, None]
        powers = torch.cat([theta, theta**2, theta**3, theta**4], dim=1)  # [W, 4]
        y_interp = u_old + s.h[:, None] * (Q @ powers[:, :, None])[..., 0]
        rows = has.nonzero().flatten()
        out_ys[s.idx[rows], s.next_save[rows]] = y_interp[rows]
        s.next_save = s.next_save + has.long()


def _renormalise(s: _Lanes, accept: torch.Tensor, vn: torch.Tensor, fvn: torch.Tensor, t_old: torch.Tensor,
                 f_old: torch.Tensor, window_start: float, d0: float) -> None:
    """Benettin: the twin's log growth over the step (counted in the window), then its separation back to d0."""
    s.v = torch.where(accept[:, None], vn, s.v)
    s.fv = torch.where(accept[:, None], fvn, s.fv)
    sep = s.v - s.u
    dist = torch.linalg.vector_norm(sep, dim=1)
    good = accept & torch.isfinite(dist) & (dist > 0)
    growth = torch.log(torch.where(good, dist / d0, torch.ones_like(dist)))
    count = good & (t_old >= window_start)
    first = count & (s.ltime == 0)
    s.speed0 = torch.where(first, torch.linalg.vector_norm(f_old, dim=1), s.speed0)
    s.lsum = s.lsum + torch.where(count, growth, torch.zeros_like(growth))
    s.ltime = s.ltime + torch.where(count, s.h, torch.zeros_like(s.h))
    renorm = torch.where(good, d0 / dist.clamp_min(1e-300), torch.ones_like(dist))
    s.v = torch.where(good[:, None], s.u + sep * renorm[:, None], s.v)
    # f is linear in the tiny separation: f(u + c*sep) = f(u) + c*(f(u + sep) - f(u)) + O(d0^2)
    s.fv = torch.where(good[:, None], s.f + (s.fv - s.f) * renorm[:, None], s.fv)


def _result(out: _Lanes, out_ys: torch.Tensor | None, lyapunov: bool) -> SolveResult:
    """Numpy outputs with the window mean, the Lyapunov exponent and the flow-speed ratio derived."""
    B = out.t.shape[0]
    lyap = torch.where((out.ltime > 0) & ~out.blow, out.lsum / out.ltime.clamp_min(1e-300),
                       torch.full_like(out.lsum, float("nan")))
    speed_end = torch.linalg.vector_norm(out.f, dim=1)
    flow = torch.where((out.ltime > 0) & ~out.blow,
                       torch.log(speed_end.clamp_min(1e-300) / out.speed0.clamp_min(1e-300)) / out.ltime.clamp_min(1e-300),
                       torch.full_like(out.lsum, float("nan")))
    mean = torch.where(out.wlen[:, None] > 0, out.wsum / out.wlen.clamp_min(1e-300)[:, None], out.u)
    none_in_window = ~torch.isfinite(out.wmin).all(1)
    u_min = torch.where(none_in_window[:, None], out.u, out.wmin)
    u_max = torch.where(none_in_window[:, None], out.u, out.wmax)

    def np_(x):
        return x.detach().to("cpu", torch.float64 if x.is_floating_point() else x.dtype).numpy()

    return SolveResult(
        t_final=np_(out.t), u_final=np_(out.u), u_min=np_(u_min), u_max=np_(u_max), u_mean=np_(mean),
        blowup=np_(out.blow), t_blowup=np_(out.tblow), finished=np_(out.done),
        lyapunov_max=np_(lyap) if lyapunov else np.full(B, np.nan),
        flow_log_ratio=np_(flow) if lyapunov else np.full(B, np.nan),
        n_steps=np_(out.nacc), n_rejected=np_(out.nrej), ys=None if out_ys is None else np_(out_ys),
        stalled=np_(out.stall))
