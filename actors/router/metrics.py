"""RouteLLM's router metrics on replayed outcomes: the quality-vs-strong-share curve, PGR, APGR,
CPT(x%), the cost saving at 95% of the strong model's quality, baselines and bootstrap CIs. No Ray.

The protocol (../shared/data/routellm/README.md; RouteLLM routellm/evals/{benchmarks,evaluate}.py):

- a router gives each route a score (its propensity to call the strong model); the 11 edges of 10
  equal-count bins of the scores (the 0, 10, ..., 100 % quantiles, linear interpolation) are the
  thresholds; a route goes to the strong model when score >= threshold, except at the top edge where
  score > threshold (0 % strong calls);
- each threshold gives a point (share of rows sent to the strong model, performance = mean score of
  the routed answers, x100 for 0/1 correctness);
- APGR = (trapezoid area of performance over share in [0, 1] - weak) / (strong - weak);
- CPT(x) = np.interp(weak + x (strong - weak), performances, shares), the points sorted by share,
  exactly as RouteLLM computes it (np.interp reads the performances as if increasing; a noisy curve
  is read the same way RouteLLM reads it);
- calls at 95 % quality: the same interpolation at 0.95 * strong; cost saving = 1 - that share (the
  share of strong-model calls saved against all-strong, what RouteLLM's "35 % / 45 % cost cuts at
  95 % of GPT-4 quality" counts);
- random router: a uniform score per route from Python's `random` seeded once (RouteLLM:
  random.seed(0), random.uniform(0, 1) in row order), 10 consecutive sweeps whose curves are
  averaged point-wise, the metrics read off the mean curve (the README's sanity row, reproduced);
- oracle: RouteLLM's `get_optimal_accuracy`: the budget goes to the routes with the largest positive
  gain strong - weak first (for 0/1 scores: weak + min(share * N, #{strong right, weak wrong}) / N).

Work is done per route: `gain` = sum over its rows of (strong - weak) and `rows` = its row count,
so a route of two MT-Bench turns counts twice in the share, as in RouteLLM.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from actors.common.budget import checkpoint
from actors.common.errors import InputError

__all__ = ["Curve", "Outcomes", "RouterMetrics", "apgr", "averaged_curve", "bootstrap", "calls_at", "cpt",
           "evaluate_scores", "metrics_of_curve", "oracle_apgr_closed_form", "oracle_curve", "random_metrics",
           "random_scores", "threshold_curve"]


@dataclass(frozen=True)
class Outcomes:
    """Per route: gain = sum(strong - weak) over its rows, rows = its row count, weak = sum of the weak
    scores over its rows. `scale` multiplies mean scores into the reported unit (100: accuracy in %)."""

    gain: np.ndarray
    rows: np.ndarray
    weak: np.ndarray
    scale: float = 100.0

    @classmethod
    def from_rows(cls, strong: np.ndarray, weak: np.ndarray, route_index: np.ndarray | None = None,
                  scale: float = 100.0) -> Outcomes:
        """From row scores and each row's route (None: one row per route)."""
        strong = np.asarray(strong, np.float64)
        weak = np.asarray(weak, np.float64)
        if strong.shape != weak.shape or strong.ndim != 1 or strong.size == 0:
            raise InputError("strong_score", f"strong {strong.shape} and weak {weak.shape} scores differ or are empty",
                             "two 1-d arrays of one length >= 1")
        idx = np.arange(strong.size) if route_index is None else np.asarray(route_index, np.int64)
        n = int(idx.max()) + 1
        return cls(np.bincount(idx, weights=strong - weak, minlength=n),
                   np.bincount(idx, minlength=n).astype(np.float64),
                   np.bincount(idx, weights=weak, minlength=n), float(scale))

    @property
    def n_rows(self) -> float:
        return float(self.rows.sum())

    @property
    def weak_total(self) -> float:
        return float(self.weak.sum())

    @property
    def strong_total(self) -> float:
        return float(self.weak.sum() + self.gain.sum())

    @property
    def weak_perf(self) -> float:
        return self.weak_total / self.n_rows * self.scale

    @property
    def strong_perf(self) -> float:
        return self.strong_total / self.n_rows * self.scale

    def take(self, idx: np.ndarray) -> Outcomes:
        """The routes at `idx` (with repeats: a bootstrap resample)."""
        return Outcomes(self.gain[idx], self.rows[idx], self.weak[idx], self.scale)


@dataclass(frozen=True)
class Curve:
    """Points (share of strong calls in [0, 1], performance), sorted by share; thresholds per point."""

    share: np.ndarray
    perf: np.ndarray
    thresholds: np.ndarray

    def to_list(self) -> list[list[float]]:
        return [[float(s), float(p)] for s, p in zip(self.share, self.perf)]


