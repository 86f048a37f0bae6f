"""Nearest-neighbour search for localization: exact FAISS against scipy brute force, approximate
indexes (IVF-Flat, HNSW) never closer than exact and with high recall, localize with an
approximate index finds the same planted memorised rows."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from actors.common.errors import InputError
from actors.validation.ann import build_index, nearest, recall_at_1


def _clustered(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (20, d))
    return (centres[rng.integers(0, 20, n)] + rng.normal(size=(n, d))).astype(np.float32)


def test_exact_search_equals_brute_force_with_and_without_self():
    ref = _clustered(1_500, 8, 0)
    ref[10] = ref[11] = ref[12]                              # exact duplicates: leave-one-out distance 0
    q = _clustered(300, 8, 1)
    D = cdist(q.astype(np.float64), ref.astype(np.float64))
    d, i = nearest(ref, q, method="exact")
    np.testing.assert_allclose(d, D.min(axis=1), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(i, D.argmin(axis=1))
    Dr = cdist(ref.astype(np.float64), ref.astype(np.float64))
    np.fill_diagonal(Dr, np.inf)
    d_loo, _ = nearest(ref, ref, method="exact", exclude_self=True)
    np.testing.assert_allclose(d_loo, Dr.min(axis=1), rtol=1e-4, atol=1e-3)
    assert d_loo[10] == d_loo[11] == d_loo[12] == 0
    d3 = nearest(ref, q, k=3, method="exact")[0]
    np.testing.assert_allclose(d3, np.sort(D, axis=1)[:, 2], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", ["ivf", "hnsw"])
def test_approximate_index_recall_and_never_closer_than_exact(method):
    ref = _clustered(20_000 if method == "ivf" else 8_000, 16, 2)
    rng = np.random.default_rng(3)
    q = np.r_[ref[rng.choice(len(ref), 250, replace=False)] + 0.01, _clustered(250, 16, 4)]
    d_ex, _ = nearest(ref, q, method="exact")
    d_ap, i_ap = nearest(ref, q, method=method)
    assert np.all(d_ap >= d_ex * (1 - 1e-4) - 1e-4)          # an approximate index can only miss
    assert recall_at_1(d_ex, d_ap) >= 0.9
    # near-copies (the memorisation case) are found
    assert recall_at_1(d_ex[:250], d_ap[:250]) >= 0.98
    d_loo, _ = nearest(ref, ref[:500], method=method, exclude_self=True)
    assert np.all(np.isfinite(d_loo)) and np.all(d_loo > 0)   # the row itself is never its own neighbour


def test_auto_switches_to_ivf_above_the_threshold_and_bad_method():
    import faiss

    ref = _clustered(5_000, 4, 5)
    assert isinstance(build_index(ref, "auto", exact_below=10_000), faiss.IndexFlatL2)
    assert isinstance(build_index(ref, "auto", exact_below=1_000), faiss.IndexIVFFlat)
    with pytest.raises(InputError, match="ann"):
        build_index(ref, "kdtree")


def test_localize_with_ivf_finds_the_planted_memorised_rows():
    from actors.validation.localize import localize, precision_at_k
    from actors.validation.planted import plant

    pair = plant(case="memorised", severity="high", dataset="wine", n=3_000, seed=1)
    exact = localize(pair.real, pair.synth, ann="exact")
    approx = localize(pair.real, pair.synth, ann="ivf")
    p_exact = precision_at_k(exact.scores["memorised"], pair.rows)
    p_approx = precision_at_k(approx.scores["memorised"], pair.rows)
    assert p_exact >= 0.9 and p_approx >= p_exact - 0.02
    overlap = np.intersect1d(exact.flagged["memorised"], approx.flagged["memorised"])
    assert len(overlap) >= 0.95 * len(exact.flagged["memorised"])


def test_leave_one_out_on_a_subset_of_rows_matches_brute_force():
    ref = _clustered(3_000, 6, 8)
    ref[5] = ref[6]                                          # a duplicate pair
    ids = np.r_[5, np.random.default_rng(0).choice(np.arange(7, 3_000), 200, replace=False)]
    Dr = cdist(ref[ids].astype(np.float64), ref.astype(np.float64))
    Dr[np.arange(len(ids)), ids] = np.inf
    for k in (1, 5):
        d, _ = nearest(ref, ref[ids], k=k, method="exact", exclude_self=ids)
        np.testing.assert_allclose(d, np.sort(Dr, axis=1)[:, k - 1], rtol=1e-4, atol=1e-3)
    assert nearest(ref, ref[ids], method="exact", exclude_self=ids)[0][0] == 0


def test_localize_null_subsample_keeps_the_memorised_rows():
    from actors.validation.localize import localize, precision_at_k
    from actors.validation.planted import plant

    pair = plant(case="memorised", severity="high", dataset="wine", n=3_000, seed=2)
    full = localize(pair.real, pair.synth)                   # 3 000 real rows: every row in the null
    sub = localize(pair.real, pair.synth, null_rows=500)
    assert precision_at_k(sub.scores["memorised"], pair.rows) >= precision_at_k(full.scores["memorised"], pair.rows) - 0.02
    assert len(np.setdiff1d(full.flagged["memorised"], sub.flagged["memorised"])) <= 0.05 * len(full.flagged["memorised"])
