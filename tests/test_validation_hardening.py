"""Issue 11 regressions of the validation app, over HTTP (FastAPI TestClient) and its gRPC methods (a stand-in
context, no Serve): no file reading through the API (finding 2), one error contract with finite numbers
(finding 3), work bounded by the request's budget and stopped by cancellation (finding 1)."""
from __future__ import annotations

import json
import os
import threading
import time
from functools import partial
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from actors.common.budget import Budget, BudgetExceeded, Cancelled, scope
from actors.validation.planted import plant
from serve.validation import ValidationIngress, ValidationServeArgs, loopback_peer, make_fastapi

CHEAP = {"classifier": "logistic", "mi_rows": 60, "mi_pairs": 2, "n_null": 19}
ERROR_KEYS = {"field", "message", "allowed"}


@pytest.fixture(scope="module")
def pair():
    return plant(case="label_noise", severity="high", dataset="wine", seed=7)


def records(df: pd.DataFrame) -> list[dict]:
    return df.to_dict(orient="records")


def app(**kw) -> TestClient:
    return TestClient(make_fastapi(ValidationServeArgs(max_inline_rows=150, max_rows=1000, **kw)))


class Ctx:
    """Stands in for Serve's RayServegRPCContext: peer(), set_code(), set_details()."""

    def __init__(self, peer: str = "ipv4:127.0.0.1:50000"):
        self._peer, self.code, self.details = peer, None, None

    def peer(self) -> str:
        return self._peer

    def set_code(self, code):
        self.code = code

    def set_details(self, details):
        self.details = details


def ingress(args: ValidationServeArgs):
    """The deployment's gRPC methods bound to a state holding only `args` (all they read)."""
    cls, state = ValidationIngress.func_or_class, SimpleNamespace(args=args)
    return SimpleNamespace(**{m: partial(getattr(cls, m), state) for m in
                              ("DetectCollapse", "AnalyzeDiversity", "PreScreenRisk", "TrainCascade")})


def ptable(df: pd.DataFrame | None = None, *, path: str | None = None, raw: str | None = None):
    from serve.protos import validation_pb2 as pb

    if path is not None:
        return pb.Table(path=path)
    return pb.Table(records_json=(raw if raw is not None else json.dumps(records(df))).encode())


# ---- finding 2: reading by path ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def root(tmp_path_factory, pair):
    """<tmp>/root with r.parquet, s.csv and links; <tmp>/secret.csv (an `ssn` column) outside it."""
    base = tmp_path_factory.mktemp("paths")
    root = base / "root"
    (root / "sub").mkdir(parents=True)
    (root / "dir.csv").mkdir()                                       # not a regular file
    pair.real.to_parquet(root / "r.parquet")
    pair.synth.to_csv(root / "sub" / "s.csv", index=False)
    pd.DataFrame({"ssn": np.arange(100_000_000, 100_000_040), "zip_code": np.arange(40)}).to_csv(
        base / "secret.csv", index=False)
    os.symlink(base / "secret.csv", root / "link_out.csv")          # a symlink out of the root
    os.symlink(root / "sub" / "s.csv", root / "link_in.csv")        # a symlink within it
    (root / "not_a_table.csv").write_bytes(b"\x00\x01garbage\xff" * 3)
    return root


def test_paths_are_off_by_default(pair, root):
    """Finding 2: the default app reads no file, whatever the path (one message, no oracle)."""
    client = app()
    bodies = [client.post("/validation/diversity", json={"table": {"path": p}}).json()
              for p in (str(root / "r.parquet"), str(root.parent / "secret.csv"), "/nonexistent/x.csv")]
    assert all(b == bodies[0] for b in bodies), bodies
    assert bodies[0]["detail"]["field"] == "table.path" and "no tables by path" in bodies[0]["detail"]["message"]


