"""The validate job end to end (planted pair -> report.json / plots / html), bad input, and the Ray
pool giving the same answer as the in-process engine."""
from __future__ import annotations

import json

import pytest

from actors.common.errors import InputError
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


def _same(a, b) -> bool:
    """Report documents equal value for value (NaN == NaN: compared as JSON text)."""
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


@pytest.mark.slow
def test_pool_resume_skips_finished_dimensions_with_an_identical_report(ray_cluster, tmp_path):
    from actors.validation.config import DIMENSIONS
    from actors.validation.detector import detect
    from actors.validation.planted import plant
    from actors.validation.pool import detect_on_cluster

    pair = plant(case="memorised", severity="high", dataset="wine", seed=4)
    cfg = {"n_null": 49, "classifier": "logistic", "mi_pairs": 2, "mi_rows": 60}
    workers = {"num_workers": 2, "num_gpus": 0}
    first, s1 = detect_on_cluster(pair.real, pair.synth, cfg, workers, out_dir=tmp_path)
    assert (s1["dimensions_computed"], s1["dimensions_skipped"], s1["workers"]) == (8, 0, 2)
    files = sorted(tmp_path.glob("dimension-*.pkl"))
    assert [f.name for f in files] == [f"dimension-{k:02d}.pkl" for k in range(len(DIMENSIONS))]
    stamps = {f: f.stat().st_mtime_ns for f in files}
    local = detect(pair.real, pair.synth, cfg)   # the independent reference: the in-process engine
    assert first.flagged() == local.flagged()
    assert first.dimensions["memorisation"].p_value == pytest.approx(1 / 50)   # beyond all 49 null draws
    assert [d.p_value for d in first.dimensions.values()] == [d.p_value for d in local.dimensions.values()]

    again, s2 = detect_on_cluster(pair.real, pair.synth, cfg, workers, out_dir=tmp_path)
    assert (s2["dimensions_computed"], s2["dimensions_skipped"], s2["workers"]) == (0, 8, 0)   # no actor needed
    assert _same(again.to_json(), first.to_json())
    assert {f: f.stat().st_mtime_ns for f in files} == stamps   # nothing rewritten

    (tmp_path / f"dimension-{DIMENSIONS.index('classifier'):02d}.pkl").unlink()   # a job killed mid-run
    part, s3 = detect_on_cluster(pair.real, pair.synth, cfg, workers, out_dir=tmp_path)
    assert (s3["dimensions_computed"], s3["dimensions_skipped"]) == (1, 7)
    assert _same(part.to_json(), first.to_json())

    other = pair.synth.assign(alcohol=pair.synth["alcohol"] + 0.01)   # other data: refused, not mixed in
    with pytest.raises(InputError) as err:
        detect_on_cluster(pair.real, other, cfg, workers, out_dir=tmp_path)
    assert err.value.field == "out"
    with pytest.raises(InputError) as err:
        detect_on_cluster(pair.real, pair.synth, {**cfg, "seed": 1}, workers, out_dir=tmp_path)
    assert err.value.field == "out"


@pytest.mark.slow
def test_job_on_the_pool_resumes_into_the_same_report(ray_cluster, tmp_path, capsys):
    out = tmp_path / "val"
    argv = ["--planted", "label_noise", "--severity", "high", "--dataset", "wine", "--out", str(out),
            "--config", CONFIG, "--set", "detector.n_null=49", "recommender.fixes=[relabel]"]
    assert main(argv) == 0
    first = json.loads((out / "report.json").read_text())
    assert first["timing"]["dimensions_computed"] == 8 and (out / "dimensions" / "spec.json").exists()
    capsys.readouterr()
    assert main(argv) == 0
    again = json.loads((out / "report.json").read_text())
    assert again["timing"]["dimensions_skipped"] == 8 and again["timing"]["dimensions_computed"] == 0
    for key in ("collapsed", "dimensions", "details", "flagged_rows", "recommendations", "planted"):
        assert _same(again[key], first[key]), key
    summary = json.loads(capsys.readouterr().out)
    assert summary["collapsed"] is first["collapsed"] and summary["timing"]["dimensions_skipped"] == 8


def test_one_pipeline_for_the_job_and_serve(tmp_path):
    """jobs.validate.run and the Serve app's run_recommend both go through pipeline.validate."""
    from actors.validation.pipeline import validate
    from actors.validation.planted import plant
    from jobs.validate import load_spec, run
    from serve.validation import RecommendRequest, Table, ValidationServeArgs, run_recommend

    pair = plant(case="label_noise", severity="high", dataset="wine", seed=5)
    spec = load_spec(CONFIG, {"recommender.fixes": ["relabel", "drop_outliers"], "recommender.n_null": 19})
    res = validate(pair.real, pair.synth, spec, label="target")
    doc = run(spec, pair.real, pair.synth, tmp_path, label="target")
    assert doc["collapsed"] is res.report.collapsed is True
    assert [r["fix"] for r in doc["recommendations"]] == [r.fix for r in res.recommendations]
    assert [r["index"] for r in doc["flagged_rows"]] == [r.index for r in res.localization.rows]
    records = {"records": pair.real.to_dict(orient="records")}
    req = RecommendRequest(real=Table(**records), synthetic=Table(records=pair.synth.to_dict(orient="records")),
                           label="target", detector=spec.detector.model_dump(),
                           recommender=spec.recommender.model_dump(), localizer=spec.localizer.model_dump())
    served = run_recommend(req, ValidationServeArgs(max_inline_rows=1000))
    assert served["failing"] == res.report.flagged()
    assert [r["fix"] for r in served["recommendations"]] == [r.fix for r in res.recommendations]
    with pytest.raises(InputError) as err:
        validate(pair.real, pair.synth.drop(columns=["target"]), spec, label="target")
    assert err.value.field == "label"


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
