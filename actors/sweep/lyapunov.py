"""Lyapunov spectra by the QR method, batched in torch, with a float64 scipy reference.

Benettin et al. (1980) / Shimada & Nagashima (1979): integrate the state u together with k tangent
vectors Q (the variational equations Q' = J(u) Q, J the model's symbolic Jacobian) and
re-orthonormalise Q = Q'R every few steps; the time average of log|diag R| is the spectrum,
largest first. With k = 1 this is the largest exponent by tangent dynamics (a normalisation, no QR).

The torch path is fixed-step RK4 on the augmented system, one row per trajectory, on CPU or CUDA.
Fixed steps keep every row in lock step (no per-row control flow) and make the exponents' sum
exact to O(dt^4): it equals the time average of trace J (for Lorenz the constant -(sigma+1+beta)).
Alongside, it records upward crossings of a Poincare section (one state through its transient
mean, located by cubic Hermite interpolation) so the regime rule can read off a cycle's period.
The scipy path (`lyapunov_spectrum_reference`) is the independent check for one trajectory:
DOP853 at tight tolerances between renormalisations and LAPACK QR, all in float64.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.integrate
import scipy.linalg
from pydantic import Field

from actors.common.config import Strict
from actors.common.errors import InputError
from actors.sweep.jacobian import derivatives
from actors.sweep.models import CompiledModel, get_model


@dataclass
class LyapunovResult:
    """Per-trajectory spectrum and the features the regime rule reads (numpy, batch first)."""

    exponents: np.ndarray         # [B, k] largest first; nan where the trajectory blew up
    exponents_section: np.ndarray  # [B, k] the same between the first and last section crossing
    #                                (whole returns: no flow-speed term on a cycle); nan unless the
    #                                crossings span at least half the window
    u_final: np.ndarray           # [B, n]
    u_min: np.ndarray             # [B, n] over the measurement window
    u_max: np.ndarray             # [B, n]
    blowup: np.ndarray            # [B] bool: left |u| <= blowup_bound or became non-finite
    section_level: np.ndarray     # [B] the section state's transient mean (the section's position)
    section_times: np.ndarray     # [B, M] upward crossing times (first `section_count` are valid)
    section_points: np.ndarray    # [B, M, n] the state at each crossing
    section_count: np.ndarray     # [B] crossings recorded (at most M)
    t_measure: float              # length of the averaging window


class SpectrumSettings(Strict):
    """Config block for a spectrum run and its regime rule (jobs read it from YAML)."""

    k: int = Field(2, ge=1, le=64)                  # exponents (2 tells a torus from a cycle)
    dt: float = Field(0.01, gt=0, le=1)            # RK4 step
    t_transient: float = Field(100.0, gt=0)
    t_measure: float = Field(200.0, gt=0)
    renorm_every: int = Field(10, ge=1, le=10_000)
    zero_tol: float = Field(0.01, gt=0)
    chaos_threshold: float = Field(0.02, gt=0)
    fixed_point_tol: float = Field(1e-4, gt=0)
    section_tol: float = Field(1e-3, gt=0)
    blowup_bound: float = Field(1e6, gt=0)


def _check(model: CompiledModel, params: np.ndarray, u0: np.ndarray, dt: float, t_transient: float,
           t_measure: float, k: int) -> None:
    n, m = len(model.state_names), len(model.param_names)
    if params.ndim != 2 or params.shape[1] != m:
        raise InputError("params", f"shape {params.shape} does not match [B, {m}]", f"columns {model.param_names}")
    if u0.shape != (params.shape[0], n):
        raise InputError("initial_state", f"shape {u0.shape} does not match [{params.shape[0]}, {n}]",
                         f"columns {model.state_names}")
    if not np.isfinite(params).all():
        raise InputError("params", "contains non-finite values", "finite real numbers")
    if not np.isfinite(u0).all():
        raise InputError("initial_state", "contains non-finite values", "finite real numbers")
    if not (0 < dt <= 1):
        raise InputError("dt", f"{dt}", "0 < dt <= 1")
    if not (t_transient > 0 and t_measure > dt):
        raise InputError("t_measure", f"t_transient={t_transient}, t_measure={t_measure}",
                         "t_transient > 0 and t_measure > dt")
    if not (1 <= k <= n):
        raise InputError("k", f"{k} exponents requested", f"1..{n} (the number of states)")


def lyapunov_spectrum(model: CompiledModel | str, params: np.ndarray, u0: np.ndarray, *, t_transient: float,
                      t_measure: float, dt: float = 0.01, k: int | None = None, renorm_every: int = 10,
                      section_state: int | str | None = 0, max_crossings: int = 64, blowup_bound: float = 1e6,
                      device: str = "cpu", dtype: str = "float64") -> LyapunovResult:
    """First k Lyapunov exponents of every row (params[i], u0[i]) by RK4 + QR, batched in torch.

    t_transient: time integrated first (state onto the attractor, Q onto the Oseledets directions).
    t_measure: averaging window; the finite-time error is O(1/t_measure) for cycles and
        O(1/sqrt(t_measure)) fluctuations for chaos (average over rows for tighter estimates).
    renorm_every: RK4 steps between QR re-orthonormalisations (tangent growth over renorm_every*dt
        must stay far below float range: exp(lambda_max * renorm_every * dt)). With a section it is
        1: the cumulative growth is then known at every crossing, for `exponents_section`.
    section_state: state (index or name) whose upward crossings of its transient mean are recorded;
        None skips the section (about a third less work per step when only exponents are wanted).
    """
    import torch

    model = get_model(model) if isinstance(model, str) else model
    params = np.atleast_2d(np.asarray(params, dtype=np.float64))
    u0 = np.atleast_2d(np.asarray(u0, dtype=np.float64))
    n = len(model.state_names)
    k = n if k is None else int(k)
    _check(model, params, u0, dt, t_transient, t_measure, k)
    if isinstance(section_state, str):
        if section_state not in model.state_names:
            raise InputError("section_state", f"{section_state!r} is not a state", ", ".join(model.state_names))
        section_state = model.state_names.index(section_state)
    if section_state is not None and not 0 <= int(section_state) < n:
        raise InputError("section_state", f"index {section_state}", f"0..{n - 1} or a state name")
    tdt = torch.float64 if dtype == "float64" else torch.float32
    der = derivatives(model)
    B = params.shape[0]
    p = torch.as_tensor(params, dtype=tdt, device=device)
    u_start = torch.as_tensor(u0, dtype=tdt, device=device)
    u = u_start.clone()
    # a generic (fixed-seed random) orthonormal start: with the identity, a system that decouples
    # keeps each tangent vector in its own subspace and the columns never sort by growth rate
    Q0 = np.linalg.qr(np.random.default_rng(12345).normal(size=(n, n)))[0][:, :k]
    Q0 = torch.as_tensor(Q0, dtype=tdt, device=device)
    Q = Q0.expand(B, n, k).clone()
    n_trans = int(round(t_transient / dt))
    n_meas = int(round(t_measure / dt))
    s = section_state

    tangent = der.tangent_field_torch(p)

    def field(x, V):
        F, J = tangent(x)
        return F, torch.bmm(J, V)

    log_sum = torch.zeros(B, k, dtype=tdt, device=device)
    blown = torch.zeros(B, dtype=torch.bool, device=device)
    level_sum = torch.zeros(B, dtype=tdt, device=device)
    level_n = 0
    wmin = torch.full((B, n), float("inf"), dtype=tdt, device=device)
    wmax = torch.full((B, n), float("-inf"), dtype=tdt, device=device)
    brackets = torch.full((B, max_crossings, 4 * n + 1 + 2 * k), float("nan"), dtype=tdt, device=device)
    if s is not None:
        renorm_every = 1
    count = torch.zeros(B, dtype=torch.long, device=device)
    level = torch.zeros(B, dtype=tdt, device=device)
    prev_u = prev_f = None
    half = dt / 2
    for step in range(n_trans + n_meas):
        measuring = step >= n_trans
        k1u, k1q = field(u, Q)
        if measuring and prev_u is not None and s is not None:  # a crossing in the last step [prev_u -> u]?
            # Q is orthonormal here (renormalised every step), so diag(Q^T J Q) are the growth rates
            rates = (Q * k1q).sum(1)
            _record_bracket(prev_u, prev_f, u, k1u, torch.cat([log_sum, rates], 1), level, s, (step - 1) * dt,
                            brackets, count, ~blown)
        prev_u, prev_f = u, k1u
        k2u, k2q = field(u + half * k1u, Q + half * k1q)
        k3u, k3q = field(u + half * k2u, Q + half * k2q)
        k4u, k4q = field(u + dt * k3u, Q + dt * k3q)
        u = u + (dt / 6) * (k1u + k4u).add_(k2u + k3u, alpha=2)
        Q = Q + (dt / 6) * (k1q + k4q).add_(k2q + k3q, alpha=2)
        if measuring:
            wmin, wmax = torch.minimum(wmin, u), torch.maximum(wmax, u)
        renorm = (step + 1) % renorm_every == 0 or step + 1 == n_trans + n_meas or step + 1 == n_trans
        if renorm:  # blow-up: freeze the row at its start so the batch stays finite; exponents -> nan
            bad = ~torch.isfinite(u).all(1) | (u.abs().amax(1) > blowup_bound) | ~torch.isfinite(Q).all((1, 2))
            blown = blown | bad  # no host sync: the device runs ahead of Python
            u = torch.where(blown[:, None], u_start, u)
            Q = torch.where(blown[:, None, None], Q0, Q)
        if step >= n_trans // 2 and not measuring and s is not None:
            level_sum += u[:, s]
            level_n += 1
            level = level_sum / level_n
        if renorm:
            Q, growth = _reorthonormalise(Q)
            if measuring:
                log_sum += growth
    exps = (log_sum / (n_meas * dt)).sort(dim=1, descending=True).values  # generic starts sort already
    exps = torch.where(blown[:, None], torch.full_like(exps, float("nan")), exps)

    def np_(x):
        return x.detach().to("cpu", torch.float64 if x.is_floating_point() else x.dtype).numpy()

    br = np_(brackets)
    cross_t, cross_p = _locate_crossings(br[..., :4 * n + 1], np_(level), s or 0, dt)
    # growth between the first and last crossing: on a cycle, whole periods (no flow-speed term)
    c = np_(count)
    t_first = np.where(c >= 2, cross_t[:, 0], np.nan)
    t_last = cross_t[np.arange(B), np.maximum(c - 1, 0)]
    # only where the returns span most of the window: a decaying spiral stops crossing early
    rows = np.flatnonzero((c >= 2) & (t_last - t_first >= 0.5 * n_meas * dt))
    sec = np.full((B, k), np.nan)
    # cumulative log growth at the crossing itself: at the step's end, less the rate times the rest
    logs = br[..., 4 * n + 1:4 * n + 1 + k] - (br[..., 0] + dt - cross_t)[..., None] * br[..., 4 * n + 1 + k:]
    span = cross_t[rows, c[rows] - 1] - cross_t[rows, 0]
    sec[rows] = (logs[rows, c[rows] - 1] - logs[rows, 0]) / np.where(span > 0, span, np.nan)[:, None]
    sec = -np.sort(-sec, axis=1)
    sec[np_(blown)] = np.nan
    return LyapunovResult(exponents=np_(exps), exponents_section=sec, u_final=np_(u), u_min=np_(wmin),
                          u_max=np_(wmax), blowup=np_(blown), section_level=np_(level), section_times=cross_t,
                          section_points=cross_p, section_count=np_(count), t_measure=n_meas * dt)


def largest_lyapunov(model: CompiledModel | str, params: np.ndarray, u0: np.ndarray, **kwargs) -> np.ndarray:
    """λ_max of every row by tangent dynamics (one tangent vector, renormalised): [B]."""
    return lyapunov_spectrum(model, params, u0, k=1, **kwargs).exponents[:, 0]


def _reorthonormalise(Q):
    """Q -> Q' with orthonormal columns and log|diag R| (the growth of each direction).

    Modified Gram-Schmidt, batched: torch's batched LAPACK QR costs ~4 ms for 256 3x3 matrices on
    a CPU (a per-matrix call), MGS a few dozen vector ops. Between renormalisations the columns'
    condition number is exp((lambda_1 - lambda_k) * interval), small, so MGS loses nothing here.
    """
    import torch

    cols, logs = [], []
    for j in range(Q.shape[2]):
        v = Q[:, :, j]
        for q in cols:
            v = v - (q * v).sum(1, keepdim=True) * q
        norm = torch.linalg.vector_norm(v, dim=1)
        cols.append(v / norm[:, None])
        logs.append(torch.log(norm))
    return torch.stack(cols, dim=2), torch.stack(logs, dim=1)


def _record_bracket(u0, f0, u1, f1, growth, level, s, t0, brackets, count, alive) -> None:
    """Keep the step [u0 -> u1] (with its rhs values and the growth so far) where u[s] rises through `level`.

    Only the bracket is stored here (a handful of batched ops per step); `_locate_crossings`
    places the crossing on the cubic Hermite interpolant once, after the loop.
    """
    import torch

    hit = alive & (u0[:, s] < level) & (u1[:, s] >= level) & (count < brackets.shape[1])
    slot = count.clamp(max=brackets.shape[1] - 1)[:, None, None].expand(-1, 1, brackets.shape[2])
    row = torch.cat([torch.full_like(u0[:, :1], t0), u0, f0, u1, f1, growth], dim=1)
    new = torch.where(hit[:, None], row, brackets.gather(1, slot)[:, 0])
    brackets.scatter_(1, slot, new[:, None, :])
    count += hit.long()


def _locate_crossings(brackets: np.ndarray, level: np.ndarray, s: int, h: float) -> tuple[np.ndarray, np.ndarray]:
    """Crossing times [B, M] and states [B, M, n] from stored brackets, by Newton on the Hermite cubic."""
    n = (brackets.shape[2] - 1) // 4
    t0 = brackets[..., 0]
    u0, f0, u1, f1 = (brackets[..., 1 + i * n: 1 + (i + 1) * n] for i in range(4))
    g0, g1 = u0[..., s] - level[:, None], u1[..., s] - level[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        theta = np.clip(np.nan_to_num(g0 / (g0 - g1)), 0, 1)  # linear guess, O(h^2) off

        def herm(th, y0, y1, d0, d1):
            th2, th3 = th * th, th * th * th
            return ((2 * th3 - 3 * th2 + 1) * y0 + (th3 - 2 * th2 + th) * h * d0
                    + (-2 * th3 + 3 * th2) * y1 + (th3 - th2) * h * d1)

        for _ in range(8):
            th2 = theta * theta
            val = herm(theta, g0, g1, f0[..., s], f1[..., s])
            der = ((6 * th2 - 6 * theta) * g0 + (3 * th2 - 4 * theta + 1) * h * f0[..., s]
                   + (-6 * th2 + 6 * theta) * g1 + (3 * th2 - 2 * theta) * h * f1[..., s])
            theta = np.clip(theta - np.where(der != 0, val / der, 0.0), 0, 1)
        points = herm(theta[..., None], u0, u1, f0, f1)
    return t0 + theta * h, points


def section_period(result: LyapunovResult, *, tol: float = 1e-3, max_order: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Period and order of each row's Poincare return map, nan / 0 where the section is not finite.

    A periodic orbit of order q meets the section in q points that repeat: P[i + q] = P[i] for all
    recorded crossings, to `tol` times the window amplitude. The smallest such q is the order; the
    period is the mean return time over whole multiples of q (the longest span, for precision).
    """
    B, M, n = result.section_points.shape
    period = np.full(B, np.nan)
    order = np.zeros(B, dtype=int)
    scale = np.nanmax(result.u_max - result.u_min, axis=1)
    for b in range(B):
        c = int(result.section_count[b])
        if result.blowup[b] or not np.isfinite(scale[b]) or scale[b] <= 0:
            continue
        P, T = result.section_points[b, :c], result.section_times[b, :c]
        for q in range(1, max_order + 1):
            if c < 2 * q + 1:  # need each of the q points to repeat at least twice
                break
            if np.max(np.abs(P[q:] - P[:-q])) <= tol * scale[b]:
                m = (c - 1) // q
                period[b] = (T[m * q] - T[0]) / m
                order[b] = q
                break
    return period, order


