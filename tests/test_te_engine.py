"""Transfer-entropy engine (CPU path): oracle equality, analytic values, calibration, networks, errors.

References are independent of the code under test: kernels/te/reference.py (brute-force O(n^2)
KSG written from the definitions), explicit embedding loops, closed forms for Gaussian processes,
and planted networks. Sizes are kept small so the module runs in well under a minute on 2 cores.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from actors.common.errors import InputError
from actors.te.config import NetworkConfig, RagwitzConfig, SignificanceConfig, TEParams
from actors.te.embedding import prepare, te_embedding
from actors.te.engine import (
    check_inputs,
    conditional_mutual_information,
    mutual_information,
    prepare_te,
    te_significance,
    transfer_entropy,
)
from actors.te.ksg import ksg_cmi
from actors.te.network import PairResult, assemble_network, auto_embeddings, pair_params, te_network
from actors.te.ragwitz import ragwitz
from actors.te.significance import fdr_bh, max_statistic, p_value, surrogate_orders
from kernels.te.reference import reference_cmi, reference_te_embedding


def coupled_ar(T: int, *, a: float = 0.5, c: float = 0.5, sigma: float = 1.0, lag: int = 1,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """X iid N(0,1); Y[t+1] = a Y[t] + c X[t+1-lag] + eps, Var eps = sigma^2."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(T)
    e = rng.standard_normal(T) * sigma
    y = np.zeros(T)
    for t in range(T - 1):
        y[t + 1] = a * y[t] + (c * x[t + 1 - lag] if t + 1 - lag >= 0 else 0.0) + e[t + 1]
    return x, y


def analytic_te(c: float, sigma: float) -> float:
    """TE of the linear Gaussian pair above: 1/2 ln((c^2 + sigma^2) / sigma^2)."""
    return 0.5 * np.log1p(c**2 / sigma**2)


# ---- fast path == brute-force oracle ---------------------------------------------------------------
@pytest.mark.parametrize("algorithm", [1, 2])
@pytest.mark.parametrize("theiler", [0, 3])
@pytest.mark.parametrize("dims", [(1, 1, 1), (2, 1, 3), (1, 2, 0)])
def test_fast_counts_equal_oracle_on_random_data(algorithm, theiler, dims):
    rng = np.random.default_rng(hash((algorithm, theiler, dims)) % 2**32)
    n = 300
    x, y, z = (rng.standard_normal((n, d)) for d in dims)
    for k in (1, 4, 7):
        fast = ksg_cmi(x, y, z, k=k, theiler=theiler, algorithm=algorithm)
        ref = reference_cmi(x, y, z, k=k, theiler=theiler, algorithm=algorithm)
        np.testing.assert_array_equal(fast.n_xz, ref["n_xz"])
        np.testing.assert_array_equal(fast.n_yz, ref["n_yz"])
        np.testing.assert_array_equal(fast.n_z, ref["n_z"])
        np.testing.assert_array_equal(fast.eps, ref["eps"])
        assert abs(fast.value - ref["local"].mean()) < 1e-9
        np.testing.assert_allclose(fast.local, ref["local"], rtol=0, atol=1e-12)


def test_algorithm2_blocked_candidates_equal_oracle(monkeypatch):
    """Small candidate blocks force the sorted-range expansion of algorithm 2 across many blocks."""
    import actors.te.ksg as ksg

    monkeypatch.setattr(ksg, "_PAIRS", 700)
    rng = np.random.default_rng(17)
    x, y, z = rng.standard_normal((400, 2)), rng.standard_normal((400, 1)), rng.standard_normal((400, 1))
    fast = ksg_cmi(x, y, z, k=4, theiler=2, algorithm=2)
    ref = reference_cmi(x, y, z, k=4, theiler=2, algorithm=2)
    for c in ("n_xz", "n_yz", "n_z"):
        np.testing.assert_array_equal(getattr(fast, c), ref[c])
    assert abs(fast.value - ref["local"].mean()) < 1e-9


def test_fast_counts_equal_oracle_with_ties_and_no_noise():
    """Integer data without noise: many distances equal eps exactly, so '<' vs '<=' is exercised."""
    rng = np.random.default_rng(7)
    n = 250
    x, y, z = (rng.integers(0, 4, size=(n, d)).astype(float) for d in (1, 1, 2))
    for k, theiler in ((1, 0), (4, 0), (4, 2), (10, 1)):
        fast = ksg_cmi(x, y, z, k=k, theiler=theiler, algorithm=1)
        ref = reference_cmi(x, y, z, k=k, theiler=theiler, algorithm=1)
        for c in ("n_xz", "n_yz", "n_z"):
            np.testing.assert_array_equal(getattr(fast, c), ref[c])
        assert abs(fast.value - ref["local"].mean()) < 1e-9


