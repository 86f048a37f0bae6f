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
    # by path: only with data_root, relative to it or absolute inside it (tests/test_validation_hardening.py
    # checks the refusals)
    noisy.real.to_parquet(tmp_path / "r.parquet")
    noisy.synth.to_csv(tmp_path / "s.csv", index=False)
    rooted = TestClient(make_fastapi(ValidationServeArgs(max_inline_rows=150, max_rows=1000, data_root=str(tmp_path))))
    body2 = {**body, "real": {"path": "r.parquet"}, "synthetic": {"path": str(tmp_path / "s.csv")}}
    r2 = rooted.post("/validation/detect", json=body2)
    assert r2.status_code == 200 and r2.json()["dimensions"] == doc["dimensions"]
    r3 = client.post("/validation/detect", json=body2)   # the default app reads no files
    assert r3.status_code == 422 and r3.json()["detail"]["field"] == "real.path"


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


# ---- PreScreenRisk, TrainCascade, GetPredictions (in-process; tests/test_validation_grpc.py runs them on Serve)
LADDER = {"rungs": [{"kind": "linear", "c": 0.1}, {"kind": "hgb", "depth": 2, "iterations": 20}],
          "patience": 2, "cv_folds": 2}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("vserve")
    args = ValidationServeArgs(max_inline_rows=150, max_rows=1000, signature_dir=str(root / "sig"),
                               model_dir=str(root / "models"), seed_cases=("label_noise", "mode_collapse", "clean"),
                               seed_severities=("high",))
    return args, TestClient(make_fastapi(args))


def test_frozen_encoder_reproduces_cascade_features(noisy):
    from actors.validation.cascade import prepare
    from actors.validation.cascade_config import CascadeConfig
    from actors.validation.model_store import FrozenEncoder
    from actors.validation.planted import plant

    miss = plant(case="missingness", severity="high", dataset="wine", seed=3)
    for pair in (noisy, miss):
        data, _, _ = prepare(pair.real, pair.synth, "target", CascadeConfig())
        enc = FrozenEncoder.fit(pair.real, pair.synth, "target")
        np.testing.assert_array_equal(enc.transform(pair.synth), data.F_syn)
        np.testing.assert_array_equal(enc.transform(pair.real), data.F_real)
    assert enc.missing_flags   # the missingness case exercises the missing-value indicators


def test_prescreen_matches_the_library(store, noisy):
    from actors.validation.config import DetectorConfig
    from actors.validation.detector import detect
    from actors.validation.signatures import SEED_DETECTOR, SignatureLibrary, fingerprint

    args, client = store
    body = {"real": {"records": records(noisy.real)}, "synthetic": {"csv": noisy.synth.to_csv(index=False)}, "k": 3}
    r = client.post("/validation/prescreen", json=body)
    assert r.status_code == 200, r.text
    lib = SignatureLibrary.load(args.signature_dir)
    report = detect(noisy.real, noisy.synth, DetectorConfig(**SEED_DETECTOR))
    want = lib.prescreen_risk(fingerprint(report, noisy.real, noisy.synth), 3)
    got = r.json()["matches"]
    assert [m["label"] for m in got] == [m.label for m in want] and got[0]["label"] == "label_noise"
    np.testing.assert_allclose([m["similarity"] for m in got], [m.similarity for m in want], atol=1e-6)
    # a given detect report is fingerprinted as is (no detector run)
    r2 = client.post("/validation/prescreen", json={**body, "report": report.to_json()})
    np.testing.assert_allclose(r2.json()["fingerprint"], r.json()["fingerprint"], atol=1e-6)
    r3 = client.post("/validation/prescreen", json={**body, "report": {"nope": 1}})
    assert r3.status_code == 422 and r3.json()["detail"]["field"].startswith("report.")
    r4 = client.post("/validation/prescreen", json={**body, "k": 999})
    assert r4.status_code == 422 and r4.json()["detail"]["field"] == "k"


