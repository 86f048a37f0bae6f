"""Recommender: candidate fixes applied to the synthetic table, ranked by measured improvement / cost.

Each fix produces a repaired table; the dimensions that failed are re-run on it (same detector,
`n_null` resamples) and the predicted improvement is the mean relative drop of their scores
(score = standardised departure from the null), plus how many stop being significant. Priority =
improvement / cost, where cost grows with the fix's effort and the share of rows it changes.
No Ray; the job runs it after detection and localization.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from actors.common.budget import checkpoint
from actors.common.config import validated
from actors.validation.config import DetectorConfig, RecommenderConfig
from actors.validation.data import pool
from actors.validation.detector import CollapseReport, classifier_scores, detect, model_features
from actors.validation.localize import Localization

BASE_COST = {"deduplicate": 1.0, "drop_outliers": 1.0, "relabel": 1.5, "reweight": 2.0, "resample_tails": 2.0,
             "regenerate": 5.0}


@dataclass
class Recommendation:
    fix: str
    description: str
    rows_changed: int
    cost: float
    improvement: float                  # mean relative drop of the failing dimensions' scores
    resolved: list[str]                 # failing dimensions no longer significant after the fix
    priority: float                     # improvement / cost
    after: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def deduplicate(real, synth, loc, **_) -> tuple[pd.DataFrame, int, str] | None:
    rows = loc.flagged.get("memorised", np.zeros(0, int))
    if len(rows) == 0:
        return None
    return synth.drop(index=synth.index[rows]), len(rows), f"drop {len(rows)} memorised / near-copy rows"


def drop_outliers(real, synth, loc, **_):
    rows = loc.flagged.get("outlier", np.zeros(0, int))
    if len(rows) == 0:
        return None
    return synth.drop(index=synth.index[rows]), len(rows), f"drop {len(rows)} rows far from every real row"


def relabel(real, synth, loc, label=None, **_):
    if not loc.suggested_labels or label is None:
        return None
    fixed = synth.copy()
    rows = np.array(sorted(loc.suggested_labels))
    fixed.loc[fixed.index[rows], label] = [loc.suggested_labels[i] for i in rows]
    return fixed, len(rows), f"set {len(rows)} labels of {label!r} to the confidently predicted class"


def reweight(real, synth, loc, rng=None, categorical=None, **_):
    """Resample synthetic rows by the classifier density ratio p(real | x) / p(synthetic | x)."""
    pooled = pool(real, synth, categorical=categorical)
    p = classifier_scores(model_features(pooled), pooled.is_synth.astype(int),
                          DetectorConfig(classifier="logistic"))[pooled.is_synth]
    w = np.clip((1 - p) / np.clip(p, 1e-6, None), 0.1, 10.0)
    idx = rng.choice(len(synth), size=len(synth), replace=True, p=w / w.sum())
    return synth.iloc[idx].reset_index(drop=True), len(synth), "resample rows by the real/synthetic density ratio"


def resample_tails(real, synth, loc, rng=None, report=None, **_):
    """Resample synthetic rows by per-column bin density ratios of the columns the coverage check flagged."""
    cols = [c for c in (report.dimensions["coverage"].columns if report and "coverage" in report.dimensions else [])
            if c in synth.columns and pd.api.types.is_numeric_dtype(synth[c])]
    if not cols:
        return None
    logw = np.zeros(len(synth))
    for c in cols:
        edges = np.unique(np.nanquantile(real[c], [0.02, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.98]))
        br, bs = np.searchsorted(edges, real[c], side="right"), np.searchsorted(edges, synth[c], side="right")
        pr = (np.bincount(br, minlength=len(edges) + 1) + 0.5) / (len(br) + 0.5 * (len(edges) + 1))
        ps = (np.bincount(bs, minlength=len(edges) + 1) + 0.5) / (len(bs) + 0.5 * (len(edges) + 1))
        logw += np.log(pr[bs] / ps[bs])
    w = np.exp(np.clip(logw, -5, 5))
    idx = rng.choice(len(synth), size=len(synth), replace=True, p=w / w.sum())
    return synth.iloc[idx].reset_index(drop=True), len(synth), f"resample rows to restore the tails of {cols[:5]}"


def regenerate(real, synth, loc, rng=None, **_):
    """Replace the synthetic table by a fresh Gaussian-copula sample fitted to the real table."""
    from actors.validation.planted import GaussianCopula

    fresh = GaussianCopula(real[list(synth.columns)]).sample(len(synth), rng)
    for c in synth.columns:
        if pd.api.types.is_numeric_dtype(synth[c]):
            fresh[c] = fresh[c].astype(float)
    return fresh, len(synth), "regenerate with a Gaussian copula fitted to the real table"


FIXES = {"deduplicate": deduplicate, "drop_outliers": drop_outliers, "relabel": relabel, "reweight": reweight,
         "resample_tails": resample_tails, "regenerate": regenerate}


def recommend(real: pd.DataFrame, synth: pd.DataFrame, report: CollapseReport, loc: Localization, *,
              detector: DetectorConfig | dict | None = None, config: RecommenderConfig | dict | None = None,
              label: str | None = None, **overrides: Any) -> list[Recommendation]:
    """Fixes for the failing dimensions, best improvement per cost first (empty when nothing failed)."""
    cfg = validated(RecommenderConfig, config, **overrides)
    dcfg = validated(DetectorConfig, detector)
    failing = report.flagged()
    if not failing:
        return []
    rng = np.random.default_rng(cfg.seed)
    out = []
    for name in cfg.fixes:
        checkpoint()   # each fix re-runs detection: stop between fixes when the request's budget is spent
        res = FIXES[name](real, synth, loc, label=label, rng=rng, report=report, categorical=dcfg.categorical)
        if res is None:
            continue
        fixed, changed, text = res
        after = detect(real, fixed.reset_index(drop=True), dcfg, dimensions=tuple(failing), n_null=cfg.n_null)
        gains = []
        for d in failing:
            before = max(report.dimensions[d].score, 1e-9)
            gains.append(float(np.clip((before - max(after.dimensions[d].score, 0.0)) / before, -1.0, 1.0)))
        improvement = float(np.mean(gains))
        cost = BASE_COST[name] * (1 + changed / max(len(synth), 1))
        out.append(Recommendation(name, text, int(changed), round(cost, 3), round(improvement, 4),
                                  [d for d in failing if not after.dimensions[d].flagged],
                                  round(improvement / cost, 4),
                                  {d: {"score": after.dimensions[d].score, "p_value": after.dimensions[d].p_value}
                                   for d in failing}))
    return sorted(out, key=lambda r: -r.priority)