def test_transfer_entropy_equals_oracle_end_to_end():
    """Full pipeline (checks, embedding, z-scoring, KSG) against loops + numpy + the oracle."""
    x, y = coupled_ar(400, c=0.8, seed=3)
    p = {"k_hist": 2, "k_tau": 2, "l_hist": 2, "l_tau": 1, "delay": 2, "k": 5, "theiler": 1, "noise": 0.0}
    got = transfer_entropy(x, y, **p)
    xs, ys, zs = reference_te_embedding(x, y, k_hist=2, k_tau=2, l_hist=2, l_tau=1, delay=2)
    zscore = [(b - b.mean(0)) / b.std(0, ddof=1) for b in (xs, ys, zs)]
    ref = reference_cmi(*zscore, k=5, theiler=1)
    assert got.n_obs == len(ys) == 400 - 1 - 2
    np.testing.assert_array_equal(got.ksg.n_xz, ref["n_xz"])
    assert abs(got.te - ref["local"].mean()) < 1e-9


@pytest.mark.parametrize("algorithm", [1, 2])
def test_prepared_blocks_with_noise_match_oracle(algorithm):
    """With the default noise on, the fast estimate on the prepared blocks equals the oracle's."""
    x, y = coupled_ar(500, c=0.5, seed=11)
    z2 = np.random.default_rng(12).standard_normal(500)
    p = TEParams(k_hist=2, algorithm=algorithm)
    src, tgt, conds = check_inputs(x, y, [z2])
    prep = prepare_te(src, tgt, conds, p, [1])
    got = transfer_entropy(x, y, conditionals=[z2], params=p)
    ref = reference_cmi(prep.x[1], prep.y, prep.z, k=4, algorithm=algorithm)
    np.testing.assert_array_equal(got.ksg.n_yz, ref["n_yz"])
    assert abs(got.te - ref["local"].mean()) < 1e-9


@pytest.mark.parametrize("emb", [dict(), dict(k_hist=3, k_tau=2), dict(l_hist=2, l_tau=3, delay=4),
                                 dict(k_hist=2, k_tau=1, l_hist=3, l_tau=2, delay=1)])
def test_embedding_matches_explicit_loops(emb):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(60), rng.standard_normal(60)
    got = te_embedding(x, y, params=TEParams(**emb))
    xs, ys, zs = reference_te_embedding(x, y, **emb)
    np.testing.assert_array_equal(got.x, xs)
    np.testing.assert_array_equal(got.y, ys)
    np.testing.assert_array_equal(got.z, zs)


def test_noise_is_seeded_and_scaled_by_std():
    block = np.random.default_rng(0).standard_normal((5000, 2)) * [3.0, 0.01]
    raw = prepare(block, normalise=False, noise=1e-3, rng=np.random.default_rng(5))
    again = prepare(block, normalise=False, noise=1e-3, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(raw, again)
    ratio = (raw - block).std(axis=0) / (1e-3 * block.std(axis=0, ddof=1))
    np.testing.assert_allclose(ratio, 1.0, atol=0.05)
    off = prepare(block, normalise=True, noise=0.0, rng=np.random.default_rng(5))
    np.testing.assert_allclose(off.std(axis=0, ddof=1), 1.0)


def test_local_values_average_to_te_and_align_with_times():
    x, y = coupled_ar(800, seed=2)
    res = transfer_entropy(x, y, k_hist=2)
    assert res.local.shape == res.times.shape == (res.n_obs,)
    assert res.te == pytest.approx(res.local.mean(), abs=1e-12)
    assert res.times[0] == 2 and res.times[-1] == 799


# ---- analytic values ---------------------------------------------------------------------------------
@pytest.mark.parametrize("c", [0.5, 1.0])
def test_te_matches_gaussian_closed_form(c):
    """Y[t+1] = 0.5 Y[t] + c X[t] + eps: TE(X->Y) = 1/2 ln(1 + c^2), TE(Y->X) = 0, T = 10^4."""
    expected = analytic_te(c, 1.0)  # 0.111572 for c=0.5, 0.346574 for c=1
    forward, backward = [], []
    for seed in (101, 102, 103):
        x, y = coupled_ar(10_000, c=c, seed=seed)
        forward.append(transfer_entropy(x, y).te)
        backward.append(transfer_entropy(y, x).te)
    assert np.max(np.abs(np.array(forward) - expected)) < 0.02, (forward, expected)
    assert np.max(np.abs(backward)) < 0.02, backward


def test_reverse_direction_not_significant_forward_is():
    x, y = coupled_ar(2000, c=0.5, seed=5)
    sig = {"n_surrogates": 49, "seed": 3}
    fwd = te_significance(x, y, significance=sig)
    rev = te_significance(y, x, significance=sig)
    assert fwd.p_value == pytest.approx(1 / 50) and fwd.te > 0.08
    assert rev.p_value > 0.05


@pytest.mark.parametrize("algorithm", [1, 2])
def test_ksg_mi_matches_gaussian_closed_form(algorithm):
    rng = np.random.default_rng(21)
    for rho in (0.0, 0.6, 0.9):
        xy = rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], size=4000)
        got = mutual_information(xy[:, 0], xy[:, 1], algorithm=algorithm).value
        assert got == pytest.approx(-0.5 * np.log(1 - rho**2), abs=0.03), (rho, got)