def _check_scores(scores: np.ndarray, n: int) -> np.ndarray:
    scores = np.asarray(scores, np.float64)
    if scores.shape != (n,):
        raise InputError("scores", f"{scores.shape} scores for {n} routes", f"one score per route ({n})")
    if not np.all(np.isfinite(scores)):
        raise InputError("scores", f"non-finite score at route {int(np.flatnonzero(~np.isfinite(scores))[0])}",
                         "finite numbers")
    return scores


def threshold_curve(scores: np.ndarray, out: Outcomes, n_bins: int = 10) -> Curve:
    """RouteLLM's threshold sweep: n_bins + 1 quantile edges of the scores, >= (> at the top edge)."""
    scores = _check_scores(scores, out.gain.size)
    edges = np.quantile(scores, np.linspace(0.0, 1.0, n_bins + 1))
    order = np.argsort(scores, kind="stable")
    s = scores[order]
    suffix_gain = np.concatenate([np.cumsum(out.gain[order][::-1])[::-1], [0.0]])
    suffix_rows = np.concatenate([np.cumsum(out.rows[order][::-1])[::-1], [0.0]])
    sides = ["left"] * n_bins + ["right"]
    k = np.array([np.searchsorted(s, t, side=side) for t, side in zip(edges, sides)])
    n_rows = out.n_rows
    share = suffix_rows[k] / n_rows
    perf = (out.weak_total + suffix_gain[k]) / n_rows * out.scale
    o = np.argsort(share, kind="stable")
    return Curve(share[o], perf[o], edges[o])


def apgr(curve: Curve, weak: float, strong: float) -> float:
    """Area under performance vs share (trapezoid), rescaled so all-weak is 0 and all-strong is 1."""
    width = curve.share[-1] - curve.share[0]
    auc = float(np.trapezoid(curve.perf, curve.share))
    return (auc - weak * width) / ((strong - weak) * width)


def calls_at(curve: Curve, target: float) -> float:
    """Share of strong calls where the curve reaches `target` performance, RouteLLM's np.interp reading."""
    return float(np.interp(target, curve.perf, curve.share))


def cpt(curve: Curve, level: float, weak: float, strong: float) -> float:
    """CPT(level): share of strong calls needed to recover `level` of the weak-to-strong gap."""
    return calls_at(curve, weak + level * (strong - weak))


def oracle_curve(out: Outcomes, shares: np.ndarray) -> Curve:
    """The best routing at each share: strong calls go to the routes with the largest positive gain
    (per row of calls), linear in between (RouteLLM's get_optimal_accuracy for 0/1 scores)."""
    shares = np.asarray(shares, np.float64)
    per_row = out.gain / out.rows
    order = np.argsort(-per_row, kind="stable")
    g = np.clip(out.gain[order], 0.0, None)
    r = out.rows[order]
    cum_rows = np.concatenate([[0.0], np.cumsum(r)])
    cum_gain = np.concatenate([[0.0], np.cumsum(g)])
    best = np.interp(shares * out.n_rows, cum_rows, cum_gain)
    perf = (out.weak_total + best) / out.n_rows * out.scale
    return Curve(shares, perf, np.full(shares.shape, np.nan))


def oracle_apgr_closed_form(strong: np.ndarray, weak: np.ndarray) -> float:
    """APGR of the oracle on one-row routes of 0/1 scores, as a continuous curve: with b, c the
    shares of rows where only the strong / only the weak model is right, PGR(s) = min(s, b) / (b - c),
    so APGR = (b - b^2 / 2) / (b - c)."""
    strong, weak = np.asarray(strong), np.asarray(weak)
    b = float(np.mean((strong == 1) & (weak == 0)))
    c = float(np.mean((strong == 0) & (weak == 1)))
    return (b - b * b / 2) / (b - c)


def random_scores(n: int, seed: int = 0, repeats: int = 1) -> list[np.ndarray]:
    """RouteLLM's random router: Python's `random` seeded once, random.uniform(0, 1) per route in row
    order, `repeats` consecutive draws of all n routes."""
    rng = random.Random(seed)
    return [np.array([rng.uniform(0, 1) for _ in range(n)]) for _ in range(repeats)]


@dataclass(frozen=True)
class RouterMetrics:
    """APGR, CPT per level (shares in [0, 1]), calls and cost saving at the quality target, the curve."""

    apgr: float
    cpt: dict[str, float]
    calls_at_target: float
    cost_saving: float
    curve: Curve

    def summary(self) -> dict[str, float]:
        """Flat numbers (the bootstrap's statistics): apgr, cpt_<pct>, calls_at_target, cost_saving."""
        return {"apgr": self.apgr, **{f"cpt_{k}": v for k, v in self.cpt.items()},
                "calls_at_target": self.calls_at_target, "cost_saving": self.cost_saving}


