"""Planted-collapse generator: the right rows change, the rest do not, and the copula reproduces the
reference data set's marginals and rank correlations."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from actors.validation.planted import CASES, FRACTION, GaussianCopula, load_reference, plant


@pytest.mark.parametrize("case", sorted(CASES))
def test_only_planted_rows_change(case):
    clean = plant(case="clean", dataset="wine", seed=4)
    pair = plant(case=case, severity="medium", dataset="wine", seed=4)
    pd.testing.assert_frame_equal(clean.real, pair.real)
    a, b = clean.synth, pair.synth
    changed = np.flatnonzero([not a.iloc[i].equals(b.iloc[i]) for i in range(len(a))])
    assert set(changed) <= set(pair.rows)
    assert len(pair.rows) > 0
    if case in ("mode_collapse", "variance_shrinkage", "memorised", "label_noise", "missingness"):
        assert len(pair.rows) == round(FRACTION["medium"] * len(a))


def test_severity_orders_the_damage():
    sd = [plant(case="variance_shrinkage", severity=s, dataset="breast_cancer", seed=1).synth["mean_radius"].std()
          for s in ("low", "medium", "high")]
    assert sd[0] > sd[1] > sd[2]


def test_gaussian_copula_reproduces_marginals_and_rank_correlation():
    df, label = load_reference("breast_cancer")
    sample = GaussianCopula(df).sample(4000, np.random.default_rng(0))
    for c in ("mean_radius", "worst_area", "mean_smoothness"):
        assert stats.ks_2samp(df[c], sample[c]).statistic < 0.06
    cols = ["mean_radius", "mean_texture", "worst_area", "mean_smoothness"]
    diff = np.abs(stats.spearmanr(df[cols]).statistic - stats.spearmanr(sample[cols]).statistic)
    assert diff.max() < 0.08
    freq = df[label].value_counts(normalize=True)
    assert np.abs(sample[label].value_counts(normalize=True)[freq.index] - freq).max() < 0.03


def test_memorised_rows_are_copies_of_real_rows():
    pair = plant(case="memorised", severity="high", dataset="wine", seed=3)
    real = {tuple(r) for r in pair.real.itertuples(index=False)}
    exact = [tuple(pair.synth.iloc[i]) in real for i in pair.rows]
    assert sum(exact) >= len(pair.rows) // 2
