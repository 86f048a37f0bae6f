"""Localizer: which synthetic rows are the problem, with a score and a reason per row. No Ray.

Three row-level tests, each a conformal p-value against real rows, Benjamini-Hochberg over rows:
- memorised: distance to the closest real record (FAISS) vs the real rows' leave-one-out distance;
- outlier: distance to the k-th nearest real record vs the same for real rows (leave-one-out); the
  reason names the column with the largest robust z-score (median / IQR of the real column);
- label issue: confident learning (Northcutt, Jiang & Chuang 2021) on out-of-fold probabilities of
  a classifier cross-validated on the synthetic rows: per-class thresholds t_j = mean p_j over rows
  labelled j; a row whose confident class (argmax over the classes with p_j >= t_j) differs from its
  label is an off-diagonal entry of the confident joint, i.e. a label issue. Ranked by
  self-confidence (1 - p_given). A synthetic row index is its position in the synthetic table.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from actors.common.budget import checkpoint
from actors.common.config import validated
from actors.validation.config import LocalizerConfig
from actors.validation.data import Pooled, pool
from actors.validation.detector import benjamini_hochberg, model_features


@dataclass
class FlaggedRow:
    index: int
    score: float
    reason: str
    kind: str


@dataclass
class Localization:
    """Flagged rows (merged over kinds, best score first) and every synthetic row's score per kind."""

    rows: list[FlaggedRow]
    scores: dict[str, np.ndarray] = field(default_factory=dict)    # kind -> [n_synth] in [0, 1]
    flagged: dict[str, np.ndarray] = field(default_factory=dict)   # kind -> flagged row indices
    suggested_labels: dict[int, str] = field(default_factory=dict)  # label issues: the confident class

    def to_json(self, limit: int | None = None) -> list[dict]:
        rows = self.rows if limit is None else self.rows[:limit]
        return [{"index": r.index, "score": round(r.score, 6), "reason": r.reason, "kind": r.kind} for r in rows]


def knn_distances(reference: np.ndarray, queries: np.ndarray, k: int, *, exclude_self: bool = False,
                  method: str = "exact", exact_below: int = 50_000, index=None) -> np.ndarray:
    """Euclidean distance of each query to its k-th nearest reference row (FAISS; approximate above
    `exact_below` reference rows with method "auto", see actors/validation/ann.py)."""
    from actors.validation.ann import nearest

    return nearest(reference, queries, k=k, exclude_self=exclude_self, method=method, exact_below=exact_below,
                   index=index)[0]


def _loo(F_real: np.ndarray, null: np.ndarray | None, index, k: int) -> np.ndarray:
    """Leave-one-out k-NN distances of the real rows `null` (all if None) against every real row.

    A random subset of real rows is an exchangeable calibration set, so conformal p-values on it
    stay valid; it spares 10^6 leave-one-out queries at scale."""
    from actors.validation.ann import nearest

    queries = F_real if null is None else F_real[null]
    return nearest(F_real, queries, k=k, exclude_self=True if null is None else null, index=index)[0]


def conformal_p(null: np.ndarray, values: np.ndarray, *, larger: bool) -> np.ndarray:
    """p_i = (1 + #{null at least as extreme as value_i}) / (n_null + 1), refined beyond the null's range.

    The conformal p-value is valid but never below 1/(n+1), too coarse for BH over many rows when the
    real table is small. A value more extreme than every null value gets instead the tail of a normal
    fitted to the log null (capped at 1/(n+1)); an exact copy (distance 0) gets p = 0.
    """
    from scipy.stats import norm

    s = np.sort(null)
    n = len(s)
    count = n - np.searchsorted(s, values, side="left") if larger else np.searchsorted(s, values, side="right")
    p = (1 + count) / (n + 1)
    logs = np.log(np.maximum(s, 1e-300))
    mu, sd = logs.mean(), max(logs.std(ddof=1), 1e-12)
    with np.errstate(divide="ignore"):
        z = (np.log(np.maximum(values, 0.0)) - mu) / sd
    tail = norm.sf(z) if larger else norm.cdf(z)
    return np.where(count == 0, np.minimum(tail, 1 / (n + 1)), p)


