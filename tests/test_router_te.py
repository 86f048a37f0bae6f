"""The router's TE routing signal (actors/router/te_signal.py) and its ablation (te_ablation.py,
`jobs.route_eval --te-ablation`): the feature's TE equals the TE engine's value on the same series,
the engine's TE on a coupled AR process against the Gaussian closed form and ~0 on an independent one,
the online stream's energies against the router's own terms / energies / boltzmann, the ablation's
plumbing (weight 0 -> identical runs, the planted switch, the table), bad input naming its field."""
from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest

from actors.common.errors import InputError, UnknownName
from actors.router.boltzmann import boltzmann
from actors.router.config import RouteEvalSpec, TEFeatureConfig
from actors.router.data import RouteData
from actors.router.energy import energies
from actors.router.evaluate import STRONG, WEAK, fit_all, prepare
from actors.router.online import online_stream
from actors.router.te_ablation import (
    METHODS,
    SCENARIOS,
    ablation_markdown,
    choose_planted,
    plant,
    run_te_ablation,
)
from actors.router.te_signal import TEFeature, advantage_surprise, check_config, pair_te, window_te
from actors.te import transfer_entropy
from jobs import cli, route_eval


def _coupled_ar(n: int, c: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x iid N(0, 1); y[t+1] = 0.5 y[t] + c x[t] + e (e ~ N(0, 1)); z the same AR without x."""
    rng = np.random.default_rng(seed)
    x, e, e2 = rng.normal(size=n), rng.normal(size=n), rng.normal(size=n)
    y, z = np.zeros(n), np.zeros(n)
    for t in range(n - 1):
        y[t + 1] = 0.5 * y[t] + c * x[t] + e[t + 1]
        z[t + 1] = 0.5 * z[t] + e2[t + 1]
    return x, y, z


def test_engine_te_on_a_coupled_ar_matches_the_closed_form_and_an_independent_one_is_zero():
    # y[t+1] | y[t] has variance c^2 + 1, | y[t], x[t] variance 1: TE(x -> y) = 0.5 ln(1 + c^2) (Gaussian)
    cfg = TEFeatureConfig()
    c = 0.5
    exact = 0.5 * np.log(1 + c * c)                       # 0.1116 nats
    coupled, indep = [], []
    for seed in range(3):
        x, y, z = _coupled_ar(1500, c, seed)
        coupled.append(pair_te(x, y, cfg))
        indep.append(pair_te(x, z, cfg))
    assert abs(np.mean(coupled) - exact) < 0.03, (coupled, exact)      # KSG bias + spread at n = 1500
    assert all(v > 0.06 for v in coupled)
    assert abs(np.mean(indep)) < 0.015 and max(abs(v) for v in indep) < 0.03, indep


def test_feature_te_equals_the_engine_on_the_same_window():
    cfg = TEFeatureConfig(window=60, every=5, smooth=6)
    feat = TEFeature(3, cfg)
    rng = np.random.default_rng(3)
    s = np.concatenate([rng.normal(0.5, 1, 70), rng.normal(-0.5, 1, 70)])
    for t, v in enumerate(s):
        feat.observe(1, v)
        feat.observe(0, rng.normal())                     # another domain: its own window
        if t + 1 < cfg.window:
            assert feat.te[1] == 0 and feat.value(1) == (0 if t + 1 < cfg.smooth else feat.gate(1) * feat.recent(1))
    assert len(feat.windows[1]) == cfg.window
    checked = 0
    for dom, seen, te in feat.history:
        if dom != 1:
            continue
        win = s[seen - cfg.window:seen]
        q = pd.Series(win).rolling(cfg.smooth, min_periods=1).mean().to_numpy()   # independent trailing mean
        ref = transfer_entropy(q[cfg.smooth - 1:], win[cfg.smooth - 1:], k=cfg.k, k_hist=cfg.k_hist,
                               delay=cfg.delay, seed=cfg.seed).te
        assert te == pytest.approx(ref, abs=1e-12)
        checked += 1
    assert checked == 1 + (len(s) - cfg.window) // cfg.every
    d1 = [h for h in feat.history if h[0] == 1][-1]
    assert feat.te[1] == d1[2]
    assert feat.gate(1) == pytest.approx(np.clip(feat.te[1] / cfg.te_scale, 0, 1))
    assert feat.recent(1) == pytest.approx(s[-cfg.smooth:].mean())
    assert feat.value(1) == pytest.approx(feat.gate(1) * s[-cfg.smooth:].mean())
    always = TEFeature(3, cfg, gate_mode="always")
    for v in s[:10]:
        always.observe(2, v)
    assert always.gate(2) == 1.0 and always.value(2) == pytest.approx(s[10 - cfg.smooth:10].mean())
    assert not always.history                             # the TE-free control never estimates TE


def test_window_te_is_larger_on_a_switching_domain_than_on_a_stationary_one():
    cfg = TEFeatureConfig()
    rng = np.random.default_rng(0)
    sw, iid = [], []
    for _ in range(8):
        level = np.where(((np.arange(400) + rng.integers(0, 100)) // 50) % 2 == 0, 0.6, -0.6)
        sw.append(window_te(level + rng.normal(size=400), cfg))
        iid.append(window_te(rng.normal(size=400), cfg))
    assert np.mean(sw) > 0.03 and abs(np.mean(iid)) < 0.02, (np.mean(sw), np.mean(iid))
    assert window_te(np.ones(100), cfg) == 0.0            # a constant window carries no information
    assert advantage_surprise(STRONG, STRONG, 1.0, 0.8) == pytest.approx(0.2)
    assert advantage_surprise(WEAK, STRONG, 1.0, 0.8) == pytest.approx(-0.2)


def test_short_window_and_bad_input_name_their_field(tmp_path, capsys):
    with pytest.raises(InputError) as e:
        cli.load_spec(RouteEvalSpec, None, {"te.window": 10})
    assert e.value.field == "te.window" and ">= 27" in str(e.value)
    with pytest.raises(InputError) as e:
        check_config(TEFeatureConfig.model_construct(**(TEFeatureConfig().model_dump() | {"window": 5})))
    assert e.value.field == "te.window"
    with pytest.raises(InputError) as e:
        window_te(np.arange(20.0), TEFeatureConfig())
    assert e.value.field == "te.window"
    with pytest.raises(InputError) as e:
        cli.load_spec(RouteEvalSpec, None, {"ablations": ["energy_te"]})      # TE methods learn online only
    assert e.value.field == "online"
    with pytest.raises(InputError) as e:
        TEFeature(2, TEFeatureConfig(), gate_mode="sometimes")
    assert e.value.field == "gate_mode"
    with pytest.raises(UnknownName) as e:
        online_stream(None, np.zeros(1), np.zeros(1, int), np.ones(1), np.zeros((1, 2)), "thompson",
                      TEFeatureConfig(), np.random.default_rng(0))
    assert e.value.field == "method"
    bad = tmp_path / "x.parquet"
    _frame(40).to_parquet(bad)
    assert route_eval.main(["--data", str(bad), "--out", str(tmp_path / "o"), "--te-ablation",
                            "--set", "te.window=12"]) == 2
    assert "te.window" in capsys.readouterr().err


# ---- the online stream and the ablation ------------------------------------------------------------------
def _frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for b in ("alpha", "beta"):
        for i in range(n):
            rows.append({"prompt_id": f"{b}/{i}", "route_id": f"{b}/{i}", "benchmark": b, "category": f"c{i % 3}",
                         "prompt": f"{b} question {i}", "strong_score": float(rng.random() > 0.25),
                         "weak_score": float(rng.random() > 0.45), "contaminated": False, "source_row": i})
    return pd.DataFrame(rows)


def _prepared(n: int = 150, seed: int = 0):
    frame = _frame(n, seed)
    rng = np.random.default_rng(seed + 100)
    centres = rng.normal(size=(4, 384))
    E = centres[np.arange(len(frame)) % 4] + 0.5 * rng.normal(size=(len(frame), 384))   # 4 clusters
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    return prepare(RouteData(frame=frame, files=("x",)), E, np.full(len(frame), 30.0))


def _spec(**te_ablation) -> RouteEvalSpec:
    return RouteEvalSpec(domains={"n_domains": 4}, online=True, eval={"n_bootstrap": 0},
                         te={"window": 40, "every": 4, "weight": 2.0},
                         te_ablation={"seeds": 2, "n_stream": 300, "period": 100, "planted_domains": 2,
                                      "n_bootstrap": 5} | te_ablation)


def test_online_stream_energies_equal_the_router_reference_and_learn_from_the_chosen_reward_only():
    prep, spec = _prepared(), _spec()
    base = fit_all(prep, spec)
    p, d = base.features(prep.E)
    idx = np.random.default_rng(1).integers(0, p.size, 160)
    for method in ("energy", "energy_t0", "energy_te"):
        router = copy.deepcopy(base)
        run = online_stream(router, p[idx], d[idx], prep.n_tokens[idx], prep.reward[idx], method, spec.te,
                            np.random.default_rng(2))
        ref = copy.deepcopy(base)
        T = 0.0 if method == "energy_t0" else spec.energy.temperature
        for t, i in enumerate(idx):
            en = energies(ref.terms(p[i:i + 1], d[i:i + 1], prep.n_tokens[i:i + 1]), ref.weights)
            en[0, STRONG] -= spec.te.weight * run.feature_values[t]
            assert run.scores[t] == pytest.approx(boltzmann(en, T).p[0, STRONG], abs=1e-12)
            assert run.rewards[t] == prep.reward[i, run.choices[t]]
            ref.feedback(int(run.choices[t]), int(d[i]), float(run.rewards[t]))
        np.testing.assert_array_equal(ref.posterior.alpha, router.posterior.alpha)
        np.testing.assert_array_equal(ref.posterior.beta, router.posterior.beta)
        if method == "energy_te":
            assert run.feature is not None and run.feature.history and np.any(run.feature_values != 0)
        else:
            assert run.feature is None and not np.any(run.feature_values)


def test_planted_domains_are_the_most_frequent_up_to_the_share():
    dom = np.repeat([0, 1, 2, 3], [50, 30, 15, 5])
    np.testing.assert_array_equal(choose_planted(dom, 5, 4, 0.5), [0])             # 0: 50 %; 1 would pass 50 %
    np.testing.assert_array_equal(choose_planted(dom, 5, 2, 0.4), [1, 3])          # 0 too big: 1 (30 %), 3 (5 %)
    np.testing.assert_array_equal(choose_planted(dom, 5, 4, 0.01), [3])            # none fits: the least frequent


def test_plant_switches_the_chosen_domains_in_odd_blocks():
    rng = np.random.default_rng(0)
    reward = rng.random((50, 2))
    dom = rng.integers(0, 3, 50)
    out, regime = plant(reward, dom, np.array([1]), 10, "swap")
    hit = (np.arange(50) // 10 % 2 == 1) & (dom == 1)
    np.testing.assert_array_equal(regime, hit.astype(int))
    np.testing.assert_array_equal(out[hit], reward[hit][:, ::-1])
    np.testing.assert_array_equal(out[~hit], reward[~hit])
    down, _ = plant(reward, dom, np.array([1]), 10, "weak_down")
    assert np.all(down[hit, WEAK] == 0) and np.array_equal(down[hit, STRONG], reward[hit, STRONG])
    with pytest.raises(InputError) as e:
        plant(reward, dom, np.array([1]), 10, "flip")
    assert e.value.field == "te_ablation.kind"


def test_ablation_with_zero_weight_gives_identical_methods_and_a_complete_table():
    prep = _prepared()
    spec = _spec()
    zero = spec.model_copy(update={"te": spec.te.model_copy(update={"weight": 0.0})})
    res = run_te_ablation(prep, zero)
    for b, r in res["benchmarks"].items():
        for sc in SCENARIOS:
            x = r["scenarios"][sc]
            for m in ("energy_te", "energy_recency"):
                assert x[m]["per_seed"] == x["energy"]["per_seed"], (b, sc, m)   # same stream, same draws
                assert x[m]["minus_energy"]["apgr"] == 0
    res = run_te_ablation(prep, spec)
    assert set(res["benchmarks"]) == {"alpha", "beta"}
    r = res["benchmarks"]["alpha"]["scenarios"]
    assert set(r) == set(SCENARIOS) and set(METHODS) <= set(r["planted"])
    assert r["planted"]["energy_recency"]["per_seed"] != r["planted"]["energy"]["per_seed"]
    for m in METHODS:
        lo, hi = r["planted"][m]["ci"]["apgr"]
        assert lo <= hi and len(r["planted"][m]["per_seed"]) == 2
    md = ablation_markdown(res)
    assert md.count("| alpha | stationary | energy") == 3 and md.count("| alpha | planted | energy") == 3 and "energy + TE feature" in md and "TE values" in md
    json.dumps(res)                                        # JSON-able as written by the job


def test_job_te_ablation_end_to_end(tmp_path, monkeypatch, capsys):
    data = tmp_path / "toy.parquet"
    _frame(150).to_parquet(data)
    monkeypatch.setattr(route_eval, "prepare_routes", lambda d, spec: _prepared(150))   # no encoder in CI
    out = tmp_path / "run"
    argv = ["--data", str(data), "--out", str(out), "--te-ablation", "--set", "domains.n_domains=4",
            "te.window=40", "te.every=4", "te_ablation.seeds=2", "te_ablation.n_stream=300", "te_ablation.period=100",
            "te_ablation.n_bootstrap=3"]
    assert route_eval.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["headline"]["alpha"]) == set(SCENARIOS)
    res = json.loads((out / "te_ablation.json").read_text())
    assert res["protocol"]["seeds"] == 2 and res["protocol"]["te"]["window"] == 40
    assert "| beta | planted | energy + TE feature |" in (out / "te_ablation.md").read_text()
    capsys.readouterr()
    assert route_eval.main(argv[:-1] + ["te_ablation.n_bootstrap=4"]) == 2         # another run, same dir
    assert "out" in capsys.readouterr().err
