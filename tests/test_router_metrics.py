"""RouteLLM's router metrics (actors/router/metrics.py) against a hand-computed case, an independent
re-implementation of RouteLLM's evaluate.py / benchmarks.py (pandas qcut + np.where + trapezoid), the
README's random-router row of the shared data (to the last printed digit), and closed forms: the
random router's expected APGR 1/2 and the oracle's (b - b^2/2) / (b - c)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from actors.common.errors import InputError
from actors.router.data import load_routes
from actors.router.metrics import (
    Outcomes,
    apgr,
    bootstrap,
    cpt,
    evaluate_scores,
    oracle_apgr_closed_form,
    oracle_curve,
    random_metrics,
    random_scores,
    threshold_curve,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "routellm"


def shared_file(name: str) -> Path:
    path = SHARED / name
    assert path.is_file(), f"the shared routing data is missing: {path} (CI keeps ../shared/data beside the checkout)"
    return path


def synthetic(n: int = 600, seed: int = 0, signal: float = 1.0):
    """0/1 outcomes where a latent difficulty drives weak failures; a score that sees it with noise."""
    rng = np.random.default_rng(seed)
    hard = rng.random(n)
    weak = (rng.random(n) > hard * 0.8).astype(float)
    strong = np.where(weak == 1, (rng.random(n) > 0.05).astype(float), (rng.random(n) > 0.4).astype(float))
    score = signal * hard + rng.normal(0, 0.3, n)
    return strong, weak, score


def routellm_reference(scores, strong, weak, n_bins=10, levels=(0.2, 0.5, 0.8)):
    """RouteLLM's own steps, written out independently: qcut edges, >= / > at the top, trapezoid, interp."""
    _, edges = pd.qcut(scores, n_bins, retbins=True)
    pts = []
    for i, t in enumerate(edges):
        sel = scores >= t if i != len(edges) - 1 else scores > t
        res = np.where(sel, strong, weak)
        pts.append({"strong_percentage": sel.sum() / len(sel) * 100, "accuracy": res.sum() / len(res) * 100})
    df = pd.DataFrame(pts).sort_values("strong_percentage")
    w, s = weak.mean() * 100, strong.mean() * 100
    auc = np.trapezoid(df["accuracy"], df["strong_percentage"] / 100)
    apgr_ref = (auc - w) / (s - w)
    cpts = [np.interp(x * (s - w) + w, df["accuracy"], df["strong_percentage"]) / 100 for x in levels]
    return apgr_ref, cpts


