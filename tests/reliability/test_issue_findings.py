"""The reproducing requests of issue 11's findings, in-process (FastAPI TestClient): each must now get
a bounded, well-formed answer. (Findings 4-8 are jobs, packaging and engine results, tested next to
their code; finding 9, the load, is tests/reliability/test_serve.py.)"""
from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from .routes import REAL, SYNTH, _series, check_contract


def _client(module: str, **args) -> TestClient:
    import importlib

    return TestClient(importlib.import_module(module).make_fastapi(args), raise_server_exceptions=False)


def test_1_a_nan_step_size_does_not_tie_up_a_replica():
    """{"t_span": [0, 1], "params": {"gamma": 1e308}} ran to the 2,000,000-step limit (~an hour)."""
    client = _client("serve.sweep")          # the app's default budget (request_timeout_s 120 s)
    t = time.perf_counter()
    r = client.post("/sweep/simulate", json={"t_span": [0, 1], "params": {"gamma": 1e308}})
    assert time.perf_counter() - t < 30, "the trajectory did not stop at once"
    check_contract("gamma 1e308", r)
    if r.status_code == 200:
        (traj,) = r.json()["trajectories"]
        assert traj["blowup"] is True, traj


def test_1_a_long_detector_run_stops_at_its_budget(tmp_path):
    """/validation/detect with n_null=100000 kept burning CPU for minutes."""
    client = _client("serve.validation", request_timeout_s=2.0, signature_dir=str(tmp_path / "s"),
                     model_dir=str(tmp_path / "m"))
    t = time.perf_counter()
    r = client.post("/validation/detect", json={"real": {"records": REAL}, "synthetic": {"records": SYNTH},
                                                "detector": {"n_null": 100_000}})
    assert time.perf_counter() - t < 20
    assert r.status_code == 504 and r.json()["detail"]["field"] == "request_timeout_s", r.text


@pytest.mark.parametrize("route", ["/validation/diversity", "/validation/detect"])
def test_2_no_file_is_read_through_the_api(route, tmp_path):
    """Tables by path were read from anywhere; errors told whether a path existed."""
    outside = tmp_path / "outside.csv"
    outside.write_text("secret_id\n" + "\n".join(str(1000 + i) for i in range(30)))
    root = tmp_path / "root"
    root.mkdir()
    key = "table" if route.endswith("diversity") else "real"
    extra = {} if route.endswith("diversity") else {"synthetic": {"records": SYNTH}}
    for args in ({}, {"data_root": str(root)}):
        client = _client("serve.validation", **args)
        answers = {}
        for path in (str(outside), str(tmp_path / "missing.csv"), "../outside.csv", "../missing.csv", "/etc/passwd"):
            r = client.post(route, json={key: {"path": path}, **extra})
            assert r.status_code == 422 and r.json()["detail"]["field"] == f"{key}.path", (args, path, r.text)
            assert "secret_id" not in r.text and "1000" not in r.text
            answers[path] = r.json()["detail"]["message"].replace(path, "<path>")
        # one text whether or not the file exists (absolute and relative)
        assert answers[str(outside)] == answers[str(tmp_path / "missing.csv")], answers
        assert answers["../outside.csv"] == answers["../missing.csv"], answers


@pytest.mark.parametrize("module, route, body, field", [
    ("serve.te", "/te", {"source": [1e308] * 50, "target": _series(50)["y"]}, None),
    ("serve.te", "/te", {"source": _series(50)["x"], "target": _series(50)["y"], "k": True}, "k"),
    ("serve.te", "/te", {"source": _series(50)["x"], "target": _series(50)["y"], "k": "4"}, "k"),
    ("serve.te", "/te/network", {"data": {"a": [1e308] * 50, "b": _series(50)["y"]}, "surrogates": 9}, None),
    ("serve.validation", "/validation/detect",
     {"real": {"records": [{**r, "a": 1e308} for r in REAL]}, "synthetic": {"records": SYNTH}}, "real.a"),
    ("serve.validation", "/validation/prescreen",
     {"real": {"records": REAL}, "synthetic": {"records": SYNTH}, "report": {"junk": 1}}, "report"),
    ("serve.sweep", "/sweep/simulate", {"model": "lorenz", "t_span": [0, True]}, "t_span.1"),
])
def test_3_huge_values_and_wrong_types_are_4xx_naming_the_field(module, route, body, field, tmp_path):
    """1e308 / Infinity gave 500s; `true` and "4" passed as numbers; a junk prescreen report got 200."""
    client = _client(module, request_timeout_s=10.0) if module != "serve.validation" else _client(
        module, request_timeout_s=10.0, signature_dir=str(tmp_path / "s"), model_dir=str(tmp_path / "m"))
    r = client.post(route, json=body)
    check_contract(f"{route} {str(body)[:200]}", r)
    assert r.status_code != 504, r.text
    if field is not None:
        assert 400 <= r.status_code < 500 and r.json()["detail"]["field"].startswith(field), r.text


# ---- the suite's own findings (docs/reliability.md) -------------------------------------------------
@pytest.mark.parametrize("module, route", [("serve.sweep", "/sweep/simulate"), ("serve.te", "/te"),
                                           ("serve.validation", "/validation/prescreen")])
@pytest.mark.parametrize("raw, status", [(b"{junk", 422), (b'{"a": "\xff\xfe"}', 422), (b"[" * 5000, 422)])
def test_suite_finding_3_an_unreadable_body_is_named_body(module, route, raw, status, tmp_path):
    """Malformed JSON was labelled with a character offset ("1"), invalid UTF-8 / deep nesting as "path"."""
    args = {"signature_dir": str(tmp_path / "s"), "model_dir": str(tmp_path / "m")} if "validation" in module else {}
    r = _client(module, **args).post(route, content=raw, headers={"content-type": "application/json"})
    check_contract(f"{route} {raw[:20]!r}", r)
    assert r.status_code in (400, status) and r.json()["detail"]["field"] == "body", r.text


@pytest.mark.parametrize("module", ["serve.sweep", "serve.te", "serve.validation"])
def test_suite_finding_5_replicas_are_health_checked_often(module, tmp_path):
    """Serve's default health_check_period_s (10 s) left ~11 s of 500s after a replica was killed."""
    import importlib

    args = {"signature_dir": str(tmp_path / "s"), "model_dir": str(tmp_path / "m")} if "validation" in module else {}
    app = importlib.import_module(module).build_app(args)
    assert app._bound_deployment._deployment_config.health_check_period_s == 2.0