def lyapunov_spectrum_reference(model: CompiledModel | str, params: np.ndarray, u0: np.ndarray, *,
                                t_transient: float, t_measure: float, renorm_interval: float = 0.5,
                                k: int | None = None, rtol: float = 1e-11, atol: float = 1e-12) -> np.ndarray:
    """First k exponents of ONE trajectory: DOP853 on the variational system + scipy QR, float64.

    The independent twin of `lyapunov_spectrum`: adaptive instead of fixed steps, LAPACK instead of
    torch QR, numpy lowering of the Jacobian instead of torch.
    """
    model = get_model(model) if isinstance(model, str) else model
    params = np.asarray(params, dtype=np.float64)
    u = np.asarray(u0, dtype=np.float64).copy()
    n = u.size
    k = n if k is None else int(k)
    _check(model, params[None], u[None], min(renorm_interval, 1.0), t_transient, t_measure, k)
    der = derivatives(model)

    def rhs(_t, y):
        x, V = y[:n], y[n:].reshape(n, k)
        return np.concatenate([model.rhs_numpy(x, params), (der.jac_numpy(x, params) @ V).ravel()])

    Q = np.linalg.qr(np.random.default_rng(12345).normal(size=(n, n)))[0][:, :k]  # generic, as the torch path
    total = np.zeros(k)
    n_trans = int(np.ceil(t_transient / renorm_interval))
    n_meas = int(round(t_measure / renorm_interval))
    for i in range(n_trans + n_meas):
        sol = scipy.integrate.solve_ivp(rhs, (0.0, renorm_interval), np.concatenate([u, Q.ravel()]),
                                        method="DOP853", rtol=rtol, atol=atol)
        if not sol.success or not np.isfinite(sol.y[:, -1]).all():
            return np.full(k, np.nan)
        u, V = sol.y[:n, -1], sol.y[n:, -1].reshape(n, k)
        Q, R = scipy.linalg.qr(V, mode="economic")
        if i >= n_trans:
            total += np.log(np.abs(np.diag(R)))
    return np.sort(total / (n_meas * renorm_interval))[::-1]