def memorised_rows(F_real: np.ndarray, F_syn: np.ndarray, alpha: float, *, method: str = "exact",
                   exact_below: int = 50_000, index=None, null: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(score, flagged mask, reasons): synthetic rows closer to a real row than real rows are to each other.

    With an approximate index both the synthetic and the real leave-one-out distances are searched
    the same way (each can only be overestimated), so the conformal comparison stays like for like."""
    from actors.validation.ann import build_index, nearest

    index = index if index is not None else build_index(F_real, method, exact_below=exact_below)
    d_syn, nn = nearest(F_real, F_syn, index=index)
    d_real = _loo(F_real, null, index, 1)
    p = conformal_p(d_real, d_syn, larger=False)
    score = 1 - np.searchsorted(np.sort(d_real), d_syn, side="right") / len(d_real)
    # every row closer than all real pairs would share score 1: break ties by distance, within one rank
    # step (< 1/len), so the ordering is strictly by distance and the rank buckets stay in order
    scale = max(float(np.median(d_real)), 1e-12)
    score = np.clip(score - d_syn / (d_syn + scale) / len(d_real), 0.0, 1.0)
    reasons = [f"memorised: {'exact' if d <= 1e-6 else 'near'} copy of real row {j} (distance {d:.3g}; "
               f"{100 * (1 - s):.1f}% of real rows are this close to another real row)"
               for d, j, s in zip(d_syn, nn, score)]
    return score, benjamini_hochberg(p, alpha), reasons


def outlier_rows(F_real: np.ndarray, F_syn: np.ndarray, X_real: np.ndarray, X_syn: np.ndarray,
                 names: list[str], k: int, alpha: float, *, method: str = "exact",
                 exact_below: int = 50_000, index=None, null: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(score, flagged mask, reasons): synthetic rows farther from real data than real rows are."""
    k = min(k, len(F_real) - 1)
    from actors.validation.ann import build_index

    index = index if index is not None else build_index(F_real, method, exact_below=exact_below)
    d_syn = knn_distances(F_real, F_syn, k, index=index)
    d_real = _loo(F_real, null, index, k)
    p = conformal_p(d_real, d_syn, larger=True)
    score = np.searchsorted(np.sort(d_real), d_syn, side="left") / len(d_real)
    reasons = []
    if X_real.shape[1]:
        med = np.nanmedian(X_real, axis=0)
        iqr = np.nanquantile(X_real, 0.75, axis=0) - np.nanquantile(X_real, 0.25, axis=0)
        rz = np.nan_to_num((X_syn - med) / np.where(iqr > 0, iqr / 1.349, 1.0))
        worst = np.abs(rz).argmax(axis=1)
    for i, (d, s) in enumerate(zip(d_syn, score)):
        col = f"; most extreme column {names[worst[i]]} (robust z {rz[i, worst[i]]:+.1f})" if X_real.shape[1] else ""
        reasons.append(f"outlier: {k}-NN distance to real rows {d:.3g}, beyond {100 * s:.1f}% of real rows{col}")
    return score, benjamini_hochberg(p, alpha), reasons


def confident_learning(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(issue mask, confident class per row (-1 = none), confident joint [K, K]) from out-of-fold probs.

    labels are integer class ids 0..K-1; probs[i, j] = P(class j | row i) from a model not fit on row i.
    """
    n, K = probs.shape
    thresholds = np.array([probs[labels == j, j].mean() if (labels == j).any() else np.inf for j in range(K)])
    above = probs >= thresholds[None, :]
    confident = np.where(above.any(axis=1), np.where(above, probs, -np.inf).argmax(axis=1), -1)
    joint = np.zeros((K, K), dtype=np.int64)
    ok = confident >= 0
    np.add.at(joint, (labels[ok], confident[ok]), 1)
    return ok & (confident != labels), confident, joint


def out_of_fold_probs(F_syn: np.ndarray, y_syn: np.ndarray, F_real: np.ndarray, y_real: np.ndarray,
                      n_classes: int, folds: int, seed: int) -> np.ndarray:
    """[n_syn, K] class probabilities of each synthetic row from a model fit on the real rows plus the
    other folds of synthetic rows (never on the row itself)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold

    probs = np.zeros((len(y_syn), n_classes))
    for train, test in KFold(n_splits=folds, shuffle=True, random_state=seed).split(F_syn):
        checkpoint()
        Xt, yt = np.vstack([F_real, F_syn[train]]), np.r_[y_real, y_syn[train]]
        model = LogisticRegression(max_iter=2000).fit(Xt, yt)
        probs[np.ix_(test, model.classes_)] = model.predict_proba(F_syn[test])
    return probs


def label_issue_rows(F_syn: np.ndarray, y_syn: pd.Series, F_real: np.ndarray, y_real: pd.Series, folds: int,
                     seed: int) -> tuple[np.ndarray, np.ndarray, list[str], dict[int, str]]:
    """(score = 1 - p(given label), issue mask, reasons, {row: confident class}) by confident learning
    on out-of-fold probabilities."""
    cat = pd.Categorical(pd.concat([y_real, y_syn], ignore_index=True).astype(str))
    codes, classes = cat.codes.astype(np.int64), list(cat.categories)
    labels_real, labels = codes[: len(y_real)], codes[len(y_real):]
    probs = out_of_fold_probs(F_syn, labels, F_real, labels_real, len(classes), folds, seed)
    issues, confident, _ = confident_learning(probs, labels)
    given = probs[np.arange(len(labels)), labels]
    reasons = [f"label issue: labelled {classes[l]!r} but the out-of-fold model says {classes[c]!r} "
               f"(p={probs[i, c]:.2f}, p(given)={given[i]:.2f})" if c >= 0 else
               f"label: labelled {classes[l]!r}, p(given)={given[i]:.2f}"
               for i, (l, c) in enumerate(zip(labels, confident))]
    suggestions = {int(i): classes[confident[i]] for i in np.flatnonzero(issues)}
    return 1 - given, issues, reasons, suggestions


def localize(real: pd.DataFrame, synth: pd.DataFrame, config: LocalizerConfig | dict | None = None, *,
             label: str | None = None, categorical: tuple[str, ...] | list[str] | None = None,
             **overrides: Any) -> Localization:
    """Row-level problem scores of the synthetic table against the real one, with reasons."""
    from threadpoolctl import threadpool_limits

    cfg = validated(LocalizerConfig, config, **overrides)
    with threadpool_limits(limits=1):   # small BLAS calls: threads only contend (see detector.run_dimension)
        return _localize(real, synth, cfg, label, categorical)


def _localize(real: pd.DataFrame, synth: pd.DataFrame, cfg: LocalizerConfig, label: str | None,
              categorical: tuple[str, ...] | list[str] | None) -> Localization:
    pooled = pool(real, synth, categorical=categorical)
    F = model_features(pooled)
    R, S = ~pooled.is_synth, pooled.is_synth
    out: dict[str, tuple[np.ndarray, np.ndarray, list[str]]] = {}
    from actors.validation.ann import build_index

    # one index over the real rows for all four searches (memorised, outlier; synthetic and leave-one-out)
    n_real = int(R.sum())
    null = (None if n_real <= cfg.null_rows else
            np.sort(np.random.default_rng(cfg.seed).choice(n_real, cfg.null_rows, replace=False)))
    ann = {"index": build_index(F[R], cfg.ann, exact_below=cfg.ann_exact_below), "null": null}
    out["memorised"] = memorised_rows(F[R], F[S], cfg.alpha, **ann)
    out["outlier"] = outlier_rows(F[R], F[S], pooled.X[R], pooled.X[S], pooled.numeric, cfg.k_outlier, cfg.alpha,
                                  **ann)
    suggestions: dict[int, str] = {}
    if label is not None and label in synth.columns:
        keep = _features_without(pooled, label)
        *out["label_issue"], suggestions = label_issue_rows(
            keep[S], synth[label].reset_index(drop=True), keep[R], real[label].reset_index(drop=True),
            cfg.cv_folds, cfg.seed)
    loc = _merge(out, cfg.max_rows)
    loc.suggested_labels = suggestions
    return loc


def _features_without(pooled: Pooled, column: str) -> np.ndarray:
    """Model features with `column` left out (the label must not predict itself)."""
    if column not in pooled.categorical:
        j = pooled.numeric.index(column)
        return np.delete(model_features(pooled), j, axis=1)
    j = pooled.categorical.index(column)
    trimmed = Pooled(pooled.numeric, [c for c in pooled.categorical if c != column], pooled.X,
                     np.delete(pooled.C, j, axis=1), [lv for i, lv in enumerate(pooled.levels) if i != j],
                     pooled.bins, pooled.n_bins, pooled.Z, pooled.is_synth, pooled.index)
    return model_features(trimmed)


def _merge(out: dict[str, tuple[np.ndarray, np.ndarray, list[str]]], limit: int) -> Localization:
    best: dict[int, FlaggedRow] = {}
    for kind, (score, flags, reasons) in out.items():
        for i in np.flatnonzero(flags):
            row = FlaggedRow(int(i), float(score[i]), reasons[i], kind)
            if int(i) not in best:
                best[int(i)] = row
            else:   # several reasons: keep the strongest score, list every reason
                old = best[int(i)]
                top = row if row.score > old.score else old
                best[int(i)] = FlaggedRow(top.index, top.score, f"{old.reason}; {row.reason}", f"{old.kind},{kind}")
    rows = sorted(best.values(), key=lambda r: (-r.score, r.index))[:limit]
    return Localization(rows, {k: v[0] for k, v in out.items()}, {k: np.flatnonzero(v[1]) for k, v in out.items()})


def precision_at_k(scores: np.ndarray, planted: np.ndarray, k: int | None = None) -> float:
    """Share of the k highest-scoring rows that were planted (k defaults to the number planted)."""
    k = len(planted) if k is None else k
    top = np.argsort(-scores, kind="stable")[:k]
    return float(np.isin(top, planted).mean()) if k else 1.0