def _level_key(level: float) -> str:
    return f"{round(level * 100, 6):g}"


def metrics_of_curve(curve: Curve, out: Outcomes, levels=(0.2, 0.5, 0.8), quality_target: float = 0.95
                     ) -> RouterMetrics:
    weak, strong = out.weak_perf, out.strong_perf
    calls = calls_at(curve, quality_target * strong)
    return RouterMetrics(apgr=apgr(curve, weak, strong),
                         cpt={_level_key(x): cpt(curve, x, weak, strong) for x in levels},
                         calls_at_target=calls, cost_saving=1.0 - calls, curve=curve)


def evaluate_scores(scores: np.ndarray, out: Outcomes, n_bins: int = 10, levels=(0.2, 0.5, 0.8),
                    quality_target: float = 0.95) -> RouterMetrics:
    """A router's metrics from its per-route scores."""
    return metrics_of_curve(threshold_curve(scores, out, n_bins), out, levels, quality_target)


def averaged_curve(curves: list[Curve]) -> Curve:
    """The point-wise mean of several sweeps' curves (the random router's repeats)."""
    share = np.mean([c.share for c in curves], axis=0)
    perf = np.mean([c.perf for c in curves], axis=0)
    return Curve(share, perf, np.full(share.shape, np.nan))


def random_metrics(out: Outcomes, seed: int = 0, repeats: int = 10, n_bins: int = 10, levels=(0.2, 0.5, 0.8),
                   quality_target: float = 0.95) -> RouterMetrics:
    """The random router as the README's sanity row computes it: `repeats` sweeps of RouteLLM's random
    scores, their curves averaged point-wise, the metrics read off the mean curve (reproduces the
    README's GSM8K / MMLU numbers to the last digit)."""
    curves = [threshold_curve(s, out, n_bins) for s in random_scores(out.gain.size, seed, repeats)]
    return metrics_of_curve(averaged_curve(curves), out, levels, quality_target)


def bootstrap(routers: Mapping[str, np.ndarray | Callable[[np.random.Generator, int], list[np.ndarray]]],
              out: Outcomes, *, n_boot: int = 1000, seed: int = 0, n_bins: int = 10,
              levels=(0.2, 0.5, 0.8), quality_target: float = 0.95, confidence: float = 0.95,
              paired_with: str | None = "random") -> dict:
    """Percentile bootstrap over routes (resampled with replacement, seeded) of every router's numbers.

    `routers` maps a name to its per-route scores, or to a callable (rng, n) -> list of score arrays
    drawn afresh per replicate, whose curves are averaged (the random router). Returns {name: {stat: [lo, hi]}}, the
    baselines' intervals, and for each router the interval of its difference from `paired_with`
    (same resample: a paired comparison)."""
    rng = np.random.default_rng(seed)
    n = out.gain.size
    stats: dict[str, dict[str, list[float]]] = {name: {} for name in routers}
    base: dict[str, list[float]] = {"weak_perf": [], "strong_perf": [], "oracle_apgr": []}
    shares = np.linspace(0.0, 1.0, n_bins + 1)
    for _ in range(n_boot):
        checkpoint()
        idx = rng.integers(0, n, n)
        o = out.take(idx)
        if o.strong_total == o.weak_total:     # a degenerate resample: no gap to recover
            continue
        base["weak_perf"].append(o.weak_perf)
        base["strong_perf"].append(o.strong_perf)
        base["oracle_apgr"].append(apgr(oracle_curve(o, shares), o.weak_perf, o.strong_perf))
        for name, scores in routers.items():
            if callable(scores):
                curve = averaged_curve([threshold_curve(s, o, n_bins) for s in scores(rng, n)])
                m = metrics_of_curve(curve, o, levels, quality_target).summary()
            else:
                m = evaluate_scores(np.asarray(scores)[idx], o, n_bins, levels, quality_target).summary()
            for k, v in m.items():
                stats[name].setdefault(k, []).append(v)
    a = (1.0 - confidence) / 2.0

    def interval(v: list[float]) -> list[float]:
        return [float(np.quantile(v, a)), float(np.quantile(v, 1.0 - a))] if v else [float("nan")] * 2

    result = {"n_boot": n_boot, "confidence": confidence, "seed": seed,
              "routers": {name: {k: interval(v) for k, v in s.items()} for name, s in stats.items()},
              "baselines": {k: interval(v) for k, v in base.items()}}
    if paired_with is not None and paired_with in stats:
        ref = stats[paired_with]
        result["vs_" + paired_with] = {
            name: {k: interval(list(np.asarray(v) - np.asarray(ref[k]))) for k, v in s.items()}
            for name, s in stats.items() if name != paired_with}
    return result