def test_hand_computed_case():
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    out = Outcomes.from_rows(np.array([1.0, 1, 0, 1]), np.array([0.0, 1, 1, 0]))
    curve = threshold_curve(scores, out, n_bins=2)
    # edges 0.1, 0.375, 0.8: all strong (75 %), the top half strong (75 %), none (> 0.8: weak, 50 %)
    np.testing.assert_allclose(curve.share, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(curve.perf, [50.0, 75.0, 75.0])
    np.testing.assert_allclose(curve.thresholds, [0.8, 0.375, 0.1])
    assert apgr(curve, 50.0, 75.0) == pytest.approx(0.75)       # (31.25 + 37.5 - 50) / 25
    assert cpt(curve, 0.5, 50.0, 75.0) == pytest.approx(0.25)
    assert cpt(curve, 0.8, 50.0, 75.0) == pytest.approx(0.40)
    m = evaluate_scores(scores, out, n_bins=2, quality_target=0.95)
    assert m.calls_at_target == pytest.approx(0.425) and m.cost_saving == pytest.approx(0.575)   # 71.25 on the line


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_routellm_reference(seed):
    strong, weak, score = synthetic(seed=seed)
    out = Outcomes.from_rows(strong, weak)
    m = evaluate_scores(score, out)
    ref_apgr, ref_cpt = routellm_reference(score, strong, weak)
    assert m.apgr == pytest.approx(ref_apgr, abs=1e-12)
    np.testing.assert_allclose([m.cpt["20"], m.cpt["50"], m.cpt["80"]], ref_cpt, atol=1e-12)


def test_multi_row_routes_count_each_row():
    """A route of two rows (MT-Bench turns) is decided once and counts twice in the share."""
    rng = np.random.default_rng(3)
    n = 200
    route_scores = rng.random(n)
    strong = rng.integers(0, 2, 2 * n).astype(float)
    weak = rng.integers(0, 2, 2 * n).astype(float)
    route_index = np.repeat(np.arange(n), 2)
    m = evaluate_scores(route_scores, Outcomes.from_rows(strong, weak, route_index))
    # the row-level sweep with each row carrying its route's score, thresholds from the route scores
    edges = np.quantile(route_scores, np.linspace(0, 1, 11))
    rows = route_scores[route_index]
    pts = sorted((np.mean(sel), np.mean(np.where(sel, strong, weak)) * 100)
                  for sel in [rows >= t for t in edges[:-1]] + [rows > edges[-1]])
    w, s = weak.mean() * 100, strong.mean() * 100
    ref = (np.trapezoid([p for _, p in pts], [x for x, _ in pts]) - w) / (s - w)
    assert m.apgr == pytest.approx(ref, abs=1e-12)


def test_random_router_apgr_is_one_half_in_expectation():
    strong, weak, _ = synthetic(n=2000, seed=5)
    out = Outcomes.from_rows(strong, weak)
    values = [evaluate_scores(s, out).apgr for s in random_scores(out.gain.size, seed=11, repeats=200)]
    # E[perf(share)] = weak + share (strong - weak) for a random score, so E[APGR] = 1/2
    assert np.mean(values) == pytest.approx(0.5, abs=0.01)
    assert np.std(values) / np.sqrt(len(values)) < 0.005


def test_oracle_closed_form_and_routellm_optimal():
    strong, weak, _ = synthetic(n=1000, seed=7)
    out = Outcomes.from_rows(strong, weak)
    dense = oracle_curve(out, np.linspace(0, 1, 100_001))
    assert apgr(dense, out.weak_perf, out.strong_perf) == pytest.approx(oracle_apgr_closed_form(strong, weak), abs=1e-8)
    # RouteLLM's get_optimal_accuracy at 0, 10, ..., 100 % strong calls
    b = np.sum((weak == 0) & (strong == 1))
    for pct in range(0, 101, 10):
        ref = (np.sum(weak == 1) + min(len(weak) * pct / 100, b)) / len(weak) * 100
        assert oracle_curve(out, np.array([pct / 100])).perf[0] == pytest.approx(ref, abs=1e-9)
    # 10 rows: 3 only-strong, 1 only-weak, 6 both right: b = 0.3, c = 0.1 -> (0.3 - 0.045) / 0.2 = 1.275
    s10, w10 = np.array([1.0] * 3 + [0] + [1] * 6), np.array([0.0] * 3 + [1] + [1] * 6)
    assert oracle_apgr_closed_form(s10, w10) == pytest.approx(1.275)


@pytest.mark.parametrize("name,apgr_ref,cpt50,cpt80", [("gsm8k.parquet", 0.5069, 48.79, 80.16),
                                                        ("mmlu.parquet", 0.5017, 49.74, 79.27)])
def test_readme_random_row_reproduced(name, apgr_ref, cpt50, cpt80):
    frame = load_routes(shared_file(name)).frame
    out = Outcomes.from_rows(frame["strong_score"].to_numpy(), frame["weak_score"].to_numpy())
    m = random_metrics(out, seed=0, repeats=10)
    assert round(m.apgr, 4) == apgr_ref
    assert round(m.cpt["50"] * 100, 2) == cpt50 and round(m.cpt["80"] * 100, 2) == cpt80


def test_bootstrap_is_seeded_and_pairs_with_random():
    strong, weak, score = synthetic(n=800, seed=9, signal=2.0)
    out = Outcomes.from_rows(strong, weak)
    routers = {"good": score, "random": lambda rng, n: [rng.random(n) for _ in range(3)]}
    a = bootstrap(routers, out, n_boot=60, seed=4)
    b = bootstrap(routers, out, n_boot=60, seed=4)
    assert a == b
    point = evaluate_scores(score, out).apgr
    lo, hi = a["routers"]["good"]["apgr"]
    assert lo < point < hi
    assert a["vs_random"]["good"]["apgr"][0] > 0          # an informative score beats random, paired
    w_lo, w_hi = a["baselines"]["weak_perf"]
    assert w_lo < out.weak_perf < w_hi


def test_bad_scores_name_the_field():
    out = Outcomes.from_rows(np.array([1.0, 0.0]), np.array([0.0, 0.0]))
    with pytest.raises(InputError) as e:
        threshold_curve(np.array([0.1, np.nan]), out)
    assert e.value.field == "scores"
    with pytest.raises(InputError) as e:
        threshold_curve(np.array([0.1, 0.2, 0.3]), out)
    assert e.value.field == "scores"
    with pytest.raises(InputError) as e:
        Outcomes.from_rows(np.array([1.0]), np.array([0.0, 1.0]))
    assert e.value.field == "strong_score"
