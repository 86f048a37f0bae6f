"""Streaming path: KLL-sketch KS / Wasserstein against exact scipy values, a uniform reservoir, and a
detection on the reservoirs of two Parquet files read in batches."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from actors.validation.sketches import SketchConfig, TableSketch
from actors.validation.streaming import (
    detect_streaming,
    sketch_ks,
    sketch_wasserstein,
    summarize,
)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    rng = np.random.default_rng(0)
    n = 120_000
    d = tmp_path_factory.mktemp("stream")
    real = pd.DataFrame({"x": rng.normal(0, 1, n), "y": rng.gamma(2, 1, n), "c": rng.choice(list("abc"), n),
                         "row": np.arange(n)})
    synth = pd.DataFrame({"x": rng.normal(0, 0.8, n), "y": rng.gamma(2, 1, n), "c": rng.choice(list("abc"), n),
                          "row": np.arange(n)})
    real.to_parquet(d / "real.parquet")
    synth.to_csv(d / "synth.csv", index=False)
    return real, synth, d


def _quantile_band(values: pd.Series, eps: float, grid: int = 2000) -> float:
    """mean over sketch_wasserstein's quantile grid of Q(u + eps) - Q(u - eps), exact quantiles."""
    u = (np.arange(grid) + 0.5) / grid
    v = values.to_numpy()
    return float(np.mean(np.quantile(v, np.minimum(u + eps, 1)) - np.quantile(v, np.maximum(u - eps, 0))))


def test_sketch_statistics_match_exact_values(files):
    real, synth, d = files
    a = summarize(d / "real.parquet", batch_rows=25_000)
    b = summarize(d / "synth.csv", batch_rows=25_000)
    assert a.n == b.n == len(real)
    eps = a.rank_error()     # ~1.3 % at k = 200
    for c in ("x", "y"):
        exact = stats.ks_2samp(real[c], synth[c]).statistic
        assert abs(sketch_ks(a.kll[c], b.kll[c]) - exact) <= 2 * eps
    # W1 from sketch quantiles. KLL compaction draws its own (unseedable) coins, so the bound must hold
    # for any draw: a sketch quantile with rank error <= eps lies in [Q(u - eps), Q(u + eps)], hence
    # |W1_sketch - W1_exact| <= sum over both sides of mean_u (Q(u + eps) - Q(u - eps)). For y (same
    # gamma, exact W1 ~0.004) that band is wide in the tail: 300 redraws gave 0.027 median, 0.092 max,
    # so a few-rank-errors-times-sd bound (the old test) failed about one run in twenty.
    for c in ("x", "y"):
        w = stats.wasserstein_distance(real[c], synth[c])
        band = _quantile_band(real[c], eps) + _quantile_band(synth[c], eps)
        assert abs(sketch_wasserstein(a.kll[c], b.kll[c]) - w) <= band, c
    # where the columns differ (x: sd 1 vs 0.8) the estimate is also within 10 % (300 redraws: <= 7 %)
    w = stats.wasserstein_distance(real["x"], synth["x"])
    assert sketch_wasserstein(a.kll["x"], b.kll["x"]) == pytest.approx(w, rel=0.1)
    assert a.freq["c"].total_weight == len(real)
    assert a.heavy_hitters("c") == real["c"].value_counts().to_dict()     # 3 values: counted exactly


def test_reservoir_is_uniform_over_the_stream():
    s = TableSketch(SketchConfig(reservoir=2_000, seed=3))
    n = 100_000
    for start in range(0, n, 7_000):                         # uneven batches
        s.update(pd.DataFrame({"row": np.arange(start, min(start + 7_000, n))}))
    rows = s.sample["row"].to_numpy()
    assert len(rows) == 2_000 and len(np.unique(rows)) == 2_000
    assert stats.kstest(rows / n, "uniform").pvalue > 0.001   # a fixed seed: deterministic


def test_detect_streaming_flags_the_shrunk_column(files):
    _, _, d = files
    rep, full = detect_streaming(d / "real.parquet", d / "synth.csv",
                                 {"max_rows": 1_000, "n_null": 199, "classifier": "logistic",
                                  "dimensions": ("marginals", "coverage")}, batch_rows=40_000)
    assert full["n_real"] == 120_000
    assert full["columns"]["x"]["ks"] > 0.05 > full["columns"]["y"]["ks"]
    assert rep.dimensions["coverage"].flagged and "x" in rep.dimensions["coverage"].columns