def test_conditional_te_removes_common_driver():
    """Z drives X at lag 1 and Y at lag 2: X's past predicts Y, but not once Z's past is known."""
    rng = np.random.default_rng(4)
    T = 3000
    z = rng.standard_normal(T)
    x, y = np.zeros(T), np.zeros(T)
    x[1:] = z[:-1] + 0.5 * rng.standard_normal(T - 1)
    y[2:] = z[:-2] + 0.5 * rng.standard_normal(T - 2)
    bivariate = transfer_entropy(x, y).te
    conditional = transfer_entropy(x, y, conditionals=[z], cond_delay=2).te
    assert bivariate > 0.3
    assert abs(conditional) < 0.03
    cmi = conditional_mutual_information(x[1:-1], y[2:], z[:-2]).value
    assert abs(cmi) < 0.03


def test_lag_search_recovers_planted_delay():
    x, y = coupled_ar(1500, c=0.8, lag=3, seed=9)
    res = te_significance(x, y, lags=[1, 2, 3, 4, 5], significance={"n_surrogates": 19})
    assert res.lag == 3
    assert res.te_by_lag[3] > 0.15 and max(v for u, v in res.te_by_lag.items() if u != 3) < 0.05
    assert res.p_value == pytest.approx(1 / 20)


def test_integer_data_ties_are_broken_by_noise():
    """Documented behaviour: on tied (integer) data without noise eps_i = 0, every count is 0 and the
    estimate is psi(k) - psi(1) for any coupling; the default 1e-8 noise breaks the ties."""
    rng = np.random.default_rng(8)
    x = rng.integers(0, 4, 2000).astype(float)
    copy = np.concatenate([[0.0], x[:-1]])            # Y[t+1] = X[t]
    indep = rng.integers(0, 4, 2000).astype(float)
    degenerate = 1 + 1 / 2 + 1 / 3                      # psi(4) - psi(1)
    assert transfer_entropy(x, copy, noise=0).te == pytest.approx(degenerate)
    assert transfer_entropy(x, indep, noise=0).te == pytest.approx(degenerate)
    assert transfer_entropy(x, copy).te == pytest.approx(np.log(4), abs=0.05)   # H(X) of 4 equiprobable values
    assert abs(transfer_entropy(x, indep).te) < 0.06
    assert te_significance(x, indep, significance={"n_surrogates": 19}).p_value > 0.05


# ---- significance ------------------------------------------------------------------------------------
def test_null_p_values_are_uniform():
    """Independent AR(1) pairs: surrogate p-values ~ U(0, 1) (KS test) and ~5% below 0.05."""
    ps = []
    for seed in range(40):
        rng = np.random.default_rng(1000 + seed)
        x = rng.standard_normal(150)
        e = rng.standard_normal(150)
        y = np.zeros(150)
        for t in range(149):
            y[t + 1] = 0.6 * y[t] + e[t + 1]
        ps.append(te_significance(x, y, significance={"n_surrogates": 39, "seed": seed}, seed=seed).p_value)
    ps = np.array(ps)
    assert stats.kstest(ps, "uniform").pvalue > 0.01, np.sort(ps)
    assert np.mean(ps <= 0.05) <= 0.15


