"""The tools the validation benchmark compares against, each called the way its docs show, at defaults.

- Evidently: `Report([DataDriftPreset()])`; its dataset-drift decision is "share of drifted columns
  >= drift_share" (0.5), the preset's `DriftedColumnsCount` value.
- SDMetrics: `QualityReport` overall score (a score, not a decision: the benchmark thresholds it at
  the level giving 5 % false positives on clean controls of the same size), and the per-row distance
  to closest record `calculate_dcr` (the DCR privacy metrics' building block) for memorised rows.
- Cleanlab: `find_label_issues` on 5-fold out-of-fold probabilities of a logistic regression fit on
  the table itself (Cleanlab's documented workflow), ranked by self-confidence.

They live in the optional `bench` extra, which pins pandas < 3: install it in its own venv
(`.venv-bench`, see jobs.bench.validation). A missing tool reports None instead of failing the run.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from jobs.bench.lib import dist_versions

TOOLS = ("evidently", "sdmetrics", "cleanlab")


def versions() -> dict[str, str | None]:
    """Installed version of each baseline tool (None = not installed: its columns stay empty)."""
    return dist_versions(TOOLS)


def sdv_metadata(df: pd.DataFrame) -> dict:
    """SDMetrics single-table metadata: numeric dtypes -> numerical, everything else categorical."""
    return {"columns": {c: {"sdtype": "numerical" if pd.api.types.is_numeric_dtype(df[c]) else "categorical"}
                        for c in df.columns}}


def evidently_drift(real: pd.DataFrame, synth: pd.DataFrame) -> dict:
    """Evidently DataDriftPreset at defaults: {drift (the dataset decision), share, count}."""
    from evidently import Report
    from evidently.presets import DataDriftPreset

    preset = DataDriftPreset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snap = Report([preset]).run(current_data=synth, reference_data=real)
    value = next(m["value"] for m in snap.dict()["metrics"] if m["metric_name"].startswith("DriftedColumnsCount"))
    share = float(value["share"])
    return {"drift": bool(share >= preset.drift_share), "share": share, "count": int(value["count"])}


def sdmetrics_quality(real: pd.DataFrame, synth: pd.DataFrame) -> float:
    """SDMetrics QualityReport overall score in [0, 1] (1 = synthetic matches real)."""
    from sdmetrics.reports.single_table import QualityReport

    report = QualityReport()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report.generate(real, synth, sdv_metadata(real), verbose=False)
    return float(report.get_score())


def sdmetrics_dcr(real: pd.DataFrame, synth: pd.DataFrame) -> np.ndarray:
    """SDMetrics distance to closest real record of every synthetic row (range-normalised, Gower-like)."""
    from sdmetrics.single_table.privacy.dcr_utils import calculate_dcr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return calculate_dcr(synth, real, sdv_metadata(real)).to_numpy(dtype=float)


def cleanlab_label_issues(synth: pd.DataFrame, label: str, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Cleanlab find_label_issues as a row score: flagged rows ranked by self-confidence score 1 + (rank
    from the bottom) / n, rows it does not flag 0 (its output is a flagged set, not a full ranking)."""
    from cleanlab.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    y = pd.Categorical(synth[label].astype(str)).codes.astype(np.int64)
    X = _features(synth.drop(columns=[label]))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    probs = cross_val_predict(LogisticRegression(max_iter=2000), X, y, cv=cv, method="predict_proba")
    ranked = find_label_issues(y, probs, return_indices_ranked_by="self_confidence")
    score = np.zeros(len(y))
    score[ranked] = 1 + (len(ranked) - np.arange(len(ranked))) / max(len(ranked), 1)
    return score


def _features(df: pd.DataFrame) -> np.ndarray:
    """Standardised numeric columns (missing -> column mean) and one-hot categories."""
    num = df.select_dtypes("number")
    Z = ((num - num.mean()) / num.std().replace(0, 1)).fillna(0.0).to_numpy(dtype=float)
    cats = df.drop(columns=num.columns)
    if cats.shape[1]:
        Z = np.hstack([Z, pd.get_dummies(cats.astype(str)).to_numpy(dtype=float)])
    return Z
