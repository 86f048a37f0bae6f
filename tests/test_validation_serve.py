"""serve.validation over HTTP (FastAPI TestClient, no Ray): the four endpoints and their 4xx."""
from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from actors.validation.diversity import vendi_score
from actors.validation.planted import plant
from serve.validation import ValidationServeArgs, make_fastapi


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(make_fastapi(ValidationServeArgs(max_inline_rows=150, max_rows=1000)))


def records(df):
    return df.to_dict(orient="records")


@pytest.fixture(scope="module")
def noisy():
    return plant(case="label_noise", severity="high", dataset="wine", seed=7)


def test_detect_inline_and_by_path(client, noisy, tmp_path):
    body = {"real": {"records": records(noisy.real)}, "synthetic": {"records": records(noisy.synth)},
            "detector": {"classifier": "logistic", "mi_rows": 60, "mi_pairs": 2}}
    r = client.post("/validation/detect", json=body)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["collapsed"] and doc["dimensions"]["correlation"]["flagged"]
    noisy.real.to_parquet(tmp_path / "r.parquet")
    noisy.synth.to_csv(tmp_path / "s.csv", index=False)
    body2 = {**body, "real": {"path": str(tmp_path / "r.parquet")}, "synthetic": {"path": str(tmp_path / "s.csv")}}
    r2 = client.post("/validation/detect", json=body2)
    assert r2.status_code == 200 and r2.json()["dimensions"] == doc["dimensions"]


def test_localize_and_recommend(client, noisy):
    base = {"real": {"records": records(noisy.real)}, "synthetic": {"records": records(noisy.synth)},
            "label": "target"}
    r = client.post("/validation/localize", json=base)
    assert r.status_code == 200
    issues = [row["index"] for row in r.json()["flagged_rows"] if "label_issue" in row["kind"]]
    assert np.isin(issues, noisy.rows).mean() >= 0.8
    body = {**base, "detector": {"classifier": "logistic", "mi_rows": 60, "mi_pairs": 2},
            "recommender": {"n_null": 49, "fixes": ["relabel", "drop_outliers"]}}
    r = client.post("/validation/recommend", json=body)
    assert r.status_code == 200
    assert r.json()["recommendations"][0]["fix"] == "relabel"


def test_diversity_and_vendi_closed_forms(client, noisy):
    r = client.post("/validation/diversity", json={"table": {"records": records(noisy.synth)},
                                                   "reference": {"records": records(noisy.real)}})
    assert r.status_code == 200
    doc = r.json()
    assert 1 <= doc["vendi"] <= len(noisy.synth) and doc["columns"]["target"]["coverage"] == 1.0
    assert vendi_score(np.zeros((10, 3))) == pytest.approx(1.0)                  # identical rows: one
    assert vendi_score(np.eye(6) * 100, bandwidth=1.0) == pytest.approx(6.0)     # far apart: n


def test_bad_input_is_4xx_naming_the_field(client, noisy):
    real = records(noisy.real)
    synth = records(noisy.synth.drop(columns=["alcohol"]))
    r = client.post("/validation/detect", json={"real": {"records": real}, "synthetic": {"records": synth}})
    assert r.status_code == 422 and r.json()["detail"]["field"] == "synthetic"
    big = records(noisy.real.sample(200, replace=True, random_state=0))
    r = client.post("/validation/detect", json={"real": {"records": big}, "synthetic": {"records": real}})
    assert r.status_code == 413 and r.json()["detail"]["field"] == "real.records"
    r = client.post("/validation/detect", json={"real": {"records": []}, "synthetic": {"records": real}})
    assert r.status_code == 422 and r.json()["detail"]["field"] == "real"
    r = client.post("/validation/detect", json={"real": {"records": real}, "synthetic": {"records": real},
                                                "detector": {"alpha": 3}})
    assert r.status_code == 422 and r.json()["detail"]["field"] == "detector.alpha"
    r = client.post("/validation/localize", json={"real": {"records": real}, "synthetic": {"records": real},
                                                  "label": "nope"})
    assert r.status_code == 422 and r.json()["detail"]["field"] == "label"
    r = client.post("/validation/detect", json={"real": {"path": "/nonexistent.parquet"},
                                                "synthetic": {"records": real}})
    assert r.status_code == 422 and r.json()["detail"]["field"] == "real.path"
    nan = [{**row, "alcohol": None} for row in real]
    r = client.post("/validation/detect", json={"real": {"records": nan}, "synthetic": {"records": real}})
    assert r.status_code == 422 and "all missing" in r.json()["detail"]["message"]
