"""Exact Boltzmann selection over K candidate models, with the thermodynamics of each decision.

p_k = exp(-E_k / T) / Z,  log Z = logsumexp(-E / T),  F = -T ln Z,  U = sum_k p_k E_k,
S = -sum_k p_k ln p_k = (U - F) / T   (nats; k_B = 1).

Computed in float64 with log-sum-exp (no overflow at any T > 0). T = 0 is the limit T -> 0+: p is
uniform over the argmin set (one-hot without ties), F = U = min E, S = ln(#ties), and log Z is its
limit: +inf if min E < 0, -inf if min E > 0, ln(#ties) if min E = 0. T may be a scalar or one value
per request. The temperature schedules live in actors/router/schedules.py and are re-exported here.

    d = boltzmann(E, T=0.5)          # E: [N, K]
    d.p, d.log_Z, d.free_energy, d.entropy
    choice = sample(d, np.random.default_rng(0))
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from actors.common.errors import InputError
from actors.router.checks import finite_array, temperature
from actors.router.schedules import (
    AdaptiveSchedule,
    SwapStats,
    exponential_schedule,
    fokker_planck_moments,
    fokker_planck_paths,
    geometric_ladder,
    logarithmic_schedule,
    replica_exchange_schedule,
    swap_probability,
)

__all__ = [
    "AdaptiveSchedule", "Decision", "SwapStats", "boltzmann", "exponential_schedule", "fokker_planck_moments",
    "fokker_planck_paths", "geometric_ladder", "logarithmic_schedule", "replica_exchange_schedule", "sample",
    "swap_probability",
]


@dataclass(frozen=True)
class Decision:
    """One Boltzmann decision per request: p [N, K], log_Z, free_energy, entropy, mean_energy, T [N]."""

    p: np.ndarray
    log_Z: np.ndarray
    free_energy: np.ndarray
    entropy: np.ndarray
    mean_energy: np.ndarray
    T: np.ndarray

    def to_dict(self, i: int = 0) -> dict:
        """Request `i` as JSON-able floats (the router's /route answer)."""
        return {"p": self.p[i].tolist(), "log_Z": float(self.log_Z[i]), "free_energy": float(self.free_energy[i]),
                "entropy": float(self.entropy[i]), "mean_energy": float(self.mean_energy[i]), "T": float(self.T[i])}


def _logsumexp_rows(a: np.ndarray) -> np.ndarray:
    """log sum_k exp(a[:, k]) per row, shifted by the row's max (scipy.special.logsumexp's algorithm,
    which it equals to rounding; in numpy because scipy's array-API dispatch cost ~4x the arithmetic of
    a K <= 16 row: ~60 of a decision's ~210 us, docs/router.md)."""
    m = a.max(axis=1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.exp(a - m).sum(axis=1)) + m[:, 0]


def _hot_rows(E: np.ndarray, T: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(p, log Z, entropy) of rows with T > 0, by log-sum-exp."""
    a = -E / T[:, None]
    lz = _logsumexp_rows(a)
    logp = a - lz[:, None]
    p = np.exp(logp)
    return p, lz, -np.sum(np.where(p > 0, p * logp, 0.0), axis=1)


def boltzmann(E, T) -> Decision:
    """Exact Boltzmann distribution of each row of E[N, K] (a 1-D E is one request) at temperature T."""
    E = finite_array(E, "E")
    if E.ndim == 1:
        E = E[None, :]
    if E.ndim != 2:
        raise InputError("E", f"expected [N, K] energies, got shape {E.shape}", "2 dimensions")
    n, k = E.shape
    if k == 0:
        raise InputError("K", "no candidate models (E has 0 columns)", ">= 1")
    Tn = np.broadcast_to(temperature(T, "T", n), (n,)).astype(np.float64)
    hot = Tn > 0
    if hot.all():   # the usual case: no masked copies (~half the time of a K <= 16 row)
        p, log_Z, S = _hot_rows(E, Tn)
        F = -Tn * log_Z
    else:
        p, log_Z, F, S = np.empty((n, k)), np.empty(n), np.empty(n), np.empty(n)
        if hot.any():
            p[hot], log_Z[hot], S[hot] = _hot_rows(E[hot], Tn[hot])
            F[hot] = -Tn[hot] * log_Z[hot]
        cold = ~hot
        Ec = E[cold]
        emin = Ec.min(axis=1)
        ties = Ec == emin[:, None]
        g = ties.sum(axis=1)
        p[cold] = ties / g[:, None]
        F[cold] = emin
        S[cold] = np.log(g)
        log_Z[cold] = np.where(emin < 0, np.inf, np.where(emin > 0, -np.inf, np.log(g)))
    U = np.sum(p * E, axis=1)
    return Decision(p=p, log_Z=log_Z, free_energy=F, entropy=S, mean_energy=U, T=Tn)


def sample(decision: Decision, rng: np.random.Generator) -> np.ndarray:
    """One model index per request drawn from decision.p (inverse CDF, one uniform per request)."""
    cdf = np.cumsum(decision.p, axis=1)
    u = rng.random(cdf.shape[0]) * cdf[:, -1]
    return np.minimum((cdf <= u[:, None]).sum(axis=1), cdf.shape[1] - 1)