def test_circular_shift_surrogates():
    cfg = SignificanceConfig(n_surrogates=50, method="circular")
    orders = surrogate_orders(100, cfg, np.random.default_rng(0))
    shifts = (orders[:, 0]) % 100
    np.testing.assert_array_equal(orders, (np.arange(100)[None, :] + shifts[:, None]) % 100)
    assert shifts.min() >= 10 and shifts.max() <= 90
    x, y = coupled_ar(800, c=0.7, seed=1)
    assert te_significance(x, y, significance=cfg).p_value == pytest.approx(1 / 51)


def test_p_value_and_corrections_by_hand():
    assert p_value(0.3, np.array([0.1, 0.3, 0.5, 0.2])) == pytest.approx(3 / 5)
    assert p_value(1.0, np.zeros(99)) == pytest.approx(0.01)
    # max-statistic: pair 0's surrogates never reach 0.9; pair 1 (0.2) is exceeded by most maxima
    obs = np.array([0.9, 0.2])
    surr = np.array([[0.1, 0.3, 0.2], [0.25, 0.1, 0.15]])   # per-surrogate maxima 0.25, 0.3, 0.2
    np.testing.assert_allclose(max_statistic(obs, surr), [1 / 4, 4 / 4])
    # Benjamini-Hochberg, worked example: m = 5, alpha = 0.05, thresholds 0.01 0.02 0.03 0.04 0.05
    reject, adj = fdr_bh(np.array([0.04, 0.001, 0.03, 0.2, 0.012]), alpha=0.05)
    np.testing.assert_array_equal(reject, [True, True, True, False, True])
    np.testing.assert_allclose(adj, [0.05, 0.005, 0.05, 0.2, 0.03])


# ---- networks ------------------------------------------------------------------------------------------
def planted_network(T: int, seed: int) -> tuple[np.ndarray, set[tuple[str, str]]]:
    """Drivers 0-2 are iid; sinks 3-5 are AR(1) driven at lag 1. Every non-edge has TE exactly 0."""
    edges = {(0, 3): 0.8, (1, 4): 0.8, (2, 5): 0.8, (0, 4): 0.6}
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((T, 6))
    d = np.zeros((T, 6))
    for t in range(T - 1):
        d[t + 1, :3] = e[t + 1, :3]
        d[t + 1, 3:] = 0.5 * d[t, 3:] + e[t + 1, 3:]
        for (i, j), c in edges.items():
            d[t + 1, j] += c * d[t, i]
    return d, {(f"v{i}", f"v{j}") for i, j in edges}


def test_network_recovers_planted_edges():
    data, truth = planted_network(500, seed=31)
    cfg = NetworkConfig(correction="max", significance=SignificanceConfig(n_surrogates=40))
    net = te_network(data, [f"v{i}" for i in range(6)], cfg)
    found = set(net.graph.edges)
    tp = len(found & truth)
    precision, recall = tp / max(len(found), 1), tp / len(truth)
    assert precision >= 0.95 and recall >= 0.95, (sorted(found), net.table)
    for s, t in found:
        attrs = net.graph.edges[s, t]
        assert attrs["lag"] == 1 and attrs["p_value"] <= 0.05 and attrs["te"] > 0.05
    assert len(net.table) == 30 and list(net.edges().columns) == ["source", "target", "te", "p_value", "lag"]
    # the uncorrected test at the same alpha admits at least as many edges as the max-statistic one
    assert (net.table["p_raw"] <= 0.05).sum() >= len(found)


def test_network_fdr_and_none_corrections_decide_edges():
    """assemble_network with BH: decisions follow fdr_bh on the raw p-values, edges carry them."""
    rng = np.random.default_rng(0)
    p_raw = [0.001, 0.04, 0.03, 0.2, 0.012, 0.5]
    pairs = [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]
    results = [PairResult(source=i, target=j, te=0.1, lag=1, p_raw=p, surrogates=rng.random(10),
                          te_by_lag={1: 0.1}, n_obs=100) for (i, j), p in zip(pairs, p_raw)]
    fdr = assemble_network(results, ["a", "b", "c"], NetworkConfig(correction="fdr"))
    reject, adjusted = fdr_bh(np.array(p_raw), 0.05)
    assert set(fdr.graph.edges) == {("abc"[i], "abc"[j]) for (i, j), r in zip(pairs, reject) if r}
    np.testing.assert_allclose(fdr.table["p_value"], adjusted)
    none = assemble_network(results, ["a", "b", "c"], NetworkConfig(correction="none"))
    assert set(none.graph.edges) == {("abc"[i], "abc"[j]) for (i, j), p in zip(pairs, p_raw) if p <= 0.05}


