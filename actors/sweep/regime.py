"""The regime rule: turn per-trajectory features into a label.

In order, first match wins (thresholds come from SolverConfig):
1. blow_up     — the state left the bound |u_i| <= blowup_bound, became non-finite, or the step size
                 collapsed (the solver could not continue).
2. unresolved  — the integrator ran out of steps before t_end.
3. fixed_point — over the final window every state's relative range
                 (max - min) / (1 + max(|max|, |min|)) is below fixed_point_tol; or the range is
                 below settle_amplitude and lambda_max < -decay_threshold: a focus still spiralling
                 in (the twin contracts, the orbit decays), not a cycle. Small cycles are born in a
                 Hopf bifurcation, are near-harmonic and so have lambda_max ~ 0 (the flow-speed term
                 log(|F(end)| / |F(start)|) / window is small); large-amplitude orbits, whose speed
                 can vary enough to make that term negative, are never relabelled.
4. chaotic     — the finite-time largest Lyapunov exponent over the final window exceeds
                 chaos_threshold as measured, and with the flow-speed term removed
                 (lambda - log(|F(u_end)| / |F(u_start)|) / window) it exceeds chaos_threshold
                 + flow_margin * |that term|: the removal is only as exact as the twin's alignment
                 with the flow at the window's ends, so on orbits whose speed varies by orders of
                 magnitude (GASLIT-AF's cycles around the collapsed state: a flow term of 0.05-0.1)
                 a residual of 0.01-0.016 is not evidence of chaos. On a limit cycle the twin
                 separation ends up along the flow, so the raw finite-time value is exactly that
                 speed ratio, O(1/window), and not chaos; on a chaotic orbit the term is O(1/window)
                 next to lambda_max > 0.
5. limit_cycle — bounded, not stationary, not chaotic (lambda_max ~ 0).
   oscillatory — the same when no Lyapunov estimate was requested (periodic vs chaotic unknown).
Fixed points are then named by the model's `fixed_point_labels` (GASLIT-AF: healthy / collapsed).

`classify_spectrum` is the finer rule on QR Lyapunov spectra and Poincare sections
(actors/sweep/lyapunov.py), which adds quasi_periodic and a cycle's period; see
docs/models/README.md "Regime rule on Lyapunov spectra".
"""
from __future__ import annotations

import numpy as np

REGIMES = ("fixed_point", "limit_cycle", "chaotic", "blow_up", "oscillatory", "unresolved", "quasi_periodic")


def relative_amplitude(u_min: np.ndarray, u_max: np.ndarray) -> np.ndarray:
    """max over states of (max - min) / (1 + max(|max|, |min|)) for each row."""
    span = u_max - u_min
    size = 1.0 + np.maximum(np.abs(u_max), np.abs(u_min))
    with np.errstate(invalid="ignore"):
        return np.nan_to_num(span / size, nan=np.inf).max(axis=1)


def classify(u_min: np.ndarray, u_max: np.ndarray, lyapunov_max: np.ndarray, flow_log_ratio: np.ndarray,
             blowup: np.ndarray, finished: np.ndarray, *, fixed_point_tol: float,
             chaos_threshold: float, settle_amplitude: float = 0.05,
             decay_threshold: float = 0.01, flow_margin: float = 0.5) -> np.ndarray:
    """Regime label per row by the rule in this module's docstring."""
    amp = relative_amplitude(u_min, u_max)
    have_lyap = np.isfinite(lyapunov_max)
    label = np.where(have_lyap, "limit_cycle", "oscillatory").astype(object)
    flow = np.nan_to_num(flow_log_ratio, nan=0.0)
    transverse = lyapunov_max - flow
    chaotic = (lyapunov_max > chaos_threshold) & (transverse > chaos_threshold + flow_margin * np.abs(flow))
    label[have_lyap & chaotic] = "chaotic"
    settling = have_lyap & (amp < settle_amplitude) & (lyapunov_max < -decay_threshold)
    label[(amp < fixed_point_tol) | settling] = "fixed_point"
    label[~finished] = "unresolved"
    label[blowup] = "blow_up"
    return label


def classify_spectrum(exponents: np.ndarray, amplitude: np.ndarray, blowup: np.ndarray,
                      section_order: np.ndarray, *, zero_tol: float = 0.01, chaos_threshold: float = 0.02,
                      fixed_point_tol: float = 1e-4) -> np.ndarray:
    """Regime per row from a Lyapunov spectrum [B, k] and a Poincare section (first match wins).

    1. blow_up        — the trajectory left the bound or became non-finite.
    2. fixed_point    — window amplitude < fixed_point_tol, or lambda_1 < -zero_tol (all directions
                        contract, so no cycle can be the attractor).
    3. chaotic        — lambda_1 > chaos_threshold.
    4. limit_cycle    — lambda_1 ~ 0 and the section is finite (section_order > 0: the crossing
                        points repeat after q returns; q > 1 is a period-q cycle).
    5. quasi_periodic — lambda_1 ~ 0, the section is not finite, and lambda_2 ~ 0 too (a 2-torus;
                        also when only one exponent was computed, so lambda_2 is unknown).
    6. limit_cycle    — lambda_1 ~ 0 with lambda_2 < -zero_tol but no repeat found: a one-dimensional
                        attractor whose period exceeds the section's order limit or has not settled.
    "~ 0" means -zero_tol <= lambda <= chaos_threshold (lambda_1) or |lambda_2| <= zero_tol.
    A finite section outranks two zero exponents: on a resonant torus every orbit is periodic.
    """
    exponents = np.atleast_2d(exponents)
    lam1 = exponents[:, 0]
    lam2 = exponents[:, 1] if exponents.shape[1] > 1 else np.zeros_like(lam1)
    label = np.full(lam1.shape, "limit_cycle", dtype=object)
    label[(section_order == 0) & (np.abs(lam2) <= zero_tol)] = "quasi_periodic"
    label[lam1 > chaos_threshold] = "chaotic"
    label[(amplitude < fixed_point_tol) | (lam1 < -zero_tol)] = "fixed_point"
    label[blowup | ~np.isfinite(lam1)] = "blow_up"
    return label
