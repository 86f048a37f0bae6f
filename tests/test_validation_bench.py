"""jobs.bench.validation: its statistics against independent references, its aggregation on
hand-made runs, one tiny end-to-end run, and the baseline adapters (only where the `bench` extra is
installed, i.e. in .venv-bench: `.venv-bench/bin/python -m pytest tests/test_validation_bench.py`)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from jobs.bench import lib
from jobs.bench import validation as vb


@pytest.mark.parametrize("k,n", [(0, 5), (3, 5), (5, 5), (19, 20), (1, 40)])
def test_wilson_matches_scipy(k, n):
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = lib.wilson(k, n)
    assert lo == pytest.approx(ci.low, abs=2e-4) and hi == pytest.approx(ci.high, abs=2e-4)


def test_localization_scores_by_hand():
    # ranking: rows 0, 1, 2, 3; planted 0 and 2 -> precision at ranks 1 and 3: AP = (1 + 2/3) / 2
    pk, ap = lib.localization_scores(np.array([0.9, 0.8, 0.7, 0.6]), np.array([0, 2]))
    assert pk == 0.5 and ap == pytest.approx(5 / 6)
    # a subset's AUPRC leaves the other planted rows out: rows 0 (subset), 1 (other planted), 2, 3
    assert lib.subset_auprc(np.array([0.1, 0.9, 0.8, 0.7]), np.array([0, 1]), np.array([0])) == pytest.approx(1 / 3)


def _runs() -> pd.DataFrame:
    clean = [{"case": "clean", "severity": "-", "n": 100, "rep": r, "traced": r == 0, "ours": r == 7,
              "ours_expected": False, "ours_flagged": "classifier" if r == 7 else "", "ours_s": 2.0,
              "sdmetrics_score": float(r), "sdmetrics_s": 4.0, "evidently": False, "evidently_s": 1.0}
             for r in range(20)]
    case = [{"case": "memorised", "severity": sev, "n": 100, "rep": r, "traced": False, "ours": ok,
             "ours_expected": ok, "ours_flagged": "memorisation" if ok else "", "ours_s": 3.0,
             "sdmetrics_score": score, "sdmetrics_s": 4.0, "evidently": False, "evidently_s": 1.0,
             "ours_auprc": 0.9, "ours_pk": 0.8, "base_auprc": 0.6, "base_pk": 0.5, "base_tool": "x"}
            for sev, ok, score in (("low", False, 10.0), ("medium", True, -1.0)) for r in range(4)]
    return pd.DataFrame(clean + case)


def test_aggregate_calibrates_sdmetrics_on_clean_controls():
    t = vb.aggregate(_runs()).set_index(["case", "severity"])
    # the lower 5 % quantile of the clean scores 0..19 is their minimum: no clean score strictly below
    assert t.loc[("clean", "-"), "sdmetrics_threshold"] == 0.0
    assert t.loc[("clean", "-"), "sdmetrics_rate"] == 0.0
    assert t.loc[("clean", "-"), "ours_rate"] == pytest.approx(1 / 20)
    assert (t.loc[("clean", "-"), "ours_ci_low"], t.loc[("clean", "-"), "ours_ci_high"]) == \
        pytest.approx(tuple(round(v, 3) for v in lib.wilson(1, 20)))
    assert t.loc[("memorised", "medium"), "sdmetrics_rate"] == 1.0
    assert t.loc[("memorised", "low"), "sdmetrics_rate"] == 0.0
    assert t.loc[("memorised", "medium"), "auprc_ratio"] == pytest.approx(1.5)
    # times: the traced clean run is left out of the median; ratios against ours
    assert t.loc[("clean", "-"), "sdmetrics_time_ratio"] == pytest.approx(2.0)
    assert t.loc[("memorised", "medium"), "ours_rows_per_s"] == pytest.approx(200 / 3.0)
    small = vb.smallest_severity(vb.aggregate(_runs())).set_index("case")
    assert small.loc["memorised", "ours"] == "medium" and small.loc["memorised", "evidently"] == "none"


def test_bench_end_to_end_detector_only(tmp_path):
    out = tmp_path / "bench"
    rc = vb.main(["--out", str(out), "--sizes", "200", "--cases", "memorised", "--severities", "high",
                  "--reps", "1", "--reps-medium", "1", "--clean-reps", "2", "--baselines", "none",
                  "--subset-size", "0", "--fpr-sizes", "", "--no-memory", "--classifier", "logistic"])
    assert rc == 0
    t = pd.read_csv(out / "detection.csv").set_index("case")
    assert t.loc["clean", "runs"] == 2 and t.loc["memorised", "ours_rate"] == 1.0
    assert t.loc["memorised", "ours_auprc"] > 0.9          # 80 of 200 rows are copies of real rows
    assert (out / "table.md").read_text().count("| memorised | high | 200 |") == 1
    assert t.loc["memorised", "ours_cpu_s"] > 0
    assert len(pd.read_csv(out / "runs.csv")) == 3
    before = pd.read_csv(out / "detection.csv")        # an interrupted run re-aggregates from runs.jsonl
    assert vb.main(["--out", str(out), "--aggregate-only"]) == 0
    pd.testing.assert_frame_equal(before, pd.read_csv(out / "detection.csv"))


# ---- baseline adapters (bench extra) -------------------------------------------------------------

def _tables(rng, n=400):
    X = rng.standard_normal((n, 3))
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    df["y"] = np.where(X[:, 0] + X[:, 1] > 0, "p", "q")
    return df


@pytest.mark.bench
def test_evidently_drift_decision():
    from jobs.bench.validation_baselines import evidently_drift

    real = _tables(np.random.default_rng(0))
    shifted = real.copy()
    shifted[["a", "b", "c"]] += 3.0
    assert evidently_drift(real, real.copy())["share"] == 0.0
    res = evidently_drift(real, shifted)
    assert res["drift"] and res["count"] >= 3


@pytest.mark.bench
def test_sdmetrics_dcr_zero_for_copies():
    from jobs.bench.validation_baselines import sdmetrics_dcr

    rng = np.random.default_rng(1)
    real, synth = _tables(rng, 200), _tables(rng, 200)
    synth.iloc[:20] = real.iloc[50:70].to_numpy()
    d = sdmetrics_dcr(real, synth)
    assert np.allclose(d[:20], 0.0) and (d[20:] > 0).all()


@pytest.mark.bench
def test_cleanlab_finds_flipped_labels():
    from sklearn.metrics import average_precision_score

    from jobs.bench.validation_baselines import cleanlab_label_issues

    df = _tables(np.random.default_rng(2), 600)
    flip = np.arange(0, 600, 20)                       # 30 rows, far from the boundary most of the time
    df.loc[flip, "y"] = np.where(df.loc[flip, "y"] == "p", "q", "p")
    y = np.zeros(600, bool)
    y[flip] = True
    assert average_precision_score(y, cleanlab_label_issues(df, "y")) > 0.7