def test_ragwitz_finds_henon_embedding():
    x = np.zeros(2100)
    x[0], x[1] = 0.1, 0.2
    for t in range(1, 2099):
        x[t + 1] = 1 - 1.4 * x[t] ** 2 + 0.3 * x[t - 1]
    emb = ragwitz(x[100:], RagwitzConfig(k_range=(1, 4), tau_range=(1, 3)))
    assert (emb.hist, emb.tau) == (2, 1)
    assert emb.errors[(2, 1)] < 0.1 * emb.errors[(1, 1)]


def test_network_auto_embedding_sets_each_pairs_histories():
    """Ragwitz per column feeds k_hist/k_tau of every pair with that destination (and l_* if asked)."""
    x = np.zeros(1100)
    x[0], x[1] = 0.1, 0.2
    for t in range(1, 1099):
        x[t + 1] = 1 - 1.4 * x[t] ** 2 + 0.3 * x[t - 1]
    data = np.column_stack([x[100:], np.random.default_rng(0).standard_normal(1000)])
    cfg = NetworkConfig(ragwitz=RagwitzConfig(k_range=(1, 3), tau_range=(1, 2), source=True))
    emb = auto_embeddings(data, cfg)
    assert emb[0] == (2, 1)
    p = pair_params(cfg, 1, 0, emb)
    assert (p.k_hist, p.k_tau, p.l_hist, p.l_tau) == (2, 1, *emb[1])
    assert pair_params(cfg, 1, 0, emb).seed == p.seed != pair_params(cfg, 0, 1, emb).seed


# ---- bad input -------------------------------------------------------------------------------------------
_GOOD = np.random.default_rng(0).standard_normal(200)


@pytest.mark.parametrize("call, field, allowed", [
    (lambda: transfer_entropy(_GOOD[:3], _GOOD[:3] + 1, k_hist=3), "source", ">= 8 samples"),
    (lambda: transfer_entropy(np.r_[_GOOD[:-1], np.nan], _GOOD), "source", "finite"),
    (lambda: transfer_entropy(_GOOD, np.r_[_GOOD[:-1], np.inf]), "target", "finite"),
    (lambda: transfer_entropy(np.ones(200), _GOOD), "source", "nonzero variance"),
    (lambda: transfer_entropy(_GOOD, _GOOD[:150]), "target", "200 samples"),
    (lambda: transfer_entropy(_GOOD, _GOOD, conditionals=[_GOOD[:10]]), "conditionals[0]", "200 samples"),
    (lambda: transfer_entropy(_GOOD[:20], _GOOD[:20], k=19), "k", "1 <= k <= "),
    (lambda: transfer_entropy(_GOOD[:30], _GOOD[:30], theiler=14), "k", "1 <= k <= "),
    (lambda: transfer_entropy(_GOOD, _GOOD, k_hist=0), "k_hist", ">= 1"),
    (lambda: transfer_entropy(_GOOD, _GOOD, l_hist=-1), "l_hist", ">= 1"),
    (lambda: transfer_entropy(_GOOD, _GOOD, delay=0), "delay", ">= 1"),
    (lambda: transfer_entropy(_GOOD, _GOOD, k_tau=0), "k_tau", ">= 1"),
    (lambda: transfer_entropy(_GOOD, _GOOD, l_tau=0), "l_tau", ">= 1"),
    (lambda: transfer_entropy(_GOOD, _GOOD, k=0), "k", ">= 1"),
    (lambda: transfer_entropy(_GOOD, _GOOD, algorithm=3), "algorithm", "1 or 2"),
    (lambda: transfer_entropy(_GOOD, _GOOD, noise=-1.0), "noise", ">= 0"),
    (lambda: transfer_entropy(_GOOD.reshape(20, 10), _GOOD), "source", "1-D"),
    (lambda: mutual_information(_GOOD[:6], _GOOD[:6] ** 2, k=6), "k", "1 <= k <= 5"),
    (lambda: te_significance(_GOOD, _GOOD, significance={"n_surrogates": 0}), "significance.n_surrogates", ">= 1"),
    (lambda: te_significance(_GOOD, _GOOD, lags=[0, 1]), "lags", ">= 1"),
    (lambda: te_network(_GOOD[:, None]), "data", "N >= 2"),
])
def test_bad_input_raises_input_error_naming_field(call, field, allowed):
    with pytest.raises(InputError) as info:
        call()
    assert info.value.field == field
    assert allowed in (info.value.allowed or ""), info.value.allowed
