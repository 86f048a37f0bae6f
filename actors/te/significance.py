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


def surrogates_needed(correction: str, alpha: float, n_tests: int, n_edges: int | None = None) -> int:
    """The fewest surrogates S whose p-value floor 1/(S+1) lets `correction` declare anything significant.

    max-statistic and none: 1/(S+1) <= alpha. Benjamini-Hochberg over n_tests tests: the k-th smallest
    p-value is compared with alpha k / n_tests, so with `n_edges` true edges (p at the floor, the best
    case) BH rejects only when 1/(S+1) <= alpha n_edges / n_tests; n_edges None -> n_tests (any edge).
    """
    if correction == "fdr":
        k = n_tests if n_edges is None else max(1, min(n_edges, n_tests))
        bound = alpha * k / max(n_tests, 1)
    else:
        bound = alpha
    return max(1, int(np.ceil(1.0 / bound - 1.0 - 1e-9)))


def significance_warnings(correction: str, alpha: float, n_surrogates: int, n_tests: int, n_vars: int,
                          mode: str = "bivariate") -> list[str]:
    """Plain-language warnings when the surrogate count cannot (or can hardly) reach significance.

    A sparse network has about one edge per variable: BH then needs 1/(S+1) <= alpha * n_vars / n_tests.
    """
    floor = 1.0 / (n_surrogates + 1)
    out = []
    kind = "max-statistic" if mode == "bivariate" else "multivariate max/min-statistic"
    if mode == "multivariate" or correction in ("max", "none"):
        if floor > alpha:
            need = surrogates_needed("max", alpha, n_tests)
            name = kind if (mode == "multivariate" or correction == "max") else "uncorrected"
            out.append(f"no edge can be significant: with {n_surrogates} surrogates the smallest p-value is "
                       f"1/(S+1) = {floor:.3g} > alpha = {alpha} ({name} test); use n_surrogates >= {need}")
        return out
    if correction == "fdr":
        if floor > alpha:
            out.append(f"no edge can be significant: with {n_surrogates} surrogates the smallest p-value is "
                       f"1/(S+1) = {floor:.3g} > alpha = {alpha} (Benjamini-Hochberg); "
                       f"use n_surrogates >= {surrogates_needed('fdr', alpha, n_tests, n_tests)}")
            return out
        min_edges = int(np.ceil(floor * n_tests / alpha - 1e-9))
        if min_edges > n_vars:
            need = surrogates_needed("fdr", alpha, n_tests, n_vars)
            out.append(f"Benjamini-Hochberg over {n_tests} pairs with {n_surrogates} surrogates rejects nothing "
                       f"unless at least {min_edges} pairs ({100 * min_edges / n_tests:.1f}%) reach the p-value floor "
                       f"1/(S+1) = {floor:.3g}: a sparse network (about one edge per variable) comes out empty; "
                       f"use n_surrogates >= {need} (or correction: max)")
    return out