def test_data_root_confines_paths_without_an_existence_oracle(pair, root):
    """Finding 2: with data_root, only paths resolving inside it are read; `..`, absolute paths and
    symlinks out of it, missing files and non-files all get one and the same answer, and no column of a
    file outside the root appears in any answer."""
    client = app(data_root=str(root))
    inline = client.post("/validation/diversity", json={"table": {"records": records(pair.synth)},
                                                        "reference": {"records": records(pair.real)}}).json()
    ok = client.post("/validation/diversity", json={"table": {"path": "sub/s.csv"}, "reference": {"path": "r.parquet"}})
    assert ok.status_code == 200 and ok.json()["vendi"] == pytest.approx(inline["vendi"])
    via_link = client.post("/validation/diversity", json={"table": {"path": "link_in.csv"},
                                                          "reference": {"path": str(root / "r.parquet")}})
    assert via_link.status_code == 200 and via_link.json()["vendi"] == pytest.approx(inline["vendi"])

    refused = ["../secret.csv", str(root.parent / "secret.csv"), "sub/../../secret.csv", "link_out.csv",
               "../missing.csv", "/etc/missing.csv", "missing.csv", "sub/../../../../../../etc/passwd.csv",
               "dir.csv", "sub/nothing/../../../secret.parquet"]
    answers = []
    for path in refused:
        for route, body in (("/validation/diversity", {"table": {"path": path}}),
                            ("/validation/detect", {"real": {"path": path}, "synthetic": {"records": records(pair.synth)}})):
            r = client.post(route, json=body)
            assert r.status_code == 422, (path, r.text)
            assert "ssn" not in r.text and "zip_code" not in r.text and "100000000" not in r.text
            answers.append((route, r.json()["detail"]["field"], r.json()["detail"]["message"],
                            r.json()["detail"]["allowed"]))
    assert len(set(answers)) == 2, set(answers)   # one text per route: exists or not, inside or outside
    answers = sorted(set(answers))                # [detect (real.path), diversity (table.path)]
    r = client.post("/validation/diversity", json={"table": {"path": "/etc/passwd"}})   # not a table type
    assert r.status_code == 422 and r.json()["detail"]["field"] == "table.path"
    r = client.post("/validation/diversity", json={"table": {"path": "not_a_table.csv"}})  # inside: may say why
    assert r.status_code == 422 and r.json()["detail"]["field"] == "table.path"
    r = client.post("/validation/diversity", json={"table": {"path": "bad\x00name.csv"}})
    assert r.status_code == 422 and r.json()["detail"]["message"] == answers[1][2]

    # gRPC: the same refusal with the same detail
    import grpc

    from serve.protos import validation_pb2 as pb

    ctx = Ctx()
    ingress(ValidationServeArgs(max_inline_rows=150, max_rows=1000, data_root=str(root))).AnalyzeDiversity(
        pb.DiversityRequest(table=ptable(path="../secret.csv")), grpc_context=ctx)

    assert ctx.code == grpc.StatusCode.INVALID_ARGUMENT
    detail = json.loads(ctx.details)
    assert ("/validation/diversity", detail["field"], detail["message"], detail["allowed"]) == answers[1]


