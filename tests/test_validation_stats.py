"""Each validation statistic against an independent reference (scipy, sklearn, the TE subsystem's KSG)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial.distance import cdist, jensenshannon

from actors.validation.data import pool
from actors.validation.detector import benjamini_hochberg, dcr, max_t
from actors.validation.stats import (
    Context,
    auc_from_scores,
    correlation,
    coverage,
    divergence,
    ksg_mi_batch,
    marginals,
    spectral,
)


@pytest.fixture(scope="module")
def ctx() -> Context:
    """Mixed table: continuous, tied integers, a column with NaN, a 3-level category; unequal sizes."""
    rng = np.random.default_rng(7)

    def table(n, shift):
        x = rng.normal(shift, 1, n)
        y = 0.7 * x + rng.normal(0, 1, n)
        t = rng.integers(0, 5, n).astype(float)
        m = rng.gamma(2, 1 + shift, n)
        m[rng.random(n) < 0.1 + shift / 2] = np.nan
        cat = rng.choice(["a", "b", "c"], n, p=[0.5, 0.3 + shift / 4, 0.2 - shift / 4])
        return pd.DataFrame({"x": x, "y": y, "t": t, "m": m, "cat": cat})

    p = pool(table(300, 0.0), table(240, 0.3), n_bins=8)
    return Context(p, tail_quantile=0.05, n_pcs=3)


def groups(ctx, col):
    p = ctx.pooled
    j = p.numeric.index(col)
    r, s = p.X[~p.is_synth, j], p.X[p.is_synth, j]
    return r[~np.isnan(r)], s[~np.isnan(s)]


def counts(ctx, j, size):
    D, _, _ = ctx.discrete
    p = ctx.pooled
    return (np.bincount(D[~p.is_synth, j], minlength=size).astype(float),
            np.bincount(D[p.is_synth, j], minlength=size).astype(float))


def test_ks_wasserstein_match_scipy(ctx):
    out = marginals(ctx, ctx.pooled.is_synth)
    for c in ("x", "t", "m"):
        r, s = groups(ctx, c)
        assert out[f"ks:{c}"] == pytest.approx(stats.ks_2samp(r, s).statistic, abs=1e-12)
        sd = np.nanstd(ctx.pooled.X[:, ctx.pooled.numeric.index(c)])
        assert out[f"wasserstein:{c}"] == pytest.approx(stats.wasserstein_distance(r, s) / sd, rel=1e-9)
    miss = np.isnan(ctx.pooled.X[:, ctx.pooled.numeric.index("m")])
    gap = abs(miss[ctx.pooled.is_synth].mean() - miss[~ctx.pooled.is_synth].mean())
    assert out["missing:m"] == pytest.approx(gap)


def test_chi2_matches_scipy(ctx):
    out = marginals(ctx, ctx.pooled.is_synth)
    p = ctx.pooled
    table = pd.crosstab(p.is_synth, p.C[:, 0]).to_numpy()
    ref = stats.chi2_contingency(table, correction=False).statistic
    assert out["chi2:cat"] == pytest.approx(ref, rel=1e-10)


def test_js_kl_entropy_match_scipy(ctx):
    div = divergence(ctx, ctx.pooled.is_synth)
    cov = coverage(ctx, ctx.pooled.is_synth)
    _, sizes, names = ctx.discrete
    for j, c in enumerate(names):
        cr, cs = counts(ctx, j, sizes[j])
        assert div[f"js:{c}"] == pytest.approx(jensenshannon(cr, cs), abs=1e-10)
        assert div[f"kl:{c}"] == pytest.approx(stats.entropy(cr + 0.5, cs + 0.5), rel=1e-10)
        assert cov[f"entropy:{c}"] == pytest.approx(abs(stats.entropy(cs) - stats.entropy(cr)), abs=1e-10)
    assert cov["coverage:cat"] == 0.0   # every real category is present in the synthetic group


def test_variance_and_tails_against_numpy(ctx):
    cov = coverage(ctx, ctx.pooled.is_synth)
    j = ctx.pooled.numeric.index("m")
    lo, hi = np.nanquantile(ctx.pooled.X[:, j], [0.05, 0.95])
    r, s = groups(ctx, "m")
    assert cov["variance:m"] == pytest.approx(abs(np.log(s.var() / r.var())), rel=1e-9)
    tr, ts = ((r < lo) | (r > hi)).mean(), ((s < lo) | (s > hi)).mean()
    assert cov["tails:m"] == pytest.approx(abs(np.log((ts + 1 / len(s)) / (tr + 1 / len(r)))), rel=1e-9)


def test_correlation_components_match_numpy_and_scipy(ctx):
    p = ctx.pooled
    out = correlation(ctx, p.is_synth)
    Zr, Zs = p.Z[~p.is_synth], p.Z[p.is_synth]
    dp = np.abs(np.corrcoef(Zr.T) - np.corrcoef(Zs.T))
    R = stats.rankdata(p.Z, axis=0)          # ranks over the pooled rows, then Pearson per group
    ds = np.abs(np.corrcoef(R[~p.is_synth].T) - np.corrcoef(R[p.is_synth].T))
    k = len(p.numeric) - 1
    for j, c in enumerate(p.numeric):
        assert out[f"pearson:{c}"] == pytest.approx(dp[j].sum() / k, abs=1e-10)
        assert out[f"spearman:{c}"] == pytest.approx(ds[j].sum() / k, abs=1e-10)
    # Cramér's V of the category against every other (binned) column, one group at a time
    D, _, names = ctx.discrete
    a = names.index("cat")
    gaps = []
    for b in range(len(names)):
        if b != a:
            v = [stats.contingency.association(pd.crosstab(D[g, a], D[g, b]).to_numpy(), method="cramer")
                 for g in (~p.is_synth, p.is_synth)]
            gaps.append(abs(v[0] - v[1]))
    assert out["cramer:cat"] == pytest.approx(np.mean(gaps), abs=1e-10)


def test_spectrum_matches_sklearn_pca(ctx):
    from sklearn.decomposition import PCA

    p = ctx.pooled
    out = spectral(ctx, p.is_synth)
    evr = [PCA(3).fit(p.Z[g]).explained_variance_ratio_ for g in (~p.is_synth, p.is_synth)]
    assert out["spectrum:*"] == pytest.approx(np.abs(evr[0] - evr[1]).sum(), abs=1e-10)
    tot = [np.var(p.Z[g], axis=0, ddof=1).sum() for g in (~p.is_synth, p.is_synth)]
    assert out["total_variance:*"] == pytest.approx(abs(np.log(tot[1] / tot[0])), rel=1e-9)
    from scipy.linalg import subspace_angles

    V = [PCA(3).fit(p.Z[g]).components_.T for g in (~p.is_synth, p.is_synth)]
    assert out["subspace:*"] == pytest.approx(np.sum(np.sin(subspace_angles(*V)) ** 2), abs=1e-9)


def test_ksg_batch_equals_te_mutual_information_and_gaussian_truth():
    from actors.te import mutual_information

    rng = np.random.default_rng(3)
    rho = np.array([0.0, 0.5, 0.8])
    x = rng.standard_normal((3, 400))
    y = rho[:, None] * x + np.sqrt(1 - rho[:, None] ** 2) * rng.standard_normal((3, 400))
    got = ksg_mi_batch(x, y, 4)
    ref = [mutual_information(x[i], y[i], k=4, normalise=False, noise=0).value for i in range(3)]
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)
    draws = [got]
    for _ in range(4):
        x = rng.standard_normal((3, 400))
        y = rho[:, None] * x + np.sqrt(1 - rho[:, None] ** 2) * rng.standard_normal((3, 400))
        draws.append(ksg_mi_batch(x, y, 4))
    # closed form for Gaussians; one estimate at n=400 has sd ~0.04-0.05, the mean of 5 ~0.02
    np.testing.assert_allclose(np.mean(draws, axis=0), -0.5 * np.log(1 - rho ** 2), atol=0.06)


def test_auc_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.random(500) < 0.4
    s = np.round(rng.normal(y * 0.7, 1), 1)          # rounded: ties
    assert auc_from_scores(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_faiss_dcr_matches_brute_force():
    rng = np.random.default_rng(1)
    ref, q = rng.normal(size=(300, 6)), rng.normal(size=(120, 6))
    q[:10] = ref[:10]                                                  # exact copies
    d, i = dcr(ref, q)
    full = cdist(q, ref)
    np.testing.assert_array_equal(i, full.argmin(axis=1))
    np.testing.assert_allclose(d, full.min(axis=1), atol=2e-3)
    assert np.all(d[:10] < 1e-3)
    d_loo, i_loo = dcr(ref, ref, exclude_self=True)
    self_d = cdist(ref, ref) + np.diag(np.full(300, np.inf))
    np.testing.assert_array_equal(i_loo, self_d.argmin(axis=1))
    np.testing.assert_allclose(d_loo, self_d.min(axis=1), atol=2e-3)


def test_benjamini_hochberg_matches_scipy():
    rng = np.random.default_rng(2)
    for _ in range(20):
        p = np.r_[rng.uniform(size=15), rng.uniform(0, 0.01, size=rng.integers(0, 6))]
        ref = stats.false_discovery_control(p, method="bh") <= 0.05
        np.testing.assert_array_equal(benjamini_hochberg(p, 0.05), ref)


def test_max_t_adjusted_p_values_follow_their_definition():
    rng = np.random.default_rng(4)
    null = rng.normal(size=(199, 5)) * [1, 2, 3, 4, 5]
    obs = np.array([0.0, 5.0, 0.5, 30.0, 1.0])
    score, p, comps, t_null = max_t(list("abcde"), obs, null)
    ref = np.vstack([obs, null])            # the observed value is part of the standardisation
    z = (obs - ref.mean(0)) / ref.std(0, ddof=1)
    tmax = ((null - ref.mean(0)) / ref.std(0, ddof=1)).max(axis=1)
    for name, zi in zip("abcde", z):
        assert comps[name]["p_adjusted"] == pytest.approx((1 + (tmax >= zi).sum()) / 200)
    assert score == pytest.approx(z.max()) and p == pytest.approx(1 / 200)