def classify_trajectories(result: LyapunovResult, *, zero_tol: float = 0.01, chaos_threshold: float = 0.02,
                          fixed_point_tol: float = 1e-4, section_tol: float = 1e-3,
                          max_order: int = 8) -> dict[str, np.ndarray]:
    """Regime, period, section order and the exponents the rule used, per row (rule: regime.classify_spectrum)."""
    from actors.sweep.regime import classify_spectrum, relative_amplitude

    period, order = section_period(result, tol=section_tol, max_order=max_order)
    amplitude = relative_amplitude(result.u_min, result.u_max)
    # whole-return exponents where the section has them: a cycle's finite-time lambda_1 is otherwise
    # off by the flow-speed ratio log(|F(end)| / |F(start)|) / t_measure
    exps = np.where(np.isfinite(result.exponents_section[:, :1]), result.exponents_section, result.exponents)
    regime = classify_spectrum(exps, amplitude, result.blowup, order, zero_tol=zero_tol,
                               chaos_threshold=chaos_threshold, fixed_point_tol=fixed_point_tol)
    period = np.where(regime == "limit_cycle", period, np.nan)
    return {"regime": regime, "period": period, "section_order": np.where(regime == "limit_cycle", order, 0),
            "amplitude": amplitude, "exponents": exps}
