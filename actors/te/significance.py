"""Surrogate orders, surrogate p-values and network-level corrections.

Surrogates reorder the rows of the (already prepared) source-past block and keep the destination,
as JIDT's computeSignificance does: a permutation destroys the source -> destination relation and
the source's own autocorrelation; a circular shift keeps the autocorrelation (better for smooth,
autocorrelated sources). p = (1 + #{surrogate >= observed}) / (1 + S), never 0.
"""
from __future__ import annotations

import numpy as np

from actors.common.budget import checkpoint
from actors.common.errors import InputError
from actors.te.config import SignificanceConfig


def surrogate_orders(n: int, cfg: SignificanceConfig, rng: np.random.Generator) -> np.ndarray:
    """[S, n] row orders: random permutations, or circular shifts by s in [min_shift, n - min_shift]."""
    if cfg.method == "permutation":
        out = np.empty((cfg.n_surrogates, n), dtype=np.int64)
        for s in range(cfg.n_surrogates):
            if s % 64 == 0:
                checkpoint()   # S x n draws: bounded by the caller's budget too
            out[s] = rng.permutation(n)
        return out
    lo = cfg.min_shift if cfg.min_shift is not None else max(1, n // 10)
    hi = n - lo
    if hi < lo:
        raise InputError("significance.min_shift", f"{lo} leaves no circular shift for {n} observations",
                         f"1 <= min_shift <= {n // 2}")
    shifts = rng.integers(lo, hi + 1, size=cfg.n_surrogates)
    return (np.arange(n)[None, :] + shifts[:, None]) % n


def p_value(observed: float, surrogates: np.ndarray) -> float:
    """(1 + #{surrogate >= observed}) / (1 + S): the permutation-test p-value including the observation."""
    surrogates = np.asarray(surrogates, dtype=np.float64)
    return float((1 + np.count_nonzero(surrogates >= observed)) / (1 + surrogates.size))


def max_statistic(observed: np.ndarray, surrogates: np.ndarray) -> np.ndarray:
    """Family-wise corrected p-values: each observation against the per-surrogate maximum over all tests.

    observed [P], surrogates [P, S] with surrogate s of every test drawn in the same round.
    """
    observed = np.asarray(observed, dtype=np.float64)
    surrogates = np.asarray(surrogates, dtype=np.float64)
    if observed.size == 0:
        return np.empty(0)
    peak = surrogates.max(axis=0)  # [S]
    exceed = (peak[None, :] >= observed[:, None]).sum(axis=1)
    return (1 + exceed) / (1 + peak.size)


def fdr_bh(p_values: np.ndarray, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Benjamini-Hochberg: (reject mask at FDR alpha, adjusted p-values) for independent tests."""
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    if m == 0:
        return np.zeros(0, dtype=bool), np.empty(0)
    order = np.argsort(p, kind="stable")
    ranked = p[order] * m / np.arange(1, m + 1)
    adjusted_sorted = np.minimum.accumulate(ranked[::-1])[::-1].clip(max=1.0)
    adjusted = np.empty(m)
    adjusted[order] = adjusted_sorted
    below = np.nonzero(p[order] <= alpha * np.arange(1, m + 1) / m)[0]
    reject = np.zeros(m, dtype=bool)
    if below.size:
        reject[order[: below[-1] + 1]] = True
    return reject, adjusted