# ---- finding 3: finite numbers, junk reports, one error shape --------------------------------------------
def test_non_finite_and_huge_numbers_are_422_naming_the_column(pair):
    """Finding 3: 1e308, Infinity, -inf, 1e400 in a table (records, JSON tokens, CSV) are a 422 naming the
    column, over HTTP and gRPC alike; |x| <= 1e150 is computed with."""
    import grpc

    from serve.protos import validation_pb2 as pb

    client = app()
    real, synth = records(pair.real), records(pair.synth)
    for bad in (1e308, -1e200, float("inf")):
        rows = [dict(r) for r in real]
        rows[3]["alcohol"] = bad
        raw = json.dumps({"real": {"records": rows}, "synthetic": {"records": synth}, "detector": CHEAP})
        r = client.post("/validation/detect", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["detail"]["field"] == "real.alcohol" and "row 3" in r.json()["detail"]["message"]
        ctx = Ctx()   # the same over gRPC (records_json carries the same JSON tokens)
        ingress(ValidationServeArgs(max_inline_rows=150, max_rows=1000)).DetectCollapse(
            pb.DetectRequest(real=ptable(raw=json.dumps(rows)), synthetic=ptable(pair.synth),
                             detector_json=json.dumps(CHEAP)), grpc_context=ctx)
        assert ctx.code == grpc.StatusCode.INVALID_ARGUMENT and json.loads(ctx.details) == r.json()["detail"]
    lines = pair.synth.to_csv(index=False).splitlines()
    cols = lines[0].split(",")
    for token in ("inf", "-Infinity", "1e400"):
        row = lines[5].split(",")
        row[cols.index("ash")] = token
        text = "\n".join([*lines[:5], ",".join(row), *lines[6:]])
        r = client.post("/validation/detect", json={"real": {"records": real}, "synthetic": {"csv": text}})
        assert r.status_code == 422 and r.json()["detail"]["field"] == "synthetic.ash", (token, r.text)
    nested = [dict(r) for r in synth]
    nested[0]["target"] = {"a": 1}
    r = client.post("/validation/diversity", json={"table": {"records": nested}})
    assert r.status_code == 422 and r.json()["detail"]["field"] == "table.target"
    # settings: Infinity / booleans / numeric strings where numbers are expected name the setting
    for detector, field in (('{"alpha": Infinity}', "detector.alpha"), ('{"n_null": true}', "detector.n_null"),
                            ('{"n_null": "99"}', "detector.n_null"), ('{"seed": 1e308}', "detector.seed")):
        raw = f'{{"real": {json.dumps({"records": real})}, "synthetic": {json.dumps({"records": synth})}, ' \
              f'"detector": {detector}}}'
        r = client.post("/validation/detect", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["detail"]["field"] == field, (detector, r.text)
    # large but finite values are fine
    big = pair.real.assign(alcohol=pair.real["alcohol"] * 1e148)
    r = client.post("/validation/detect", json={"real": {"records": records(big)},
                                                "synthetic": {"records": records(pair.synth.assign(
                                                    alcohol=pair.synth["alcohol"] * 1e148))}, "detector": CHEAP})
    assert r.status_code == 200, r.text
    assert all(np.isfinite(d["score"]) and 0 < d["p_value"] <= 1 for d in r.json()["dimensions"].values())


def test_junk_prescreen_report_is_422_naming_the_field(pair, tmp_path):
    """Finding 3: a `report` that is not a /validation/detect document is a 422 naming the bad field
    (it used to be fingerprinted as all-clean and answered 200)."""
    args = ValidationServeArgs(max_inline_rows=150, max_rows=1000, signature_dir=str(tmp_path / "sig"),
                               seed_cases=("clean", "label_noise"), seed_severities=("high",))
    client = TestClient(make_fastapi(args))
    base = {"real": {"records": records(pair.real)}, "synthetic": {"records": records(pair.synth)}}
    dim = {"score": 3.0, "p_value": 0.01, "flagged": True, "columns": ["target"]}
    junk = [({"nope": 1}, "report.collapsed"),
            ({"collapsed": True, "dimensions": {}}, "report.dimensions"),
            ({"collapsed": True, "dimensions": {"junk": dim}}, "report.dimensions.junk.[key]"),
            ({"collapsed": True, "dimensions": {"marginals": {**dim, "score": "high"}}}, "report.dimensions.marginals.score"),
            ({"collapsed": True, "dimensions": {"marginals": {**dim, "p_value": 7}}}, "report.dimensions.marginals.p_value"),
            ({"collapsed": True, "dimensions": {"marginals": {**dim, "flagged": "yes"}}},
             "report.dimensions.marginals.flagged"),
            ({"collapsed": True, "dimensions": {"marginals": {**dim, "extra": 1}}}, "report.dimensions.marginals.extra"),
            ({"collapsed": "true", "dimensions": {"marginals": dim}}, "report.collapsed")]
    for report, field in junk:
        r = client.post("/validation/prescreen", json={**base, "report": report})
        assert r.status_code == 422 and r.json()["detail"]["field"] == field, (report, r.text)
    good = client.post("/validation/prescreen", json={**base, "report": {"collapsed": True, "dimensions": {"marginals": dim},
                                                                        "alpha": 0.05, "details": {}}})
    assert good.status_code == 200, good.text
    import grpc

    from serve.protos import validation_pb2 as pb

    ctx = Ctx()
    ingress(args).PreScreenRisk(pb.PreScreenRequest(real=ptable(pair.real), synthetic=ptable(pair.synth),
                                                    report_json=json.dumps({"nope": 1})), grpc_context=ctx)
    assert ctx.code == grpc.StatusCode.INVALID_ARGUMENT and json.loads(ctx.details)["field"] == "report.collapsed"


def test_every_error_has_the_one_body_shape(pair):
    """Finding 3: {"detail": {field, message, allowed}} for bad bodies on every route, an unknown route, a
    wrong method, 413 and 422 - never FastAPI's {"detail": "Not Found"} or a list."""
    client = app()
    routes = ["detect", "localize", "recommend", "diversity", "prescreen", "cascade", "predict"]
    seen = []
    for route in routes:
        for body in ({}, {"real": 3}, {"real": {"records": "x"}, "synthetic": {}}, []):
            r = client.post(f"/validation/{route}", json=body)
            seen.append((route, r.status_code, r.json()))
        r = client.post(f"/validation/{route}", content=b"{not json", headers={"content-type": "application/json"})
        seen.append((route, r.status_code, r.json()))
    big = records(pair.real.sample(200, replace=True, random_state=0))
    seen.append(("413", *(lambda r: (r.status_code, r.json()))(client.post("/validation/diversity",
                                                                          json={"table": {"records": big}}))))
    seen.append(("404", *(lambda r: (r.status_code, r.json()))(client.post("/validation/nope", json={}))))
    seen.append(("405", *(lambda r: (r.status_code, r.json()))(client.get("/validation/detect"))))
    for name, status, body in seen:
        assert 400 <= status < 500, (name, status, body)
        assert set(body) == {"detail"} and set(body["detail"]) == ERROR_KEYS, (name, body)
        assert isinstance(body["detail"]["message"], str) and body["detail"]["message"]
    assert {s for _, s, _ in seen} >= {404, 405, 413, 422}


# ---- gRPC: internal errors and peers ----------------------------------------------------------------------
def test_grpc_internal_error_is_generic_with_a_request_id(pair, monkeypatch, caplog):
    """Finding 2: an unexpected error over gRPC is INTERNAL with a generic message and a request id; the
    traceback (paths, PIDs) is in the log only. Over HTTP it is a 500 with the same kind of body."""
    import grpc

    import serve.validation as sv
    from serve.protos import validation_pb2 as pb

    def boom(*_a, **_k):
        raise RuntimeError(f"/very/secret/path.py pid {os.getpid()} at 10.9.8.7")

    monkeypatch.setattr(sv, "run_detect", boom)
    ctx = Ctx()
    with caplog.at_level("ERROR", logger="attractor.serve.validation"):
        reply = ingress(ValidationServeArgs()).DetectCollapse(
            pb.DetectRequest(real=ptable(pair.real), synthetic=ptable(pair.synth)), grpc_context=ctx)
    assert reply == pb.DetectReply() and ctx.code == grpc.StatusCode.INTERNAL
    detail = json.loads(ctx.details)
    assert set(detail) == ERROR_KEYS and "request id" in detail["message"]
    assert "secret" not in ctx.details and str(os.getpid()) not in ctx.details and "10.9.8.7" not in ctx.details
    request_id = detail["message"].split("request id ")[1].split(";")[0]
    assert request_id in caplog.text and "secret" in caplog.text   # the traceback went to the log
    r = TestClient(make_fastapi(ValidationServeArgs()), raise_server_exceptions=False).post(
        "/validation/detect", json={"real": {"records": records(pair.real)}, "synthetic": {"records": records(pair.synth)}})
    assert r.status_code == 500 and "secret" not in r.text and "request id" in r.json()["detail"]["message"]

    # a stream (TrainCascade) ends with the same generic status, not the exception's text
    monkeypatch.setattr(sv, "run_cascade", boom)
    ctx = Ctx()
    with pytest.raises(RuntimeError) as err:
        list(ingress(ValidationServeArgs()).TrainCascade(
            pb.CascadeRequest(real=ptable(pair.real), synthetic=ptable(pair.synth), label="target"), grpc_context=ctx))
    assert "secret" not in str(err.value) and ctx.code == grpc.StatusCode.INTERNAL and "secret" not in ctx.details


def test_grpc_answers_loopback_peers_only_by_default(pair):
    """Serve 2.60's gRPC proxy listens on [::] whatever the HTTP host: the app refuses other peers unless
    grpc_allow_remote is set."""
    import grpc

    from serve.protos import validation_pb2 as pb

    assert all(map(loopback_peer, ["ipv4:127.0.0.1:5000", "ipv4:127.3.4.5:1", "ipv6:[::1]:5000", "unix:/tmp/s"]))
    assert not any(map(loopback_peer, ["ipv4:10.0.0.5:5000", "ipv6:[2001:db8::1]:80", "ipv4:0.0.0.0:1", "", "x",
                                       "ipv4:localhost.evil.com:1"]))
    request = pb.DiversityRequest(table=ptable(pair.synth))
    ctx = Ctx("ipv4:10.0.0.5:40000")
    with pytest.raises(RuntimeError):
        ingress(ValidationServeArgs()).AnalyzeDiversity(request, grpc_context=ctx)
    assert ctx.code == grpc.StatusCode.PERMISSION_DENIED and json.loads(ctx.details)["field"] == "peer"
    ctx = Ctx("ipv4:10.0.0.5:40000")
    reply = ingress(ValidationServeArgs(grpc_allow_remote=True)).AnalyzeDiversity(request, grpc_context=ctx)
    assert ctx.code is None and reply.vendi >= 1


# ---- finding 1: bounded work ------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_detect_with_huge_n_null_stops_at_request_timeout(pair):
    """Finding 1: n_null=100000 under request_timeout_s=1 is a 504 naming request_timeout_s within seconds
    (it used to compute for minutes after the client had gone); the same over gRPC (DEADLINE_EXCEEDED)."""
    import grpc

    from serve.protos import validation_pb2 as pb

    client = TestClient(make_fastapi(ValidationServeArgs(request_timeout_s=1)))
    body = {"real": {"records": records(pair.real)}, "synthetic": {"records": records(pair.synth)},
            "detector": {"n_null": 100_000}}
    t0 = time.perf_counter()
    r = client.post("/validation/detect", json=body)
    took = time.perf_counter() - t0
    assert r.status_code == 504 and r.json()["detail"]["field"] == "request_timeout_s", r.text
    assert took < 10, took
    ctx = Ctx()
    t0 = time.perf_counter()
    ingress(ValidationServeArgs(request_timeout_s=1)).DetectCollapse(
        pb.DetectRequest(real=ptable(pair.real), synthetic=ptable(pair.synth), detector_json='{"n_null": 100000}'),
        grpc_context=ctx)
    assert ctx.code == grpc.StatusCode.DEADLINE_EXCEEDED and json.loads(ctx.details)["field"] == "request_timeout_s"
    assert time.perf_counter() - t0 < 10
    # the replica is free again: a normal request still works
    assert client.post("/validation/detect", json={**body, "detector": CHEAP}).status_code == 200


@pytest.mark.timeout(60)
def test_cancel_stops_a_running_detect_quickly(pair):
    """Finding 1: a budget cancelled from another thread (what a disconnecting client does) stops the
    permutation loops at their next checkpoint."""
    from actors.validation.detector import detect

    budget, out = Budget(None), {}

    def work() -> None:
        with scope(budget):
            try:
                detect(pair.real, pair.synth, n_null=100_000, dimensions=("marginals", "memorisation"))
                out["result"] = "finished"
            except Cancelled:
                out["result"] = "cancelled"
            out["at"] = time.perf_counter()

    t = threading.Thread(target=work)
    t.start()
    time.sleep(1.0)
    assert t.is_alive()                       # still computing: 100,000 resamples take minutes
    cancelled_at = time.perf_counter()
    budget.cancel()
    t.join(timeout=20)
    assert not t.is_alive() and out["result"] == "cancelled"
    assert out["at"] - cancelled_at < 2.0, out["at"] - cancelled_at


def _engines(pair) -> dict:
    """One call per engine loop that must check the budget (each runs long with these settings); the
    dimensions are called directly (run_dimension), so their own resampling loops must check it."""
    from actors.validation.cascade import train_cascade
    from actors.validation.config import DetectorConfig
    from actors.validation.detector import detect, prepare, run_dimension
    from actors.validation.diversity import analyze, vendi_score
    from actors.validation.localize import localize
    from actors.validation.recommend import recommend

    real, synth = pair.real, pair.synth
    rep = detect(real, synth, classifier="logistic", mi_rows=60, mi_pairs=2)
    loc = localize(real, synth, label="target")
    cfg = DetectorConfig(n_null=100_000, classifier="logistic", mi_rows=60, mi_pairs=2)
    pooled = prepare(real, synth, cfg)
    dims = {f"dimension:{d}": partial(run_dimension, d, pooled, cfg)
            for d in ("marginals", "divergence", "correlation", "coverage", "spectral", "dependence",
                      "classifier", "memorisation")}
    return {**dims, "detect": partial(detect, real, synth, n_null=100_000),
            "localize": partial(localize, real, synth, label="target"),
            "recommend": partial(recommend, real, synth, rep, loc, n_null=100_000, label="target"),
            "cascade": partial(train_cascade, real, synth, "target",
                               {"rungs": [{"kind": "linear", "c": 0.1}, {"kind": "linear", "c": 1.0}], "patience": 1}),
            "diversity": partial(analyze, synth, real),
            "vendi": partial(vendi_score, np.zeros((5, 2)))}


def test_every_engine_loop_checks_the_budget(pair):
    """Finding 1: each engine entry point stops with BudgetExceeded under a spent budget (a loop that
    never calls checkpoint() would run to the end instead)."""
    for name, call in _engines(pair).items():
        spent = Budget(0.0)
        time.sleep(0.001)
        with scope(spent), pytest.raises(BudgetExceeded) as err:
            call()
        assert err.value.field == "request_timeout_s", name


def test_cascade_stream_ends_with_an_error_event_at_the_budget(pair, monkeypatch):
    """A TrainCascade stream past its budget after the 200 went out ends with {"status": "error", detail}."""
    import serve.validation as sv

    def climbing(*_a, **_k):
        yield {"rung": 0, "model": "linear", "status": "started", "utility": None, "learnability": None,
               "seconds": None}
        raise BudgetExceeded("request_timeout_s", "the work ran past its time budget of 1 s", "<= 1 s")

    monkeypatch.setattr(sv, "run_cascade", climbing)
    r = app().post("/validation/cascade", json={"real": {"records": records(pair.real)},
                                                "synthetic": {"records": records(pair.synth)}, "label": "target"})
    events = [json.loads(line) for line in r.text.splitlines()]
    assert r.status_code == 200 and [e["status"] for e in events] == ["started", "error"]
    assert events[-1]["status_code"] == 504 and events[-1]["detail"]["field"] == "request_timeout_s"


def test_diversity_table_column_missing_from_the_reference_is_422_naming_it():
    """Found by the route fuzz (tests/reliability): a `table` column the `reference` lacks was a
    KeyError inside diversity.analyze, answered 500."""
    from actors.common.errors import InputError
    from actors.validation.diversity import analyze

    rng = np.random.default_rng(3)
    ref = pd.DataFrame({"a": rng.normal(size=40), "b": rng.normal(size=40)})
    table = ref.assign(extra=1.0)
    with pytest.raises(InputError) as info:
        analyze(table, ref)
    assert info.value.field == "table" and "['extra']" in info.value.message and info.value.allowed == "a, b"
