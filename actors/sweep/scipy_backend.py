"""The reference backend: one scipy `solve_ivp` per trajectory (DOP853 / LSODA / ...).

Slow and serial by design; it is the oracle the torch backend and later GPU kernels are checked
against. The perturbed twin is integrated alongside the state and renormalised every
`renorm_interval` time units (Benettin), so its Lyapunov estimate is independent of the torch
backend's per-step renormalisation.

Bounded work: `checkpoint()` (actors.common.budget, passed in by the engine) runs at every
right-hand-side evaluation and between trajectories, so a caller's budget stops even one long
solve_ivp. A solve that fails (a step size below scipy's floor, a non-finite state or right-hand
side) is a blow-up with `stalled` set; escaping past the bound (the terminal event) is not stalled.
A non-finite right-hand side at a segment's start makes solve_ivp's first step NaN, which its step
loop would retry forever (NaN < min_step is false): the first evaluation at a NaN time stops it.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.integrate import solve_ivp

from kernels.ode.dopri5 import SolveResult


class _Stalled(Exception):
    """solve_ivp asked for the right-hand side at a non-finite time: its step size is NaN."""


def _one(rhs, u0, p, t0, t1, *, method, rtol, atol, window_start, bound, lyapunov, d0, renorm, t_eval, checkpoint):
    n = u0.size
    direction = np.full(n, 1.0 / np.sqrt(n))
    wmin, wmax = np.full(n, np.inf), np.full(n, -np.inf)
    wsum, wlen = np.zeros(n), 0.0
    lsum, ltime, n_steps = 0.0, 0.0, 0
    speed0 = None
    ys = None if t_eval is None else np.full((len(t_eval), n), np.nan)

    def fun(t, w):
        checkpoint()
        if not np.isfinite(t):   # a NaN step size (solve_ivp would retry it forever): stalled here
            raise _Stalled
        return rhs(w.reshape(-1, n), p).reshape(-1)

    def escape(t, w):
        u = w[:n]
        return bound - np.max(np.abs(u)) if np.all(np.isfinite(u)) else -1.0

    escape.terminal = True
    w = np.concatenate([u0, u0 + d0 * direction]) if lyapunov else u0.copy()
    t = t0
    edges = np.arange(t0, t1, renorm) if lyapunov else np.array([t0])
    edges = np.append(edges[edges < t1], t1)
    if ys is not None:
        ys[t_eval <= t0] = u0
    for a, b in zip(edges[:-1], edges[1:]):
        try:
            sol = solve_ivp(fun, (a, b), w, method=method, rtol=rtol, atol=atol, events=escape,
                            dense_output=t_eval is not None)
        except _Stalled:   # the step size from this segment's start is not finite: stalled at a
            return dict(t_final=a, u_final=w[:n].copy(), blowup=True, t_blowup=a, wmin=wmin, wmax=wmax,
                        wsum=wsum, wlen=wlen, lyap=np.nan, n_steps=n_steps, ys=ys, flow=np.nan, stalled=True)
        n_steps += sol.t.size - 1
        if t_eval is not None:
            sel = (t_eval > a) & (t_eval <= sol.t[-1])
            if sel.any():
                ys[sel] = sol.sol(t_eval[sel])[:n].T
        if not sol.success or sol.status == 1 or not np.all(np.isfinite(sol.y[:, -1])):
            escaped = sol.status == 1 and len(sol.t_events[0]) > 0
            t_blow = sol.t_events[0][0] if escaped else sol.t[-1]
            return dict(t_final=t_blow, u_final=sol.y[:n, -1], blowup=True, t_blowup=t_blow,
                        wmin=wmin, wmax=wmax, wsum=wsum, wlen=wlen, lyap=np.nan, n_steps=n_steps, ys=ys,
                        flow=np.nan, stalled=not escaped)
        mask = sol.t >= window_start
        if mask.any():
            seg_u = sol.y[:n, mask]
            wmin, wmax = np.minimum(wmin, seg_u.min(1)), np.maximum(wmax, seg_u.max(1))
        if b > window_start:  # trapezoid mean over the part of the segment inside the window
            tt = sol.t[sol.t >= window_start]
            uu = sol.y[:n, sol.t >= window_start]
            if tt.size >= 2:
                wsum += np.trapezoid(uu, tt, axis=1)
                wlen += tt[-1] - tt[0]
        w_start = w
        w = sol.y[:, -1].copy()
        if lyapunov:
            sep = w[n:] - w[:n]
            dist = np.linalg.norm(sep)
            if a >= window_start and dist > 0:
                if speed0 is None:
                    speed0 = np.linalg.norm(rhs(w_start[None, :n], p)[0])
                lsum += np.log(dist / d0)
                ltime += b - a
            w[n:] = w[:n] + sep * (d0 / dist)
        t = b
    flow = np.nan
    if ltime > 0:
        flow = np.log(max(np.linalg.norm(rhs(w[None, :n], p)[0]), 1e-300) / max(speed0, 1e-300)) / ltime
    return dict(t_final=t, u_final=w[:n], blowup=False, t_blowup=np.nan, wmin=wmin, wmax=wmax,
                wsum=wsum, wlen=wlen, lyap=lsum / ltime if ltime > 0 else np.nan, n_steps=n_steps, ys=ys,
                flow=flow, stalled=False)


def solve_scipy(rhs, u0: np.ndarray, p: np.ndarray, t0: float, t1: float, *, method: str, rtol: float,
                atol: float, window_start: float, blowup_bound: float, lyapunov: bool,
                twin_separation: float, renorm_interval: float, t_eval: np.ndarray | None = None,
                progress=None, checkpoint: Callable[[], None] | None = None) -> SolveResult:
    """Integrate each row of u0 [B, n] with parameters p [B, m] by solve_ivp; same record as torch.

    checkpoint: called between trajectories and at every rhs evaluation; raising from it stops the run.
    """
    B, n = u0.shape
    check = checkpoint or (lambda: None)
    rows = []
    for i in range(B):
        check()
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):   # a blow-up, reported as one
            rows.append(_one(rhs, u0[i], p[i], t0, t1, method=method, rtol=rtol, atol=atol,
                             window_start=window_start, bound=blowup_bound, lyapunov=lyapunov,
                             d0=twin_separation, renorm=renorm_interval, t_eval=t_eval, checkpoint=check))
        if progress is not None:
            progress(i + 1, B)
    u_final = np.array([r["u_final"] for r in rows])
    wmin = np.array([r["wmin"] for r in rows])
    wmax = np.array([r["wmax"] for r in rows])
    empty = ~np.isfinite(wmin).all(1)
    wmin[empty], wmax[empty] = u_final[empty], u_final[empty]
    wlen = np.array([r["wlen"] for r in rows])
    mean = np.where(wlen[:, None] > 0, np.array([r["wsum"] for r in rows]) / np.maximum(wlen, 1e-300)[:, None],
                    u_final)
    blow = np.array([r["blowup"] for r in rows])
    return SolveResult(
        t_final=np.array([r["t_final"] for r in rows]), u_final=u_final, u_min=wmin, u_max=wmax, u_mean=mean,
        blowup=blow, t_blowup=np.array([r["t_blowup"] for r in rows]), finished=np.ones(B, dtype=bool),
        lyapunov_max=np.array([r["lyap"] for r in rows]) if lyapunov else np.full(B, np.nan),
        flow_log_ratio=np.array([r["flow"] for r in rows]) if lyapunov else np.full(B, np.nan),
        n_steps=np.array([r["n_steps"] for r in rows]), n_rejected=np.zeros(B, dtype=np.int64),
        ys=None if t_eval is None else np.stack([r["ys"] for r in rows]),
        stalled=np.array([r["stalled"] for r in rows], dtype=bool))
