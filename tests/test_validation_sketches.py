"""Mergeable sketches against exact numpy / scipy values on data that fits in memory.

KLL ranks within the documented rank error, HLL within its 3-sd bounds, frequent-items counts within
eps * n, Chan-merged covariance to 1e-10, the same summary under every merge order, the full-data
comparison statistics against scipy on the whole tables, and the Ray Data path (slow) against the
in-process pass.
"""
from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.linalg import subspace_angles
from scipy.spatial.distance import jensenshannon

from actors.common.errors import InputError
from actors.validation.sketches import Moments, SketchConfig, TableSketch, merge_all
from actors.validation.streaming import compare, sketch_ks, summarize


def _table(n: int, seed: int, *, scale: float = 1.0, offset: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    z = rng.multivariate_normal([0, 0, 0], [[1, 0.6, 0.2], [0.6, 1, 0.3], [0.2, 0.3, 1]], size=n)
    return pd.DataFrame({
        "a": offset + scale * z[:, 0], "b": np.exp(z[:, 1]), "c": z[:, 2] * 5 + 1e6,   # large offset: stability
        "zipf": (rng.zipf(1.6, n) % 5_000).astype(str),           # ~thousands of values, heavy head
        "few": rng.choice(list("pqrs"), n, p=[0.5, 0.3, 0.15, 0.05]),
        "row": np.arange(n) + seed * 10**7})


def _parts(df: pd.DataFrame, cfg: SketchConfig, size: int) -> list[TableSketch]:
    return [TableSketch(cfg).update(df.iloc[i:i + size]) for i in range(0, len(df), size)]


@pytest.fixture(scope="module")
def data():
    return _table(60_000, 0)


def test_moments_merge_matches_numpy_covariance_to_1e10():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(20_000, 6)) @ rng.normal(size=(6, 6)) + rng.normal(0, 1e4, 6)
    X[rng.random(X.shape) < 0.001] = np.nan                       # the covariance is over complete rows
    cuts = np.sort(rng.choice(len(X), 30, replace=False))
    parts = [Moments.of(b) for b in np.split(X, cuts)]
    forward = parts[0]
    for p in parts[1:]:
        forward = forward.merge(p)
    backward = parts[-1]
    for p in parts[-2::-1]:
        backward = backward.merge(p)
    ok = X[~np.isnan(X).any(axis=1)]
    exact = np.cov(ok.T)
    for m in (forward, backward):
        assert m.n == len(ok)
        np.testing.assert_allclose(m.mean, ok.mean(axis=0), rtol=1e-12, atol=1e-10)
        np.testing.assert_allclose(m.covariance(), exact, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(m.correlation(), np.corrcoef(ok.T), atol=1e-10)


def test_kll_ranks_within_documented_error_under_any_merge_order(data):
    cfg = SketchConfig(k=200, seed=4)
    parts = _parts(data, cfg, 7_000)
    eps = parts[0].rank_error()
    assert 0.005 < eps < 0.02                                      # ~1.3 % at k = 200 (datasketches)
    orders = [parts, parts[::-1], [parts[i] for i in np.random.default_rng(0).permutation(len(parts))]]
    merged = [merge_all(o) for o in orders]
    for s in merged:
        for c in ("a", "b", "c"):
            x = np.sort(data[c].to_numpy())
            q = np.quantile(x, np.linspace(0.01, 0.99, 99))
            exact_rank = np.searchsorted(x, q, side="left") / len(x)
            sketch_rank = np.array([s.kll[c].get_rank(v) for v in q])
            assert np.max(np.abs(sketch_rank - exact_rank)) <= eps, c


def test_merge_order_gives_identical_sample_counts_and_moments(data):
    cfg = SketchConfig(reservoir=1_500, seed=7)
    parts = _parts(data, cfg, 5_000)
    perm = np.random.default_rng(1).permutation(len(parts))
    a = merge_all(parts)
    b = merge_all([parts[i] for i in perm])
    half = len(parts) // 2
    c = merge_all(parts[:half]).merge(merge_all(parts[half:]))     # a tree of merges
    for s in (b, c):
        assert s.n == a.n == len(data)
        pd.testing.assert_frame_equal(s.sample, a.sample)          # bottom-k: a function of the keys alone
        # co-moments of nearly uncorrelated columns cancel: compare on the correlation scale
        np.testing.assert_allclose(np.diag(s.moments.m2), np.diag(a.moments.m2), rtol=1e-10)
        np.testing.assert_allclose(s.moments.correlation(), a.moments.correlation(), atol=1e-10)
        assert s.missing == a.missing
        for col in ("zipf", "few"):   # same registers; the estimator after a union may differ (HIP vs composite)
            exact = data[col].nunique()
            for d in (s.distinct(col), a.distinct(col)):
                assert d["lower"] <= exact <= d["upper"]
    assert len(a.sample) == 1_500 and a.sample["row"].is_unique
    # the merged sample is the one a single pass over the same batches keeps
    single = TableSketch(cfg)
    for i in range(0, len(data), 5_000):
        single.update(data.iloc[i:i + 5_000])
    pd.testing.assert_frame_equal(single.sample, a.sample)
    # parts are not changed by merging
    assert parts[0].n == 5_000 and len(parts[0].sample) == 1_500


def test_hll_and_frequent_items_within_their_bounds(data):
    cfg = SketchConfig(hll_lg_k=12, freq_lg_max_k=6)                # capacity 48 items << distinct values
    s = merge_all(_parts(data, cfg, 9_000))
    n = len(data)
    for col in ("zipf", "few"):
        exact = data[col].nunique()
        d = s.distinct(col)
        assert d["lower"] <= exact <= d["upper"], (col, exact, d)
        assert abs(d["estimate"] - exact) <= 3 * 0.0163 * exact + 1e-9   # 1.04 / sqrt(2^12) per sd
    truth = data["zipf"].value_counts()
    hh = s.heavy_hitters("zipf")
    eps = s.freq["zipf"].epsilon
    assert len(hh) >= 3
    for v, est in hh.items():
        assert abs(est - truth[v]) <= eps * n
    # no false negatives: every value above the error threshold is reported
    assert set(truth[truth > eps * n].index) <= set(hh)
    assert s.heavy_hitters("few") == data["few"].value_counts().to_dict()


def test_compare_matches_scipy_on_the_whole_tables():
    real, synth = (t.drop(columns="row") for t in (_table(40_000, 1), _table(40_000, 2, scale=0.7, offset=0.3)))
    synth.loc[synth["few"] == "s", "few"] = "r"                       # a category drops out
    cfg = SketchConfig(k=400, freq_lg_max_k=12)                     # 'few' counted exactly
    r, s = merge_all(_parts(real, cfg, 8_000)), merge_all(_parts(synth, cfg, 6_000))
    out = compare(r, s, n_pcs=2)
    assert out["n_real"] == out["n_synth"] == 40_000
    for c in ("a", "b", "c"):
        exact = stats.ks_2samp(real[c], synth[c]).statistic
        assert abs(out["columns"][c]["ks"] - exact) <= out["ks_error_bound"]
    w = stats.wasserstein_distance(real["a"], synth["a"]) / real["a"].std()
    assert out["columns"]["a"]["wasserstein"] == pytest.approx(w, rel=0.05)
    assert out["columns"]["a"]["variance_ratio"] == pytest.approx(synth["a"].var() / real["a"].var(), rel=1e-9)
    assert out["columns"]["a"]["mean_shift_sd"] == pytest.approx(
        (synth["a"].mean() - real["a"].mean()) / real["a"].std(), rel=1e-9)
    # categorical: exact counts here, so chi-squared / JS equal scipy on the full contingency table
    T = pd.crosstab(np.r_[np.zeros(len(real)), np.ones(len(synth))], np.r_[real["few"], synth["few"]]).to_numpy()
    few = out["columns"]["few"]
    assert few["chi2"] == pytest.approx(stats.chi2_contingency(T, correction=False).statistic, rel=1e-9)
    assert few["js"] == pytest.approx(jensenshannon(T[0], T[1], base=2), rel=1e-9)
    assert few["distinct_synth"] == pytest.approx(3, abs=0.01) and few["distinct_real"] == pytest.approx(4, abs=0.01)
    # correlation and spectrum: from numpy on every row
    num = ["a", "b", "c"]
    dc = np.abs(np.corrcoef(real[num].to_numpy().T) - np.corrcoef(synth[num].to_numpy().T))
    assert out["correlation"]["max_abs_gap"] == pytest.approx(dc.max(), abs=1e-10)
    sd = real[num].std().to_numpy()
    covs = [np.cov(t[num].to_numpy().T) / np.outer(sd, sd) for t in (real, synth)]
    eig = [np.linalg.eigh(c) for c in covs]
    ev = [w[::-1][:2] / w.sum() for w, _ in eig]
    assert out["spectral"]["explained_variance_real"] == pytest.approx(list(ev[0]), abs=1e-9)
    assert out["spectral"]["explained_variance_gap"] == pytest.approx(np.abs(ev[0] - ev[1]).sum(), abs=1e-9)
    assert out["spectral"]["log_total_variance_ratio"] == pytest.approx(
        np.log(np.trace(covs[1]) / np.trace(covs[0])), abs=1e-9)
    angles = subspace_angles(eig[0][1][:, ::-1][:, :2], eig[1][1][:, ::-1][:, :2])
    assert out["spectral"]["subspace_sin2"] == pytest.approx(np.sum(np.sin(angles) ** 2), abs=1e-9)


def test_pickle_round_trip_and_column_kind_mismatch(data, tmp_path):
    s = merge_all(_parts(data.iloc[:20_000], SketchConfig(reservoir=300), 5_000))
    t = pickle.loads(pickle.dumps(s))
    assert t.n == s.n and t.kll["a"].get_quantile(0.5) == s.kll["a"].get_quantile(0.5)
    assert t.distinct("zipf") == s.distinct("zipf") and t.heavy_hitters("zipf") == s.heavy_hitters("zipf")
    pd.testing.assert_frame_equal(t.sample, s.sample)
    other = TableSketch(SketchConfig()).update(data.iloc[:100].assign(a=data["a"].iloc[:100].astype(str)))
    with pytest.raises(InputError, match="kinds differ"):
        s.merge(other)
    with pytest.raises(InputError, match="sketch.k"):
        SketchConfig(k=2)


@pytest.mark.slow
def test_ray_data_summary_equals_the_in_process_pass(ray_cluster, data, tmp_path):
    from actors.validation.raydata import summarize_ray

    path = tmp_path / "t.parquet"
    data.to_parquet(path, row_group_size=10_000)
    local = summarize(path, reservoir=800, batch_rows=10_000, seed=5)
    ray_s = summarize_ray(path, reservoir=800, batch_rows=10_000, seed=5)
    assert ray_s.n == local.n == len(data)
    np.testing.assert_allclose(ray_s.moments.covariance(), local.moments.covariance(), rtol=1e-10)
    assert ray_s.missing == local.missing
    assert len(ray_s.sample) == 800 and ray_s.sample["row"].is_unique
    assert ray_s.sample["row"].isin(data["row"]).all()
    # batches of 10 000 rows on 10 000-row row groups: the same batches, so the same keys and sample
    pd.testing.assert_frame_equal(ray_s.sample, local.sample, check_dtype=False)   # Ray Data: Arrow-backed dtypes
    eps = local.rank_error()
    for c in ("a", "b"):
        assert sketch_ks(ray_s.kll[c], local.kll[c]) <= 2 * eps      # both within eps of the exact CDF
    exact = data["zipf"].nunique()
    d = ray_s.distinct("zipf")
    assert d["lower"] <= exact <= d["upper"]
    assert ray_s.heavy_hitters("few") == local.heavy_hitters("few") == data["few"].value_counts().to_dict()
