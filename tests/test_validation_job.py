"""The validate job end to end (planted pair -> report.json / plots / html), bad input, and the Ray
pool giving the same answer as the in-process engine."""
from __future__ import annotations

import json

import pytest

from jobs.validate import main

CONFIG = "configs/validation/ci_tiny.yaml"


def test_planted_job_writes_report_and_ranks_relabel_first(tmp_path, capsys):
    out = tmp_path / "val"
    rc = main(["--planted", "label_noise", "--severity", "high", "--dataset", "wine", "--out", str(out),
               "--config", CONFIG, "--no-ray"])
    assert rc == 0
    doc = json.loads((out / "report.json").read_text())
    planted = json.loads((out / "planted.json").read_text())
    assert doc["collapsed"] is True
    assert set(doc["dimensions"]) == {"marginals", "divergence", "correlation", "coverage", "spectral",
                                      "dependence", "classifier", "memorisation"}
    assert doc["dimensions"]["correlation"]["flagged"] and "target" in doc["dimensions"]["correlation"]["columns"]
    issues = [r["index"] for r in doc["flagged_rows"] if "label_issue" in r["kind"]]
    assert len(issues) >= 10 and sum(i in set(planted["rows"]) for i in issues) / len(issues) >= 0.8
    assert all({"index", "score", "reason"} <= set(r) for r in doc["flagged_rows"])
    assert doc["recommendations"][0]["fix"] == "relabel"
    assert "correlation" in doc["recommendations"][0]["resolved"]
    html = (out / "report.html").read_text()
    for dim in doc["dimensions"]:
        assert (out / "plots" / f"{dim}.png").stat().st_size > 1000
        assert f"plots/{dim}.png" in html
    assert json.loads(capsys.readouterr().out)["collapsed"] is True


def test_job_reads_csv_and_rejects_bad_input(tmp_path, capsys):
    from actors.validation.planted import plant

    pair = plant(case="clean", dataset="wine", seed=1)
    pair.real.to_csv(tmp_path / "r.csv", index=False)
    pair.synth.drop(columns=["alcohol"]).to_csv(tmp_path / "s.csv", index=False)
    rc = main(["--real", str(tmp_path / "r.csv"), "--synthetic", str(tmp_path / "s.csv"), "--out",
               str(tmp_path / "o"), "--no-ray"])
    assert rc == 2 and "alcohol" in capsys.readouterr().err
    rc = main(["--real", str(tmp_path / "nope.csv"), "--synthetic", str(tmp_path / "s.csv"), "--out",
               str(tmp_path / "o"), "--no-ray"])
    assert rc == 2 and "does not exist" in capsys.readouterr().err
    rc = main(["--planted", "clean", "--out", str(tmp_path / "o"), "--set", "detector.alpha=2", "--no-ray"])
    assert rc == 2 and "alpha" in capsys.readouterr().err


@pytest.mark.slow
def test_ray_pool_matches_in_process_engine(ray_cluster):
    from actors.validation.detector import detect
    from actors.validation.planted import plant
    from actors.validation.pool import detect_on_cluster

    pair = plant(case="variance_shrinkage", severity="high", dataset="wine", seed=2)
    cfg = {"n_null": 49, "classifier": "logistic", "mi_pairs": 2, "mi_rows": 60}
    local = detect(pair.real, pair.synth, cfg)
    remote, stats = detect_on_cluster(pair.real, pair.synth, cfg, {"num_workers": 2, "num_gpus": 0})
    assert stats["workers"] == 2
    for name, d in local.dimensions.items():
        assert remote.dimensions[name].p_value == d.p_value
        assert remote.dimensions[name].score == pytest.approx(d.score)
        assert remote.dimensions[name].flagged == d.flagged


def test_stream_mode_reports_full_data_sketches(tmp_path):
    from actors.validation.planted import plant

    pair = plant(case="variance_shrinkage", severity="high", dataset="wine", seed=2)
    pair.real.to_parquet(tmp_path / "r.parquet")
    pair.synth.to_csv(tmp_path / "s.csv", index=False)
    rc = main(["--real", str(tmp_path / "r.parquet"), "--synthetic", str(tmp_path / "s.csv"), "--out",
               str(tmp_path / "o"), "--stream", "--no-ray", "--config", CONFIG,
               "--set", "recommender.fixes=[drop_outliers]"])
    assert rc == 0
    doc = json.loads((tmp_path / "o" / "report.json").read_text())
    assert doc["streaming"]["n_real"] == len(pair.real) and doc["n_real"] == len(pair.real)
    assert doc["collapsed"] and 0 < doc["streaming"]["columns"]["alcohol"]["ks"] < 1
