"""Ragwitz auto-embedding (actors/te/ragwitz.py) against an independent float64 re-implementation of
JIDT's scoring (ActiveInfoStorageCalculatorKraskov, AUTO_EMBED_METHOD_RAGWITZ, v1.6.1): per-candidate
samples t = (h-1) tau .. T-2, every embedded column z-scored (ddof=1) over them, the mean next value of
the K nearest pasts (max norm, Theiler window) as forecast, squared error summed and divided by the
candidate's own sample count, candidates in JIDT's order with strict-< replacement.

The near ties are constructed on purpose: an AR(2) whose one- and two-step histories forecast almost
equally well, at T = 400; for the seeds used the old scoring (one shared sample set, series z-scored
once, re-implemented here too) picks a different (h, tau) than JIDT's, and the engine must pick JIDT's.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from actors.common.errors import InputError
from actors.te.config import NetworkConfig, RagwitzConfig
from actors.te.network import auto_embeddings
from actors.te.ragwitz import candidates, ragwitz


def _z(a: np.ndarray) -> np.ndarray:
    return (a - a.mean(axis=0)) / a.std(axis=0, ddof=1)


def _embed(x: np.ndarray, t: np.ndarray, h: int, tau: int) -> np.ndarray:
    return x[t[:, None] - tau * np.arange(h)[None, :]]


def _knn(past: np.ndarray, k: int, theiler: int) -> np.ndarray:
    """k nearest rows (max norm) outside |i - j| <= theiler, by cKDTree, filtered explicitly."""
    n = past.shape[0]
    _, idx = cKDTree(past).query(past, k=k + 2 * theiler + 1, p=np.inf)
    out = np.empty((n, k), dtype=np.int64)
    for i in range(n):
        kept = [j for j in idx[i] if abs(j - i) > theiler]
        out[i] = kept[:k]
    return out


def jidt_score(x: np.ndarray, h: int, tau: int, k: int = 4, theiler: int = 0) -> float:
    t = np.arange((h - 1) * tau, x.size - 1)
    past, nxt = _z(_embed(x, t, h, tau)), _z(x[t + 1])
    nbr = _knn(past, k, theiler)
    return float(np.sum((nxt[nbr].mean(axis=1) - nxt) ** 2) / t.size)


def old_score(x: np.ndarray, h: int, tau: int, h_max: int, tau_max: int, k: int = 4) -> float:
    """The removed scoring: the series z-scored once, every candidate on the largest embedding's samples."""
    xz = _z(x)
    t = np.arange((h_max - 1) * tau_max, x.size - 1)
    nbr = _knn(_embed(xz, t, h, tau), k, 0)
    return float(np.mean((xz[t + 1][nbr].mean(axis=1) - xz[t + 1]) ** 2))


def jidt_choice(x: np.ndarray, h_max: int, tau_max: int, **kw) -> tuple[tuple[int, int], dict]:
    best, best_err, errs = (1, 1), np.inf, {}
    for h in range(1, h_max + 1):
        for tau in range(1, tau_max + 1):
            errs[(h, tau)] = e = jidt_score(x, h, tau, **kw)
            if e < best_err:
                best, best_err = (h, tau), e
            if h == 1:
                break
    return best, errs


def ar2(T: int, seed: int, a1: float = 0.6, a2: float = 0.15) -> np.ndarray:
    rng = np.random.default_rng(seed)
    e = rng.standard_normal(T + 100)
    x = np.zeros(T + 100)
    for i in range(2, T + 100):
        x[i] = a1 * x[i - 1] + a2 * x[i - 2] + e[i]
    return x[100:]


@pytest.mark.parametrize("seed, want", [(0, (1, 1)), (67, (2, 1))])
def test_near_tie_picks_jidts_embedding(seed, want):
    x = ar2(400, seed)
    cfg = RagwitzConfig(k_range=(1, 2), tau_range=(1, 2))
    got = ragwitz(x, cfg)
    ref, ref_errs = jidt_choice(x, 2, 2)
    assert (got.hist, got.tau) == ref == want
    assert got.errors.keys() == ref_errs.keys()
    for c, e in ref_errs.items():
        assert got.errors[c] == pytest.approx(e, rel=1e-12, abs=0)
    # the case is a near tie on purpose: the old shared-sample scoring chooses differently
    old = {c: old_score(x, *c, 2, 2) for c in candidates(cfg)}
    assert min(old, key=lambda c: (old[c], c)) != want
    runner_up = sorted(ref_errs.values())[1]
    assert runner_up - ref_errs[want] < 0.01 * ref_errs[want]


def test_scores_match_reference_with_theiler_and_neighbours():
    x = ar2(300, 3)
    cfg = RagwitzConfig(k_range=(1, 3), tau_range=(1, 3), n_neighbours=6)
    got = ragwitz(x, cfg, k=4, theiler=2)
    ref, ref_errs = jidt_choice(x, 3, 3, k=6, theiler=2)
    assert (got.hist, got.tau) == ref
    np.testing.assert_allclose([got.errors[c] for c in ref_errs], list(ref_errs.values()), rtol=1e-12)


def test_search_order_and_ties():
    cfg = RagwitzConfig(k_range=(1, 3), tau_range=(2, 3))
    assert candidates(cfg) == [(1, 2), (2, 2), (2, 3), (3, 2), (3, 3)]   # h = 1: one delay (the lowest)
    # a period-2 square wave: every candidate forecasts perfectly (error 0): the first in order wins
    emb = ragwitz(np.tile([0.0, 1.0], 50), RagwitzConfig(k_range=(1, 3), tau_range=(1, 2)))
    assert set(emb.errors.values()) == {0.0} and (emb.hist, emb.tau) == (1, 1)


def test_source_and_destination_each_get_their_own_search():
    """RAGWITZ (source too) embeds each series by its own search, RAGWITZ_DEST_ONLY only the destination."""
    data = np.column_stack([ar2(400, 0), ar2(400, 67)])
    cfg = {"k_range": (1, 2), "tau_range": (1, 2)}
    emb = auto_embeddings(data, NetworkConfig(ragwitz={**cfg, "source": True}))
    assert emb == {0: jidt_choice(data[:, 0], 2, 2)[0], 1: jidt_choice(data[:, 1], 2, 2)[0]} == {0: (1, 1), 1: (2, 1)}


def test_too_short_names_series():
    with pytest.raises(InputError) as info:
        ragwitz(np.arange(8.0) ** 2, RagwitzConfig(k_range=(1, 4), tau_range=(1, 2)))
    assert info.value.field == "series" and "samples" in info.value.allowed