def test_cascade_stream_then_predictions(store, noisy):
    import json

    from actors.validation.cascade import prepare, train_cascade
    from actors.validation.cascade_config import CascadeConfig
    from actors.validation.rungs import probabilities, train_rung

    _, client = store
    body = {"real": {"records": records(noisy.real)}, "synthetic": {"records": records(noisy.synth)},
            "label": "target", "cascade": LADDER}
    r = client.post("/validation/cascade", json=body)
    assert r.status_code == 200
    events = [json.loads(line) for line in r.text.splitlines()]
    assert [e["status"] for e in events] == ["started", "done", "started", "done", "out_of_fold", "finished"]
    cfg = CascadeConfig.model_validate(LADDER)
    want = train_cascade(noisy.real, noisy.synth, "target", cfg)
    res = events[-1]["result"]
    assert res["best"] == want.best and res["classes"] == want.classes
    np.testing.assert_allclose([x["utility"] for x in res["rungs"]], [x.utility for x in want.rungs])

    data, _, classes = prepare(noisy.real, noisy.synth, "target", cfg)
    _, model = train_rung(cfg.rungs[want.best], want.best, data, cfg)
    want_p = probabilities(model, data.F_real[:30], len(classes))
    model_id = events[-1]["model_id"]
    r = client.post("/validation/predict", json={"model_id": model_id, "rows": {"records": records(noisy.real.head(30))}})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["probabilities"], want_p, atol=1e-9)
    assert r.json()["predictions"] == [classes[k] for k in want_p.argmax(axis=1)]

    rows = noisy.real.head(30)
    bad = [({"model_id": "0123456789ab"}, 404, "model_id"), ({"model_id": "../etc"}, 404, "model_id"),
           ({"rows": {"records": records(rows.drop(columns=["ash"]))}}, 422, "rows"),
           ({"rows": {"records": records(rows.assign(ash=None))}}, 422, "rows.ash"),
           ({"rows": {"records": records(rows.assign(ash="x"))}}, 422, "rows.ash"),
           ({"rows": {"csv": "alcohol,ash\n"}}, 422, "rows"),
           ({"rows": {"csv": "a\n" + "1\n" * 200}}, 413, "rows.csv")]
    for change, status, field in bad:
        r = client.post("/validation/predict", json={"model_id": model_id, "rows": {"records": records(rows)},
                                                     **change})
        assert r.status_code == status and r.json()["detail"]["field"] == field, (change, r.text)
    r = client.post("/validation/cascade", json={**body, "label": "nope"})
    assert r.status_code == 422 and r.json()["detail"]["field"] == "label"
    r = client.post("/validation/cascade", json={**body, "cascade": {"cv_folds": 1}})
    assert r.status_code == 422 and r.json()["detail"]["field"] == "cascade.cv_folds"


class _Ctx:
    """Stands in for Serve's RayServegRPCContext (set_code / set_details)."""

    code = details = None

    def __init__(self, peer: str = "ipv4:127.0.0.1:50000"):
        self._peer = peer

    def peer(self) -> str:
        return self._peer

    def set_code(self, code):
        self.code = code

    def set_details(self, details):
        self.details = details


def test_grpc_methods_map_errors_to_status_codes(store, noisy):
    import json
    from functools import partial
    from types import SimpleNamespace

    import grpc

    from serve.protos import validation_pb2 as pb
    from serve.validation import ValidationIngress

    args, _ = store
    cls, state = ValidationIngress.func_or_class, SimpleNamespace(args=args)   # the methods only read self.args
    ingress = SimpleNamespace(**{m: partial(getattr(cls, m), state) for m in
                                 ("AnalyzeDiversity", "GetPredictions", "DetectCollapse")})
    tab = pb.Table(records_json=json.dumps(records(noisy.synth)).encode())
    reply = ingress.AnalyzeDiversity(pb.DiversityRequest(table=tab), grpc_context=_Ctx())
    assert reply.vendi == pytest.approx(json.loads(reply.json)["vendi"]) and reply.vendi >= 1
    cases = [(ingress.AnalyzeDiversity, pb.DiversityRequest(), grpc.StatusCode.INVALID_ARGUMENT, "table"),
             (ingress.AnalyzeDiversity, pb.DiversityRequest(table=pb.Table(records_json=b"{")),
              grpc.StatusCode.INVALID_ARGUMENT, "records_json"),
             (ingress.GetPredictions, pb.PredictRequest(model_id="0123456789ab", rows=tab),
              grpc.StatusCode.NOT_FOUND, "model_id"),
             (ingress.DetectCollapse, pb.DetectRequest(real=tab, synthetic=tab, detector_json='{"alpha": 3}'),
              grpc.StatusCode.INVALID_ARGUMENT, "detector.alpha")]
    for method, request, code, field in cases:
        ctx = _Ctx()
        method(request, grpc_context=ctx)
        assert ctx.code == code and json.loads(ctx.details)["field"] == field
