"""Localizer: row-level blame for planted memorised rows, label noise and outliers (precision@k), the
confident-learning rule against a hand-worked example, and the recommender's ranking."""
from __future__ import annotations

import numpy as np
import pytest

from actors.validation.localize import (
    confident_learning,
    conformal_p,
    localize,
    memorised_rows,
    precision_at_k,
)
from actors.validation.planted import plant


def test_confident_joint_by_hand():
    # thresholds: class 0 rows (0, 1, 2) have p0 = .9, .8, .2 -> t0 = 0.6333; class 1 rows (3, 4) p1 = .7, .3 -> t1 = .5
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.2, 0.8], [0.3, 0.7], [0.7, 0.3]])
    labels = np.array([0, 0, 0, 1, 1])
    issues, confident, joint = confident_learning(probs, labels)
    # row 2: p1 = .8 >= .5 and p0 = .2 < .633 -> confidently class 1 while labelled 0
    # row 4: p0 = .7 >= .633, p1 = .3 < .5 -> confidently class 0 while labelled 1
    np.testing.assert_array_equal(issues, [False, False, True, False, True])
    np.testing.assert_array_equal(confident, [0, 0, 1, 1, 0])
    np.testing.assert_array_equal(joint, [[2, 1], [1, 1]])


def test_conformal_p_inside_range_is_the_rank():
    null = np.arange(1.0, 100.0)               # 99 values
    p = conformal_p(null, np.array([50.5, 99.0]), larger=True)
    np.testing.assert_allclose(p, [(1 + 49) / 100, (1 + 1) / 100])
    p = conformal_p(null, np.array([0.0, 2.0]), larger=False)
    assert p[0] == 0.0                          # an exact copy (distance 0)
    assert p[1] == pytest.approx((1 + 2) / 100)


@pytest.mark.parametrize("case,kind,dataset,min_precision", [
    ("memorised", "memorised", "breast_cancer", 0.95),
    ("label_noise", "label_issue", "wine", 0.85),
    ("label_noise", "label_issue", "breast_cancer", 0.8),
    ("outliers", "outlier", "breast_cancer", 0.8),
])
def test_planted_rows_are_localized(case, kind, dataset, min_precision):
    pair = plant(case=case, severity="high", dataset=dataset, seed=5)
    loc = localize(pair.real, pair.synth, label=pair.label)
    assert precision_at_k(loc.scores[kind], pair.rows) >= min_precision
    flagged = loc.flagged[kind]
    assert len(flagged) > 0
    assert np.isin(flagged, pair.rows).mean() >= 0.8          # the flagged rows are mostly planted ones
    row = next(r for r in loc.rows if kind in r.kind)
    assert kind.split("_")[0] in row.reason and 0 <= row.score <= 1
    if kind == "label_issue":
        right = pair.synth.copy()
        assert all(loc.suggested_labels[i] != right.loc[i, pair.label] for i in flagged)


def test_clean_control_flags_no_memorised_rows():
    pair = plant(case="clean", dataset="breast_cancer", seed=2)
    loc = localize(pair.real, pair.synth, label=pair.label)
    assert len(loc.flagged["memorised"]) == 0
    assert len(loc.flagged["outlier"]) <= 3                   # real rows beyond every other real row exist


def test_memorised_scores_order_rows_by_distance_to_closest_real_row():
    """Exact copies, jittered copies and fresh rows: the score ranks rows strictly by the scipy cdist
    distance to the closest real row (no ties among rows closer than every real pair)."""
    from scipy.spatial.distance import cdist
    from scipy.stats import spearmanr

    rng = np.random.default_rng(7)
    real = rng.standard_normal((400, 5))
    syn = np.vstack([real[:20], real[20:60] + rng.normal(0, 1e-3, (40, 5)) * rng.uniform(0.1, 3, (40, 1)),
                     rng.standard_normal((140, 5))])
    score, _, _ = memorised_rows(real, syn, 0.05)
    d = cdist(syn, real).min(axis=1)
    assert spearmanr(score[20:], -d[20:]).statistic > 0.999          # exact copies all sit at d = 0
    assert (score[:20] == 1.0).all() and (score[20:60] < 1.0).all() and (score[20:60] > score[60:].max()).all()
