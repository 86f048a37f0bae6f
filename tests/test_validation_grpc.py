"""serve.validation on a real Ray Serve instance (private temp dir and ports): all 7 endpoints over
HTTP JSON and over gRPC (Serve's gRPC proxy, serve/protos/validation.proto), bad input on both, and
the answers equal to the engine functions on the same data."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from actors.validation.planted import plant
from serve.validation import GRPC_SERVICER

CHEAP = {"classifier": "logistic", "mi_rows": 60, "mi_pairs": 2}
LADDER = {"rungs": [{"kind": "linear", "c": 0.1}, {"kind": "linear", "c": 1.0}], "patience": 1, "cv_folds": 2}


@pytest.fixture(scope="module")
def served(serve_instance):
    """(http base url, gRPC stub, serve args, temp dir) of the validation app on the conftest Serve instance
    (private ports, gRPC proxy on: see the test's indirect parameter); torn down after the module."""
    import grpc
    from ray import serve

    from serve.protos import validation_pb2_grpc
    from serve.validation import build_app

    tmp = serve_instance.temp_dir
    args = {"max_inline_rows": 150, "max_rows": 1000, "num_cpus": 0.5, "signature_dir": f"{tmp}/sig",
            "model_dir": f"{tmp}/models", "seed_cases": ["label_noise", "mode_collapse", "clean"],
            "seed_severities": ["high"]}
    serve.run(build_app(args), name="validation", route_prefix="/")
    channel = grpc.insecure_channel(serve_instance.grpc_target)
    try:
        yield serve_instance.url, validation_pb2_grpc.ValidationServiceStub(channel), args, tmp
    finally:
        channel.close()


@pytest.fixture(scope="module")
def pair():
    return plant(case="label_noise", severity="high", dataset="wine", seed=7)


def _rec(df) -> list[dict]:
    return df.to_dict(orient="records")


def _tab(df) -> dict:
    return {"records": _rec(df)}


def _ptab(df):
    from serve.protos import validation_pb2 as pb

    return pb.Table(records_json=json.dumps(_rec(df)).encode())


def _grpc_error(call, *args):
    import grpc

    with pytest.raises(grpc.RpcError) as err:
        out = call(*args)
        if not hasattr(out, "SerializeToString"):   # a stream: errors surface on iteration
            list(out)
    return err.value.code(), json.loads(err.value.details())


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("serve_instance", [{"grpc_servicer_functions": [GRPC_SERVICER]}], ids=["grpc"],
                         indirect=True)
def test_all_seven_over_http_and_grpc(served, pair):
    import grpc
    import httpx

    from actors.validation.cascade import prepare, train_cascade
    from actors.validation.cascade_config import CascadeConfig
    from actors.validation.config import DetectorConfig
    from actors.validation.detector import detect
    from actors.validation.diversity import analyze
    from actors.validation.localize import localize
    from actors.validation.rungs import probabilities, train_rung
    from actors.validation.signatures import SEED_DETECTOR, SignatureLibrary, fingerprint
    from serve.protos import validation_pb2 as pb

    base, stub, args, tmp = served
    real, synth = pair.real, pair.synth
    with httpx.Client(base_url=base, timeout=120) as http:
        deadline = time.time() + 60
        while (r := http.get("/healthz")).status_code != 200 and time.time() < deadline:
            time.sleep(0.5)
        assert r.status_code == 200

        # DetectCollapse: HTTP == gRPC == detect()
        want = detect(real, synth, DetectorConfig(**CHEAP)).to_json()
        r = http.post("/validation/detect", json={"real": _tab(real), "synthetic": _tab(synth), "detector": CHEAP})
        assert r.status_code == 200, r.text
        g = stub.DetectCollapse(pb.DetectRequest(real=_ptab(real), synthetic=_ptab(synth),
                                                 detector_json=json.dumps(CHEAP)))
        for doc in (r.json(), json.loads(g.json)):
            assert doc["collapsed"] is want["collapsed"] is True
            for k, d in want["dimensions"].items():
                assert doc["dimensions"][k]["p_value"] == pytest.approx(d["p_value"])
        assert g.collapsed and "correlation" in g.failing

        # LocalizeProblems: the same flagged rows as localize()
        loc = localize(real, synth, label="target")
        want_rows = [row["index"] for row in loc.to_json(1000)]
        r = http.post("/validation/localize", json={"real": _tab(real), "synthetic": _tab(synth), "label": "target"})
        g = stub.LocalizeProblems(pb.LocalizeRequest(real=_ptab(real), synthetic=_ptab(synth), label="target"))
        assert [x["index"] for x in r.json()["flagged_rows"]] == want_rows
        assert [x["index"] for x in json.loads(g.json)["flagged_rows"]] == want_rows and g.n_flagged == len(want_rows)
        assert np.isin([i for i in want_rows[:10]], pair.rows).mean() >= 0.8

        # GenerateRecommendations: relabel first for label noise, on both
        rec = {"detector": CHEAP, "recommender": {"n_null": 19, "fixes": ["relabel", "drop_outliers"]}}
        r = http.post("/validation/recommend", json={"real": _tab(real), "synthetic": _tab(synth), "label": "target",
                                                     **rec})
        g = stub.GenerateRecommendations(pb.RecommendRequest(
            real=_ptab(real), synthetic=_ptab(synth), label="target", detector_json=json.dumps(CHEAP),
            recommender_json=json.dumps(rec["recommender"])))
        assert r.json()["recommendations"][0]["fix"] == g.top_fix == "relabel"
        assert json.loads(g.json) == r.json()

        # AnalyzeDiversity: == analyze()
        want = analyze(synth, real)
        r = http.post("/validation/diversity", json={"table": _tab(synth), "reference": _tab(real)})
        g = stub.AnalyzeDiversity(pb.DiversityRequest(table=_ptab(synth), reference=_ptab(real)))
        assert r.json()["vendi"] == pytest.approx(want["vendi"]) and g.vendi == pytest.approx(want["vendi"])

        # PreScreenRisk: the seeded library's nearest pattern, equal to the library queried directly
        r = http.post("/validation/prescreen", json={"real": _tab(real), "synthetic": _tab(synth), "k": 3})
        assert r.status_code == 200, r.text
        g = stub.PreScreenRisk(pb.PreScreenRequest(real=_ptab(real), synthetic=_ptab(synth), k=3))
        lib = SignatureLibrary.load(args["signature_dir"])
        assert len(lib) == 3 == r.json()["library_size"]
        fp = fingerprint(detect(real, synth, DetectorConfig(**SEED_DETECTOR)), real, synth)
        want = lib.prescreen_risk(fp, 3)
        got = r.json()["matches"]
        assert [m["label"] for m in got] == [m.label for m in want] and want[0].label == "label_noise"
        np.testing.assert_allclose([m["similarity"] for m in got], [m.similarity for m in want], atol=1e-6)
        assert g.top_label == "label_noise" and g.top_similarity == pytest.approx(want[0].similarity, abs=1e-6)

        # TrainCascade (streamed) then GetPredictions, both protocols; == the in-process cascade
        cfg = CascadeConfig.model_validate(LADDER)
        want = train_cascade(real, synth, "target", cfg)
        r = http.post("/validation/cascade", json={"real": _tab(real), "synthetic": _tab(synth), "label": "target",
                                                   "cascade": LADDER})
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
        events = [json.loads(line) for line in r.text.splitlines()]
        assert events[0]["status"] == "started" and events[-1]["status"] == "finished"
        http_id = events[-1]["model_id"]
        g_events = list(stub.TrainCascade(pb.CascadeRequest(real=_ptab(real), synthetic=_ptab(synth), label="target",
                                                            cascade_json=json.dumps(LADDER))))
        assert [e.status for e in g_events] == [e["status"] for e in events]
        grpc_id = g_events[-1].model_id
        assert len(grpc_id) == 12 and grpc_id != http_id
        for res in (events[-1]["result"], json.loads(g_events[-1].json)["result"]):
            assert res["best"] == want.best
            np.testing.assert_allclose([x["utility"] for x in res["rungs"]], [x.utility for x in want.rungs])

        data, _, classes = prepare(real, synth, "target", cfg)
        _, model = train_rung(cfg.rungs[want.best], want.best, data, cfg)
        want_p = probabilities(model, data.F_real[:20], len(classes))
        r = http.post("/validation/predict", json={"model_id": http_id, "rows": _tab(real.head(20))})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["probabilities"], want_p, atol=1e-9)
        g = stub.GetPredictions(pb.PredictRequest(model_id=grpc_id, rows=pb.Table(csv=real.head(20).to_csv(
            index=False).encode())))
        assert list(g.predictions) == [classes[k] for k in want_p.argmax(axis=1)] == r.json()["predictions"]

        # bad input: 4xx over HTTP, the matching gRPC status with the field named
        short = _rec(synth.drop(columns=["alcohol"]))
        r = http.post("/validation/detect", json={"real": _tab(real), "synthetic": {"records": short}})
        assert r.status_code == 422 and r.json()["detail"]["field"] == "synthetic"
        code, detail = _grpc_error(stub.DetectCollapse, pb.DetectRequest(
            real=_ptab(real), synthetic=pb.Table(records_json=json.dumps(short).encode())))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and detail["field"] == "synthetic"
        big = real.sample(200, replace=True, random_state=0)
        code, detail = _grpc_error(stub.AnalyzeDiversity, pb.DiversityRequest(table=_ptab(big)))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and detail["field"] == "table.records"
        code, detail = _grpc_error(stub.LocalizeProblems, pb.LocalizeRequest(real=_ptab(real),
                                                                             synthetic=_ptab(synth), label="nope"))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and detail["field"] == "label"
        nan = real.assign(alcohol=np.nan)
        code, detail = _grpc_error(stub.GenerateRecommendations, pb.RecommendRequest(real=_ptab(nan),
                                                                                     synthetic=_ptab(synth)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and detail["field"] == "real.alcohol"
        code, detail = _grpc_error(stub.PreScreenRisk, pb.PreScreenRequest(real=pb.Table(csv=b"a,b\n"),
                                                                           synthetic=_ptab(synth)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and detail["field"] == "real"
        code, detail = _grpc_error(stub.TrainCascade, pb.CascadeRequest(real=_ptab(real), synthetic=_ptab(synth),
                                                                        label="target", cascade_json='{"patience": 0}'))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and detail["field"] == "cascade.patience"
        r = http.post("/validation/cascade", json={"real": _tab(real), "synthetic": _tab(synth), "label": "nope"})
        assert r.status_code == 422 and r.json()["detail"]["field"] == "label"
        code, detail = _grpc_error(stub.GetPredictions, pb.PredictRequest(model_id="0123456789ab", rows=_ptab(real)))
        assert code == grpc.StatusCode.NOT_FOUND and detail["field"] == "model_id"
        r = http.post("/validation/predict", json={"model_id": "nope", "rows": _tab(real)})
        assert r.status_code == 404 and r.json()["detail"]["field"] == "model_id"
        code, detail = _grpc_error(stub.GetPredictions, pb.PredictRequest(
            model_id=grpc_id, rows=pb.Table(csv=real.assign(ash="x").head(5).to_csv(index=False).encode())))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and detail["field"] == "rows.ash"


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("serve_instance", [{"grpc_servicer_functions": [GRPC_SERVICER]}], ids=["grpc"],
                         indirect=True)
def test_limits_on_a_served_app(served, serve_instance, pair):
    """Issue 11 through Serve's real proxies: a huge n_null under request_timeout_s=2 is a 504 / DEADLINE_EXCEEDED
    naming request_timeout_s within seconds (findings 1, 9); a path, a non-finite cell and a junk report are
    refused with the same {field, message, allowed} over HTTP and gRPC (findings 2, 3); a loopback gRPC client
    is served (the peer check parses Serve's real peer string)."""
    import grpc
    import httpx
    from ray import serve

    from serve.protos import validation_pb2 as pb
    from serve.validation import build_app

    base, stub, args, _ = served
    serve.run(build_app({**args, "request_timeout_s": 2}), name="limits", route_prefix="/limits")
    meta = (("application", "limits"),)
    real, synth = pair.real, pair.synth
    try:
        with httpx.Client(base_url=f"{base}/limits", timeout=120) as http:
            deadline = time.time() + 60
            while (r := http.get("/healthz")).status_code != 200 and time.time() < deadline:
                time.sleep(0.5)
            t0 = time.perf_counter()
            r = http.post("/validation/detect", json={"real": _tab(real), "synthetic": _tab(synth),
                                                      "detector": {"n_null": 100_000}})
            assert r.status_code == 504 and r.json()["detail"]["field"] == "request_timeout_s", r.text
            assert time.perf_counter() - t0 < 20
            t0 = time.perf_counter()
            code, detail = _grpc_error(partial_call(stub.DetectCollapse, meta), pb.DetectRequest(
                real=_ptab(real), synthetic=_ptab(synth), detector_json=json.dumps({"n_null": 100_000})))
            assert code == grpc.StatusCode.DEADLINE_EXCEEDED and detail == r.json()["detail"]
            assert time.perf_counter() - t0 < 20

            rows = _rec(real)
            rows[2]["alcohol"] = float("inf")
            cases = [
                ({"real": {"path": "/etc/hosts.csv"}, "synthetic": _tab(synth)},
                 pb.DetectRequest(real=pb.Table(path="/etc/hosts.csv"), synthetic=_ptab(synth)), "real.path"),
                ({"real": {"records": rows}, "synthetic": _tab(synth), "detector": CHEAP},
                 pb.DetectRequest(real=pb.Table(records_json=json.dumps(rows).encode()), synthetic=_ptab(synth),
                                  detector_json=json.dumps(CHEAP)), "real.alcohol")]
            for body, request, field in cases:
                r = http.post("/validation/detect", content=json.dumps(body),   # Infinity: a JSON token httpx refuses
                              headers={"content-type": "application/json"})
                assert r.status_code == 422 and r.json()["detail"]["field"] == field, r.text
                code, detail = _grpc_error(partial_call(stub.DetectCollapse, meta), request)
                assert code == grpc.StatusCode.INVALID_ARGUMENT and detail == r.json()["detail"]
            junk = {"collapsed": True, "dimensions": {}}
            r = http.post("/validation/prescreen", json={"real": _tab(real), "synthetic": _tab(synth), "report": junk})
            code, detail = _grpc_error(partial_call(stub.PreScreenRisk, meta), pb.PreScreenRequest(
                real=_ptab(real), synthetic=_ptab(synth), report_json=json.dumps(junk)))
            assert r.status_code == 422 and code == grpc.StatusCode.INVALID_ARGUMENT
            assert detail == r.json()["detail"] and detail["field"] == "report.dimensions"
            r = http.get("/validation/nope")
            assert r.status_code == 404 and set(r.json()["detail"]) == {"field", "message", "allowed"}
            ok = stub.AnalyzeDiversity(pb.DiversityRequest(table=_ptab(synth)), metadata=meta)   # loopback: served
            assert ok.vendi >= 1
    finally:
        serve.delete("limits")


def partial_call(method, metadata):
    """A stub method bound to call metadata (which Serve application answers)."""
    return lambda request: method(request, metadata=metadata)
