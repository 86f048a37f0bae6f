"""Batched adaptive Dormand–Prince 5(4) in torch: one step size per trajectory.

This is the vectorised reference twin of the per-trajectory GPU kernels: every trajectory carries
its own time, step size and error control (scipy's RK45 tableau and controller), so a stiff corner
of a sweep never slows the easy ones down. Trajectories that finish (reached t_end, blew up) are
compacted out of the working set so long tails do not hold the device.

Alongside the state it integrates a perturbed twin with the same steps and renormalises it after
every accepted step (Benettin et al. 1980): the sum of log growth factors over the final window,
divided by the window's length, is the finite-time largest Lyapunov exponent.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

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


def solve_dopri5(rhs: RhsTorch, u0: torch.Tensor, p: torch.Tensor, t0: float, t1: float, *,
                 rtol: float, atol: float, window_start: float, blowup_bound: float,
                 lyapunov: bool, twin_separation: float, t_eval: np.ndarray | None = None,
                 max_steps: int = 2_000_000, compact_fraction: float = 0.1, check_every: int = 16,
                 compile: bool = False,
                 progress: Callable[[int, int], None] | None = None) -> SolveResult:
    """Integrate u' = rhs(u, p) for a batch u0 [B, n], p [B, m] from t0 to t1 (per-row steps).

    window_start: accepted points with t >= window_start feed min/max/mean and the Lyapunov sum.
    t_eval: optional common save times in [t0, t1], filled by the method's 4th-order interpolant.
    compile: fuse the trial step (all stages and rhs calls) with torch.compile. On a GPU the eager
        step is launch-bound (hundreds of tiny kernels per step); fused, it is a handful.
    """
    attempt = functools.partial(_attempt, rhs)
    if compile:
        attempt = torch.compile(attempt, dynamic=True)
    dev, dt = u0.device, u0.dtype
    B, n = u0.shape
    P = torch.tensor(_RK.P, dtype=dt, device=dev)
    te = None if t_eval is None else torch.as_tensor(np.asarray(t_eval, dtype=np.float64), dtype=dt, device=dev)

    # outputs, indexed by the original row
    out_t = torch.full((B,), t0, dtype=dt, device=dev)
    out_u = u0.clone()
    out_min = torch.full((B, n), float("inf"), dtype=dt, device=dev)
    out_max = torch.full((B, n), float("-inf"), dtype=dt, device=dev)
    out_sum = torch.zeros((B, n), dtype=dt, device=dev)
    out_wlen = torch.zeros(B, dtype=dt, device=dev)
    out_blow = torch.zeros(B, dtype=torch.bool, device=dev)
    out_tblow = torch.full((B,), float("nan"), dtype=dt, device=dev)
    out_done = torch.zeros(B, dtype=torch.bool, device=dev)
    out_lsum = torch.zeros(B, dtype=dt, device=dev)
    out_ltime = torch.zeros(B, dtype=dt, device=dev)
    out_speed0 = torch.ones(B, dtype=dt, device=dev)
    out_nacc = torch.zeros(B, dtype=torch.long, device=dev)
    out_f = torch.zeros((B, n), dtype=dt, device=dev)
    out_nrej = torch.zeros(B, dtype=torch.long, device=dev)
    out_ys = None
    if te is not None:
        out_ys = torch.full((B, te.numel(), n), float("nan"), dtype=dt, device=dev)
        at_start = te <= t0
        out_ys[:, at_start, :] = u0[:, None, :]

    # working set (compacted as rows finish)
    idx = torch.arange(B, device=dev)
    t = torch.full((B,), t0, dtype=dt, device=dev)
    u = u0.clone()
    pw = p
    d0 = twin_separation
    direction = torch.full((n,), 1.0 / np.sqrt(n), dtype=dt, device=dev)
    v = u + d0 * direction if lyapunov else None
    f = rhs(u, pw)
    fv = rhs(v, pw) if lyapunov else None
    h = _initial_step(rhs, u, pw, f, torch.full_like(t, t0), torch.full_like(t, t1), rtol, atol)
    wmin = torch.full((B, n), float("inf"), dtype=dt, device=dev)
    wmax = torch.full((B, n), float("-inf"), dtype=dt, device=dev)
    wsum = torch.zeros((B, n), dtype=dt, device=dev)
    wlen = torch.zeros(B, dtype=dt, device=dev)
    lsum = torch.zeros(B, dtype=dt, device=dev)
    ltime = torch.zeros(B, dtype=dt, device=dev)
    speed0 = torch.ones(B, dtype=dt, device=dev)
    nacc = torch.zeros(B, dtype=torch.long, device=dev)
    nrej = torch.zeros(B, dtype=torch.long, device=dev)
    next_save = torch.zeros(B, dtype=torch.long, device=dev)
    if te is not None:
        next_save += int(at_start.sum())
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    escaped_any = torch.zeros(B, dtype=torch.bool, device=dev)
    cross_Q = torch.zeros((B, n, 4), dtype=dt, device=dev)
    cross_u = torch.zeros((B, n), dtype=dt, device=dev)
    cross_t = torch.zeros(B, dtype=dt, device=dev)
    cross_h = torch.zeros(B, dtype=dt, device=dev)
    blow = torch.zeros(B, dtype=torch.bool, device=dev)
    tblow = torch.full((B,), float("nan"), dtype=dt, device=dev)
    h_min = 1e-12 * max(abs(t0), abs(t1), 1.0)
    if window_start <= t0:  # window covers the start: count the initial point
        wmin, wmax = torch.minimum(wmin, u), torch.maximum(wmax, u)

    def flush(rows: torch.Tensor) -> None:
        g = idx[rows]
        out_t[g], out_u[g], out_min[g], out_max[g] = t[rows], u[rows], wmin[rows], wmax[rows]
        out_sum[g], out_wlen[g], out_blow[g], out_tblow[g] = wsum[rows], wlen[rows], blow[rows], tblow[rows]
        out_done[g], out_lsum[g], out_ltime[g] = done[rows], lsum[rows], ltime[rows]
        out_f[g], out_speed0[g] = f[rows], speed0[rows]
        out_nacc[g], out_nrej[g] = nacc[rows], nrej[rows]

    iteration = 0
    finished_total = 0
    while idx.numel() > 0 and iteration < max_steps:
        iteration += 1
        active = ~done
        h = torch.where(active, torch.minimum(h, t1 - t), torch.zeros_like(h))
        # stages for the state and (stacked) the twin: one rhs call per stage for both
        x = torch.cat([u, v]) if lyapunov else u
        fx = torch.cat([f, fv]) if lyapunov else f
        px = torch.cat([pw, pw]) if lyapunov else pw
        hx = torch.cat([h, h]) if lyapunov else h
        x_new, f_new, err_all, K = attempt(x, fx, hx, px)
        W = u.shape[0]
        un = x_new[:W]
        err = err_all[:W]
        scale = atol + torch.maximum(u.abs(), un.abs()) * rtol
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
        t_old, u_old, f_old = t, u, f
        t = torch.where(accept, t + h, t)
        u = torch.where(accept[:, None], un, u)
        f = torch.where(accept[:, None], f_new[:W], f)
        nacc += accept.long()
        nrej += reject.long()
        if te is not None and bool(accept.any()):
            Q = torch.einsum("kwn,kj->wnj", K[:, :W], P)  # [W, n, 4]
            for _ in range(te.numel()):
                has = accept & (next_save < te.numel())
                ts = te[next_save.clamp(max=te.numel() - 1)]
                has = has & (ts <= t)
                if not bool(has.any()):
                    break
                theta = ((ts - t_old) / torch.where(h > 0, h, torch.ones_like(h)))[:, None]
                powers = torch.cat([theta, theta**2, theta**3, theta**4], dim=1)  # [W, 4]
                y_interp = u_old + h[:, None] * (Q @ powers[:, :, None])[..., 0]
                rows = has.nonzero().flatten()
                out_ys[idx[rows], next_save[rows]] = y_interp[rows]
                next_save = next_save + has.long()
        # final-window features at accepted points
        # (no host syncs in the step loop: the device runs ahead of Python)
        in_win = accept & (t >= window_start)
        iw = in_win[:, None]
        wmin = torch.where(iw, torch.minimum(wmin, u), wmin)
        wmax = torch.where(iw, torch.maximum(wmax, u), wmax)
        seg = torch.where(in_win, t - torch.clamp(t_old, min=window_start), torch.zeros_like(t))
        wsum = wsum + seg[:, None] * 0.5 * (u + u_old)
        wlen = wlen + seg
        if lyapunov:
            vn = x_new[W:]
            v = torch.where(accept[:, None], vn, v)
            fv = torch.where(accept[:, None], f_new[W:], fv)
            sep = v - u
            dist = torch.linalg.vector_norm(sep, dim=1)
            good = accept & torch.isfinite(dist) & (dist > 0)
            growth = torch.log(torch.where(good, dist / d0, torch.ones_like(dist)))
            count = good & (t_old >= window_start)
            first = count & (ltime == 0)
            speed0 = torch.where(first, torch.linalg.vector_norm(f_old, dim=1), speed0)
            lsum = lsum + torch.where(count, growth, torch.zeros_like(growth))
            ltime = ltime + torch.where(count, h, torch.zeros_like(h))
            renorm = torch.where(good, d0 / dist.clamp_min(1e-300), torch.ones_like(dist))
            v = torch.where(good[:, None], u + sep * renorm[:, None], v)
            # f is linear in the tiny separation: f(u + c*sep) = f(u) + c*(f(u + sep) - f(u)) + O(d0^2)
            fv = torch.where(good[:, None], f + (fv - f) * renorm[:, None], fv)
        # blow-up: escape past the bound, non-finite state, or a step size collapsed to nothing
        escaped = accept & (u.abs().amax(1) > blowup_bound)
        stuck = reject & (h * fac < h_min)
        newly_blown = (escaped | stuck) & ~done
        blow = blow | newly_blown
        # keep the escaping step's interpolant; the crossing time is located when the row is flushed
        esc = escaped & ~done
        cross_Q = torch.where(esc[:, None, None], torch.einsum("kwn,kj->wnj", K[:, :W], P), cross_Q)
        cross_u = torch.where(esc[:, None], u_old, cross_u)
        cross_t = torch.where(esc, t_old, cross_t)
        cross_h = torch.where(esc, h, cross_h)
        escaped_any = escaped_any | esc
        tblow = torch.where(newly_blown, torch.where(escaped, t, t_old), tblow)
        h = torch.where(active, h * fac, h)
        done = done | newly_blown | (accept & (t >= t1 - 1e-12 * max(abs(t1), 1.0)))
        if iteration % check_every:
            continue
        n_done = int(done.sum())  # the one host sync, every `check_every` steps
        if n_done and (n_done == idx.numel() or n_done >= compact_fraction * idx.numel()):
            tblow = torch.where(escaped_any, _bound_crossing(cross_Q, cross_u, cross_t, cross_h, blowup_bound,
                                                             escaped_any), tblow)
            rows = done.nonzero().flatten()
            flush(rows)
            finished_total += rows.numel()
            if progress is not None:
                progress(finished_total, B)
            keep = (~done).nonzero().flatten()
            idx, t, u, f, h, pw = idx[keep], t[keep], u[keep], f[keep], h[keep], pw[keep]
            wmin, wmax, wsum, wlen = wmin[keep], wmax[keep], wsum[keep], wlen[keep]
            lsum, ltime, nacc, nrej, next_save = lsum[keep], ltime[keep], nacc[keep], nrej[keep], next_save[keep]
            speed0 = speed0[keep]
            done, blow, tblow = done[keep], blow[keep], tblow[keep]
            cross_Q, cross_u, cross_t, cross_h = cross_Q[keep], cross_u[keep], cross_t[keep], cross_h[keep]
            escaped_any = escaped_any[keep]
            if lyapunov:
                v, fv = v[keep], fv[keep]
    if idx.numel() > 0:  # out of steps: record where they got to, marked unfinished
        tblow = torch.where(escaped_any, _bound_crossing(cross_Q, cross_u, cross_t, cross_h, blowup_bound,
                                                         escaped_any), tblow)
        flush(torch.arange(idx.numel(), device=dev))

    lyap = torch.where((out_ltime > 0) & ~out_blow, out_lsum / out_ltime.clamp_min(1e-300),
                       torch.full_like(out_lsum, float("nan")))
    speed_end = torch.linalg.vector_norm(out_f, dim=1)
    flow = torch.where((out_ltime > 0) & ~out_blow,
                       torch.log(speed_end.clamp_min(1e-300) / out_speed0.clamp_min(1e-300)) / out_ltime.clamp_min(1e-300),
                       torch.full_like(out_lsum, float("nan")))
    mean = torch.where(out_wlen[:, None] > 0, out_sum / out_wlen.clamp_min(1e-300)[:, None], out_u)
    none_in_window = ~torch.isfinite(out_min).all(1)
    out_min = torch.where(none_in_window[:, None], out_u, out_min)
    out_max = torch.where(none_in_window[:, None], out_u, out_max)

    def np_(x):
        return x.detach().to("cpu", torch.float64 if x.is_floating_point() else x.dtype).numpy()

    return SolveResult(
        t_final=np_(out_t), u_final=np_(out_u), u_min=np_(out_min), u_max=np_(out_max), u_mean=np_(mean),
        blowup=np_(out_blow), t_blowup=np_(out_tblow), finished=np_(out_done),
        lyapunov_max=np_(lyap) if lyapunov else np.full(B, np.nan),
        flow_log_ratio=np_(flow) if lyapunov else np.full(B, np.nan),
        n_steps=np_(out_nacc), n_rejected=np_(out_nrej), ys=None if out_ys is None else np_(out_ys))
