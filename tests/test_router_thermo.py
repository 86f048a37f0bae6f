"""Router thermodynamics (actors/router: posterior, energy, boltzmann, schedules, bandit) against
independent references: scipy.stats.beta, a direct float64 / mpmath Boltzmann sum, closed-form schedules,
the exact moments of the Fokker-Planck SDE (Monte Carlo tolerances from the standard error), and the
online mode's regret and drift detection on seeded synthetic and replayed RouteLLM streams."""
from __future__ import annotations

import math
from pathlib import Path

import mpmath
import numpy as np
import pytest
from scipy import stats

from actors.common.errors import InputError
from actors.router.bandit import (
    BanditStream,
    PageHinkley,
    ThompsonRouter,
    regret_slope,
    replay,
    replay_stream,
    synthetic_stream,
)
from actors.router.boltzmann import (
    AdaptiveSchedule,
    boltzmann,
    exponential_schedule,
    fokker_planck_moments,
    fokker_planck_paths,
    geometric_ladder,
    logarithmic_schedule,
    replica_exchange_schedule,
    sample,
    swap_probability,
)
from actors.router.energy import EnergyTerms, EnergyWeights, energies, fit_weights
from actors.router.posterior import BetaPosterior


# ---------------------------------------------------------------- posterior
def test_beta_posterior_conjugate_updates_and_scipy_summaries():
    rng = np.random.default_rng(1)
    post = BetaPosterior(3, 4, prior_alpha=1.0, prior_beta=2.0, models=["a", "b", "c"])
    alpha = np.full((3, 4), 1.0)
    beta = np.full((3, 4), 2.0)
    for _ in range(200):
        m, d, r = int(rng.integers(3)), int(rng.integers(4)), float(rng.random() < 0.3)
        post.update(["a", "b", "c"][m] if m == 1 else m, d, r)
        alpha[m, d] += r
        beta[m, d] += 1 - r
    np.testing.assert_array_equal(post.alpha, alpha)
    np.testing.assert_array_equal(post.beta, beta)
    np.testing.assert_allclose(post.mean(), stats.beta.mean(alpha, beta), rtol=1e-14)
    np.testing.assert_allclose(post.var(), stats.beta.var(alpha, beta), rtol=1e-12)
    lo, hi = post.interval(0.95)
    slo, shi = stats.beta.interval(0.95, alpha, beta)
    np.testing.assert_allclose(lo, slo, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(hi, shi, rtol=1e-12, atol=1e-15)


def test_beta_posterior_batch_update_thompson_and_roundtrip():
    a = BetaPosterior(2, 3)
    b = BetaPosterior(2, 3)
    ms, ds, rs = [0, 1, 1, 0, 1], [2, 0, 0, 1, 2], [1.0, 0.0, 0.5, 1.0, 1.0]
    for m, d, r in zip(ms, ds, rs):
        a.update(m, d, r)
    b.update_many(ms, ds, rs)
    np.testing.assert_array_equal(a.alpha, b.alpha)
    np.testing.assert_array_equal(a.beta, b.beta)
    draws = np.stack([a.thompson(np.random.default_rng(s)) for s in range(4000)])
    # Thompson draws are Beta(alpha, beta): mean within 4 standard errors
    se = np.sqrt(a.var() / draws.shape[0])
    assert np.all(np.abs(draws.mean(axis=0) - a.mean()) < 4 * se)
    c = BetaPosterior.from_state(a.state())
    np.testing.assert_array_equal(c.alpha, a.alpha)


def test_beta_posterior_discount_forgets_toward_prior():
    post = BetaPosterior(1, 1, discount=0.5)
    for _ in range(60):
        post.update(0, 0, 1.0)
    # alpha - 1 follows x <- 0.5 x + 1 -> fixed point 2
    assert post.alpha[0, 0] == pytest.approx(3.0, abs=1e-12)
    assert post.beta[0, 0] == pytest.approx(1.0)


@pytest.mark.parametrize("call, field", [
    (lambda: BetaPosterior(0, 1), "n_models"),
    (lambda: BetaPosterior(2, 1, prior_alpha=-1), "prior_alpha"),
    (lambda: BetaPosterior(2, 1).update(0, 0, float("nan")), "reward"),
    (lambda: BetaPosterior(2, 1).update(5, 0, 1.0), "model"),
    (lambda: BetaPosterior(2, 1, models=["x", "y"]).update("z", 0, 1.0), "model"),
    (lambda: BetaPosterior(2, 1).update(0, 3, 1.0), "domain"),
    (lambda: BetaPosterior(2, 1).interval(1.5), "confidence"),
])
def test_beta_posterior_bad_input_names_field(call, field):
    with pytest.raises(InputError) as err:
        call()
    assert err.value.field == field


# ---------------------------------------------------------------- energy
def _terms(n: int, k: int, seed: int) -> EnergyTerms:
    rng = np.random.default_rng(seed)
    return EnergyTerms(cost=rng.gamma(2.0, 1.0, (n, k)), quality=rng.random((n, k)),
                       latency=rng.exponential(1.0, (n, k)), uncertainty=rng.random((n, k)) * 0.3,
                       context_mismatch=(rng.random((n, k)) < 0.2).astype(float))


def test_energies_formula():
    t = _terms(7, 3, 0)
    w = EnergyWeights(w_cost=0.5, w_quality=2.0, w_latency=0.1, w_uncertainty=3.0, w_context=1.5)
    expect = 0.5 * t.cost - 2.0 * t.quality + 0.1 * t.latency + 3.0 * t.uncertainty + 1.5 * t.context_mismatch
    np.testing.assert_allclose(energies(t, w), expect, rtol=0, atol=1e-15)
    np.testing.assert_allclose(t.stacked() @ w.as_array(), expect, atol=1e-14)


def test_fit_weights_recovers_planted_weights():
    n, k = 6000, 4
    terms = _terms(n, k, 3)
    planted = EnergyWeights(w_cost=0.8, w_quality=3.0, w_latency=0.5, w_uncertainty=2.0, w_context=1.2)
    d = boltzmann(energies(terms, planted), 1.0)
    chosen = sample(d, np.random.default_rng(4))
    fit = fit_weights(terms, chosen, init=EnergyWeights(1, 1, 1, 1, 1))
    assert fit.converged, fit.grad_norm
    got, want = fit.weights.as_array(), planted.as_array()
    assert np.all(np.isfinite(fit.stderr)) and np.all(fit.stderr < 0.2 * np.abs(want))
    z = (got - want) / fit.stderr
    assert np.all(np.abs(z) < 4.0), (got, want, fit.stderr)
    assert all(b <= a + 1e-12 for a, b in zip(fit.loss, fit.loss[1:]))   # monotone descent


def test_fit_weights_soft_targets_equal_to_model_is_fixed_point():
    terms = _terms(500, 3, 5)
    w = EnergyWeights(1.0, 2.0, 0.3, 0.7, 0.2)
    q = boltzmann(energies(terms, w), 1.0).p
    fit = fit_weights(terms, q, init=EnergyWeights(0.5, 0.5, 0.5, 0.5, 0.5), tol=1e-10)
    np.testing.assert_allclose(fit.weights.as_array(), w.as_array(), atol=1e-5)


@pytest.mark.parametrize("make, field", [
    (lambda: EnergyTerms(cost=np.zeros((3, 0)), quality=np.zeros((3, 0))), "K"),
    (lambda: EnergyTerms(cost=np.array([[1.0, np.nan]]), quality=np.zeros((1, 2))), "cost"),
    (lambda: EnergyTerms(cost=np.zeros((1, 2)), quality=np.zeros((1, 3))), "quality"),
    (lambda: EnergyWeights(w_cost=float("inf")), "w_cost"),
    (lambda: fit_weights(_terms(4, 2, 0), np.array([0, 1, 2, 0])), "outcomes"),
    (lambda: fit_weights(_terms(4, 2, 0), np.array([0, 1, 1, 0]), T=0.0), "T"),
])
def test_energy_bad_input_names_field(make, field):
    with pytest.raises(InputError) as err:
        make()
    assert err.value.field == field


# ---------------------------------------------------------------- boltzmann
def _mp_reference(e_row, T):
    """log Z, F, S, p of one row with mpmath at 50 digits (an independent oracle)."""
    mpmath.mp.dps = 50
    w = [mpmath.exp(-mpmath.mpf(float(e)) / T) for e in e_row]
    Z = mpmath.fsum(w)
    p = [x / Z for x in w]
    S = -mpmath.fsum(q * mpmath.log(q) for q in p if q > 0)
    return float(mpmath.log(Z)), float(-T * mpmath.log(Z)), float(S), [float(q) for q in p]


@pytest.mark.parametrize("T", [0.05, 0.7, 3.0, 50.0])
def test_boltzmann_against_direct_float64_and_mpmath(T):
    rng = np.random.default_rng(7)
    E = rng.normal(0, 2, (20, 16))
    d = boltzmann(E, T)
    for i in range(E.shape[0]):
        w = np.exp(-(E[i] - E[i].min()) / T)   # direct float64 sum (shifted: finite at small T)
        Z = w.sum()
        logZ = math.log(Z) - E[i].min() / T
        p = w / Z
        np.testing.assert_allclose(d.p[i], p, rtol=1e-12, atol=1e-300)
        assert d.log_Z[i] == pytest.approx(logZ, rel=1e-12, abs=1e-12)
        assert d.free_energy[i] == pytest.approx(-T * logZ, rel=1e-12, abs=1e-12)
        lz, F, S, pm = _mp_reference(E[i], T)
        assert d.log_Z[i] == pytest.approx(lz, rel=1e-13, abs=1e-13)
        assert d.free_energy[i] == pytest.approx(F, rel=1e-13, abs=1e-13)
        assert d.entropy[i] == pytest.approx(S, rel=1e-10, abs=1e-13)
        np.testing.assert_allclose(d.p[i], pm, rtol=1e-11, atol=1e-300)
    # thermodynamic identity S = (U - F) / T
    np.testing.assert_allclose(d.entropy, (d.mean_energy - d.free_energy) / T, rtol=1e-9, atol=1e-11)


def test_boltzmann_limits_and_per_row_temperature():
    E = np.array([[3.0, 1.0, 2.0], [0.5, 0.5, 2.0], [-1.0, 4.0, -1.0], [0.0, 1.0, 0.0]])
    d = boltzmann(E, 0.0)
    np.testing.assert_array_equal(d.p, [[0, 1, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0.5, 0, 0.5]])
    np.testing.assert_allclose(d.entropy, [0, math.log(2), math.log(2), math.log(2)])
    np.testing.assert_allclose(d.free_energy, [1.0, 0.5, -1.0, 0.0])
    assert d.log_Z[0] == -np.inf and d.log_Z[2] == np.inf and d.log_Z[3] == pytest.approx(math.log(2))
    # T -> 0+ converges to the T = 0 answer
    np.testing.assert_allclose(boltzmann(E, 1e-4).p, d.p, atol=1e-12)
    # T -> inf: uniform, S = ln K
    hot = boltzmann(E, 1e9)
    np.testing.assert_allclose(hot.entropy, math.log(3), rtol=1e-8)
    # a vector of temperatures equals row-by-row calls
    Ts = np.array([0.0, 0.3, 1.0, 7.0])
    dv = boltzmann(E, Ts)
    for i, T in enumerate(Ts):
        np.testing.assert_array_equal(dv.p[i], boltzmann(E[i], T).p[0])
    # extreme energies do not overflow
    big = boltzmann(np.array([[1e300, -1e300]]), 1e-3)
    np.testing.assert_array_equal(big.p, [[0.0, 1.0]])


def test_sample_frequencies_match_p():
    E = np.tile(np.array([[0.0, 0.5, 1.0, 3.0]]), (40000, 1))
    d = boltzmann(E, 0.8)
    counts = np.bincount(sample(d, np.random.default_rng(0)), minlength=4) / E.shape[0]
    se = np.sqrt(d.p[0] * (1 - d.p[0]) / E.shape[0])
    assert np.all(np.abs(counts - d.p[0]) < 4 * se)


@pytest.mark.parametrize("E, T, field", [
    (np.zeros((2, 0)), 1.0, "K"),
    (np.array([[1.0, np.nan]]), 1.0, "E"),
    (np.array([[1.0, 2.0]]), -1.0, "T"),
    (np.array([[1.0, 2.0]]), float("nan"), "T"),
    (np.array([[1.0, 2.0]]), [1.0, 2.0], "T"),
])
def test_boltzmann_bad_input_names_field(E, T, field):
    with pytest.raises(InputError) as err:
        boltzmann(E, T)
    assert err.value.field == field


# ---------------------------------------------------------------- schedules
def test_exponential_and_logarithmic_closed_forms():
    T = exponential_schedule(5.0, 0.1, 50, dt=0.5)
    rec = [5.0]
    for _ in range(50):
        rec.append(rec[-1] * math.exp(-0.05))   # one step of cooling by e^{-gamma dt}
    np.testing.assert_allclose(T, rec, rtol=1e-12)
    L = logarithmic_schedule(2.0, 1000, k0=3.0)
    assert L[0] == pytest.approx(2.0)
    # T_k ln(k + k0) is the constant T0 ln k0
    np.testing.assert_allclose(L * np.log(np.arange(1001) + 3.0), 2.0 * math.log(3.0), rtol=1e-13)
    assert np.all(np.diff(L) < 0)


def test_fokker_planck_sde_without_noise_is_exponential():
    paths = fokker_planck_paths(3.0, 0.2, 0.0, 40, 0.25, 3, seed=0)
    np.testing.assert_allclose(paths, np.tile(exponential_schedule(3.0, 0.2, 40, dt=0.25), (3, 1)), rtol=1e-13)


@pytest.mark.parametrize("method, n_paths", [("exact", 40000), ("euler", 40000)])
def test_fokker_planck_sde_moments(method, n_paths):
    T0, gamma, eta, dt, n = 2.0, 0.5, 0.8, 0.01, 200
    paths = fokker_planck_paths(T0, gamma, eta, n, dt, n_paths, seed=11, method=method)
    assert np.all(paths >= 0)
    again = fokker_planck_paths(T0, gamma, eta, n, dt, n_paths, seed=11, method=method)
    np.testing.assert_array_equal(paths, again)   # seeded
    t = np.arange(n + 1) * dt
    mean, var = fokker_planck_moments(T0, gamma, eta, t)
    for k in (50, 100, 200):
        x = paths[:, k]
        se_mean = x.std(ddof=1) / math.sqrt(n_paths)
        # Euler's weak error is O(dt) in the mean; the drift is linear, so the Euler mean is exact up
        # to the (1 - gamma dt)^k vs e^{-gamma t} discretisation: allow that bias explicitly
        bias = abs(T0 * (1 - gamma * dt) ** k - mean[k]) if method == "euler" else 0.0
        assert abs(x.mean() - mean[k]) < 4 * se_mean + bias, (k, x.mean(), mean[k], se_mean)
        # variance: standard error of the sample variance from the fourth central moment
        m4 = np.mean((x - x.mean()) ** 4)
        se_var = math.sqrt(max(m4 - x.var() ** 2, 0) / n_paths)
        tol = 4 * se_var + (0.05 * var[k] if method == "euler" else 0.0)
        assert abs(x.var(ddof=1) - var[k]) < tol, (k, x.var(), var[k], se_var)


def test_adaptive_schedule_reaches_target_acceptance():
    # uphill moves dE ~ Exp(lam): E[min(1, e^{-dE/T})] = lam T / (lam T + 1) -> T* = a / (lam (1 - a))
    lam, target = 2.0, 0.3
    t_star = target / (lam * (1 - target))
    finals = []
    for seed in range(16):
        rng = np.random.default_rng(seed)
        sched = AdaptiveSchedule(5.0, target, gain=1.0, decay=0.7, burn_in=2000)
        for _ in range(12000):
            dE = rng.exponential(1 / lam)
            sched.update(float(rng.random() < math.exp(-dE / sched.T)))
        finals.append(sched.average)
    finals = np.array(finals)
    se = finals.std(ddof=1) / math.sqrt(finals.size)
    assert se < 0.03 * t_star
    assert abs(finals.mean() - t_star) < 4 * se + 0.01 * t_star, (finals.mean(), t_star, se)


def test_geometric_ladder_and_replica_exchange_acceptance_moments():
    T = geometric_ladder(0.5, 8.0, 5)
    np.testing.assert_allclose(T[1:] / T[:-1], (16.0) ** 0.25, rtol=1e-13)
    assert T[0] == pytest.approx(0.5) and T[-1] == pytest.approx(8.0)
    # K-state energies; each round draws fresh exact samples at each temperature
    levels = np.array([0.0, 0.3, 1.0, 1.1, 2.5, 4.0])
    betas = 1 / T
    P = boltzmann(np.tile(levels, (len(T), 1)), T).p       # [R, K]
    rng = np.random.default_rng(2)
    n_rounds = 40000
    idx = np.stack([rng.choice(len(levels), size=n_rounds, p=P[i]) for i in range(len(T))], axis=1)
    _, st = replica_exchange_schedule(levels[idx], betas, seed=3)
    for i in range(len(T) - 1):
        acc = swap_probability(betas[i], betas[i + 1], levels[:, None], levels[None, :])
        exact = float(P[i] @ acc @ P[i + 1])
        se = math.sqrt(exact * (1 - exact) / st.attempts[i])
        assert abs(st.acceptance[i] - exact) < 4 * se, (i, st.acceptance[i], exact)
    assert st.round_trips > 100
    assert np.all(np.diff(st.up_fraction) <= 1e-12)   # flow: up-labelled share falls from cold to hot


@pytest.mark.parametrize("call, field", [
    (lambda: exponential_schedule(-1.0, 0.1, 10), "T0"),
    (lambda: logarithmic_schedule(1.0, 10, k0=1.0), "k0"),
    (lambda: AdaptiveSchedule(1.0, 1.5), "target"),
    (lambda: fokker_planck_paths(1.0, 0.1, 0.1, 10, 0.1, method="rk4"), "method"),
    (lambda: fokker_planck_paths(1.0, float("nan"), 0.1, 10, 0.1), "gamma"),
    (lambda: geometric_ladder(1.0, 0.5, 4), "T_max"),
    (lambda: geometric_ladder(1.0, 2.0, 0), "n_replicas"),
])
def test_schedule_bad_input_names_field(call, field):
    with pytest.raises(InputError) as err:
        call()
    assert err.value.field == field


# ---------------------------------------------------------------- bandit (online mode)
MEANS = np.array([[0.55, 0.40, 0.70, 0.30],      # model 0 (cheap) per domain
                  [0.75, 0.60, 0.72, 0.50],
                  [0.85, 0.80, 0.74, 0.65]])     # model 2 (dear)
COSTS = np.array([0.0, 0.1, 0.3])
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "routellm"


@pytest.mark.parametrize("cost_weight", [0.0, 0.5])
def test_thompson_regret_is_sublinear_on_synthetic_stream(cost_weight):
    stream = synthetic_stream(20000, MEANS, seed=0)
    res = replay(stream, ThompsonRouter(3, 4, costs=COSTS, cost_weight=cost_weight, seed=1))
    slope = regret_slope(res.cumulative_regret)
    assert slope < 0.9, slope
    # a uniformly random router's expected regret is linear: the learned router is far below it
    util = stream.true_means - cost_weight * COSTS
    random_regret = float((util.max(axis=1) - util.mean(axis=1)).sum())
    assert res.cumulative_regret[-1] < 0.1 * random_regret
    # bandit feedback: the router saw only the called model's reward
    np.testing.assert_array_equal(res.rewards, stream.rewards[np.arange(20000), res.choices])


def test_thompson_regret_is_sublinear_on_replayed_routellm_mmlu():
    import pandas as pd

    path = DATA / "mmlu.parquet"
    assert path.exists(), f"shared data missing: {path} (the CI checkout keeps ../shared/data beside the repo)"
    df = pd.read_parquet(path)
    df = df[~df["contaminated"]]
    _, domain = np.unique(df["category"].to_numpy(), return_inverse=True)
    rewards = df[["weak_score", "strong_score"]].to_numpy()
    stream = replay_stream(rewards, domain, seed=0, n=30000)
    res = replay(stream, ThompsonRouter(2, int(domain.max()) + 1, costs=[0.0, 1.0], cost_weight=0.15, seed=0))
    assert regret_slope(res.cumulative_regret) < 0.9


def test_drift_detection_flags_planted_change_with_short_delay():
    t0, model, domain = 10000, 2, 1                  # the best model of domain 1 falls from 0.85 to 0.30
    delays, gains = [], []
    for seed in range(3):
        stream = synthetic_stream(20000, MEANS, seed=seed, change=(t0, model, domain, 0.3))
        clean = synthetic_stream(20000, MEANS, seed=seed)
        watched = replay(stream, ThompsonRouter(3, 4, costs=COSTS, cost_weight=0.5, seed=1, drift=PageHinkley()))
        blind = replay(stream, ThompsonRouter(3, 4, costs=COSTS, cost_weight=0.5, seed=1))
        quiet = replay(clean, ThompsonRouter(3, 4, costs=COSTS, cost_weight=0.5, seed=1, drift=PageHinkley()))
        assert quiet.alarms == []                     # no false alarm in 20000 requests without a change
        assert all(a.t >= t0 for a in watched.alarms)
        hit = [a for a in watched.alarms if (a.model, a.domain) == (model, domain)]
        assert hit, watched.alarms
        seen = (np.arange(20000) >= t0) & (stream.domains == domain) & (watched.choices == model)
        delays.append(int(seen[:hit[0].t + 1].sum()))   # observations of the changed pair until the alarm
        gains.append((blind.cumulative_regret[-1] - blind.cumulative_regret[t0 - 1])
                     / (watched.cumulative_regret[-1] - watched.cumulative_regret[t0 - 1]))
    print(f"detection delays (observations of the changed pair): {delays}; regret after change, "
          f"blind / with detection: {np.round(gains, 2)}")
    assert max(delays) < 100
    assert min(gains) > 2.0


def test_page_hinkley_on_deterministic_step():
    ph = PageHinkley(delta=0.1, threshold=5.0, min_obs=1)
    assert not any(ph.update(0.8) for _ in range(200))
    # after the step to 0.2, the down-sum grows by about (0.8 - 0.2 - 0.1) per observation while the
    # running mean still sits near 0.8: the alarm comes after about 5 / 0.5 = 10 observations
    n = next(i for i in range(1, 100) if ph.update(0.2))
    assert 9 <= n <= 13


@pytest.mark.parametrize("call, field", [
    (lambda: BanditStream(domains=np.zeros(3, int), rewards=np.zeros((3, 0)), true_means=np.zeros((3, 0))), "K"),
    (lambda: BanditStream(domains=np.zeros(1, int), rewards=[[np.nan, 1.0]], true_means=[[0.5, 0.5]]), "rewards"),
    (lambda: BanditStream(domains=np.array([-1]), rewards=[[0.0, 1.0]], true_means=[[0.5, 0.5]]), "domains"),
    (lambda: ThompsonRouter(2, 1, costs=[0.0, 1.0], cost_weight=-1.0), "cost_weight"),
    (lambda: ThompsonRouter(2, 1, costs=[0.0, float("nan")]), "costs"),
    (lambda: ThompsonRouter(0, 1), "n_models"),
    (lambda: PageHinkley(threshold=0.0), "threshold"),
    (lambda: synthetic_stream(10, MEANS, change=(20, 0, 0, 0.5)), "change"),
    (lambda: replay(synthetic_stream(10, MEANS), ThompsonRouter(2, 4)), "K"),
])
def test_bandit_bad_input_names_field(call, field):
    with pytest.raises(InputError) as err:
        call()
    assert err.value.field == field


def test_boltzmann_of_an_empty_batch_and_of_mixed_temperatures():
    from scipy.special import logsumexp

    empty = boltzmann(np.zeros((0, 3)), 1.0)
    assert empty.p.shape == (0, 3) and empty.log_Z.shape == (0,)
    E = np.array([[1.0, 2.0, 1.0], [0.3, -0.2, 0.1]])
    d = boltzmann(E, np.array([0.0, 0.7]))                      # one cold row (the argmin, ties shared), one hot
    np.testing.assert_array_equal(d.p[0], [0.5, 0.0, 0.5])
    assert d.log_Z[0] == -np.inf and d.entropy[0] == pytest.approx(math.log(2))
    assert d.log_Z[1] == pytest.approx(logsumexp(-E[1] / 0.7), rel=1e-14)
    hot = boltzmann(E, 0.7)                                      # the all-hot path equals the mixed one's hot row
    np.testing.assert_allclose(hot.p[1], d.p[1], rtol=1e-14)
    assert hot.free_energy[1] == pytest.approx(d.free_energy[1], rel=1e-14)
