"""Every Serve route the reliability suite drives: the three apps with small limits, their routes as the
OpenAPI schema lists them, and for each route one valid request (with what its answer must hold).

A route found in an app's OpenAPI schema but missing from `VALID` fails the suite
(tests/reliability/test_fuzz.py::test_every_route_has_a_strategy): the fuzz strategies are derived
from the route's pydantic models automatically, but "a valid request still works afterwards" needs a
request that is known to be valid.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI
from fastapi.testclient import TestClient

from .openai_standin import shared_standin, synthetic_router

APP_MODULES = {"sweep": "serve.sweep", "te": "serve.te", "validation": "serve.validation", "router": "serve.router"}
# no answer may show where the server runs from: the repository, the installed packages, pytest's temp dirs
ROOT_HINTS = (str(Path(__file__).resolve().parents[2]), "site-packages", "pytest-of-")


def app_args(name: str, tmp: Path) -> dict[str, Any]:
    """Small limits, so an oversized request is cheap to build and every answer comes back fast: a
    request may compute for `request_timeout_s` at most (then 504 naming request_timeout_s). The budgets
    leave the route's valid request (checked before and after the fuzzing) a wide margin on a loaded
    2-core machine: a 504 there would read as a changed answer."""
    common = {"max_concurrent": 2, "max_waiting": 2, "request_timeout_s": 5.0, "retry_after_s": 1}
    return {
        "sweep": {**common, "max_batch": 4, "max_points": 50},
        "te": {**common, "max_samples": 400, "max_surrogates": 20, "max_vars": 5, "inline_max_vars": 3,
               "max_jobs": 8, "network_timeout_s": 10.0, "pool_workers": 1},
        "validation": {**common, "request_timeout_s": 15.0, "max_inline_rows": 60, "max_rows": 100, "max_k": 5,
                       "signature_dir": str(tmp / "signatures"), "model_dir": str(tmp / "models"),
                       "seed_cases": ["label_noise", "clean"], "seed_severities": ["high"]},
        # the pass-through goes to the OpenAI stand-in (reliability.openai_standin), started on first use
        "router": {**common, "max_prompt_chars": 2000, "upstream": shared_standin().url,
                   "engines": {"weak": "tiny-a", "strong": "tiny-b"}},
    }[name]


def make_app(name: str, tmp: Path) -> FastAPI:
    """The FastAPI app of `name` (serve.<name>.make_fastapi) with the suite's small limits."""
    import importlib

    module = importlib.import_module(APP_MODULES[name])
    if name == "router":   # a router fitted on seeded synthetic data, deciding by argmin (temperature 0)
        router = synthetic_router()
        router.energy = router.energy.model_copy(update={"temperature": 0.0})
        return module.make_fastapi(app_args(name, tmp), router=router)
    return module.make_fastapi(app_args(name, tmp))


def openapi_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(METHOD, path template) of every operation in the app's OpenAPI schema."""
    return sorted((method.upper(), path) for path, ops in app.openapi()["paths"].items() for method in ops)


# ---- requests ---------------------------------------------------------------------------------------
NO_BODY = object()


@dataclass
class Request:
    """One HTTP request; `raw` (bytes) is sent as is, else `body` as JSON (NaN / Infinity literals kept)."""

    method: str
    url: str
    params: dict[str, Any] | None = None
    body: Any = NO_BODY
    raw: bytes | None = None
    content_type: str = "application/json"

    def content(self) -> bytes | None:
        if self.raw is not None:
            return self.raw
        if self.body is NO_BODY:
            return None
        return encode(self.body)

    def describe(self, limit: int = 400) -> str:
        text = (self.content() or b"").decode("utf-8", "replace")
        text = text if len(text) <= limit else text[:limit] + f"... ({len(text)} bytes)"
        return f"{self.method} {self.url} params={self.params} content-type={self.content_type} body={text}"


# Markers a strategy may put anywhere in a body: encode() writes them as JSON number literals that no
# Python float can hold (json.loads reads 1e400 as inf; the 400-digit integer overflows a float).
HUGE, NEG_HUGE, BIG_INT = "\x00HUGE\x00", "\x00NEG_HUGE\x00", "\x00BIG_INT\x00"
_LITERALS = {json.dumps(HUGE): "1e400", json.dumps(NEG_HUGE): "-1e400", json.dumps(BIG_INT): "1" + "0" * 400}


def encode(body: Any) -> bytes:
    """JSON with NaN / Infinity / -Infinity literals (what Python's json writes for non-finite floats,
    and what a careless client sends) and the HUGE / BIG_INT markers as number literals."""
    text = json.dumps(body, allow_nan=True)
    for marker, literal in _LITERALS.items():
        text = text.replace(marker, literal)
    return text.encode()


def send(client: TestClient, req: Request):
    headers = {"content-type": req.content_type} if req.content() is not None else {}
    return client.request(req.method, req.url, params=req.params, content=req.content(), headers=headers)


# ---- the valid request of every route --------------------------------------------------------------
def _series(n: int = 300, seed: int = 0) -> dict[str, list[float]]:
    """x drives y at lag 1; z is independent noise (seeded)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n + 1)
    y = 0.8 * x[:-1] + 0.3 * rng.normal(size=n)
    return {"x": x[1:].tolist(), "y": y.tolist(), "z": rng.normal(size=n).tolist()}


def _table(n: int, shift: float, seed: int) -> list[dict[str, Any]]:
    """A small mixed table: two numeric columns, an integer code, a string label (seeded)."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n) + shift
    return [{"a": float(a[i]), "b": float(rng.normal()), "c": int(rng.integers(0, 3)),
             "label": "x" if a[i] + 0.3 * rng.normal() > shift else "y"} for i in range(n)]


REAL, SYNTH = _table(40, 0.0, 1), _table(40, 0.6, 2)
DETECTOR = {"n_null": 19, "classifier": "logistic", "mi_pairs": 1, "mi_rows": 20, "cv_folds": 2}
LADDER = {"rungs": [{"kind": "linear", "c": 0.1}], "patience": 1, "cv_folds": 2}
NETWORK = {"data": _series(), "surrogates": 19, "alpha": 0.1, "background": False}
SIMULATE = {"model": "lorenz", "t_span": [0, 1], "n_save": 5,
            "solver": {"rtol": 1e-6, "atol": 1e-9, "lyapunov": False}}
INLINE_MODEL = {"model": {"name": "vdp_inline", "states": ["x", "v"], "params": {"mu": 1.5},
                          "initial_state": {"x": 1.0, "v": 0.0}, "definitions": {"damp": "mu*(1 - x**2)"},
                          "equations": {"x": "v", "v": "damp*v - x"},
                          "fixed_point_labels": [{"name": "rest", "when": "Abs(x) < 0.1"}]},
                "params": {"mu": 1.0}, "t_span": [0, 2], "batch": [{"params": {"mu": 0.5}}, {"initial_state": {"x": 2}}],
                "solver": {"rtol": 1e-6, "atol": 1e-9, "lyapunov": False}}


def _ok(r) -> None:
    assert r.status_code == 200, r.text[:500]


def _post_network(client: TestClient) -> str:
    r = client.post("/te/network", json=NETWORK)
    _ok(r)
    return r.json()["id"]


def _model_id(client: TestClient) -> str:
    """A trained cascade's id, trained once per client (the model store is the app's model_dir)."""
    cached = getattr(client, "_reliability_model_id", None)
    if cached is None:
        r = client.post("/validation/cascade", json={"real": {"records": REAL}, "synthetic": {"records": SYNTH},
                                                     "label": "label", "cascade": LADDER})
        _ok(r)
        cached = json.loads(r.text.splitlines()[-1])["model_id"]
        client._reliability_model_id = cached
    return cached


def _cascade_finished(r) -> None:
    _ok(r)
    events = [json.loads(line) for line in r.text.splitlines()]
    assert events[-1]["status"] == "finished", events[-1]


def _te_found(r) -> None:
    _ok(r)
    assert r.json()["te"] > 0.3 and r.json()["p_value"] <= 0.1, r.json()


def _edge_found(r) -> None:
    _ok(r)
    assert {"source": "x", "target": "y"}.items() <= r.json()["edges"][0].items(), r.json()


@dataclass(frozen=True)
class RouteCase:
    """How to make a valid request for a route (it may call the app first) and what its answer holds."""

    valid: Callable[[TestClient], Request]
    check: Callable[[Any], None] = _ok
    examples: int = 50          # hypothesis examples of the route's fuzz strategy
    # more valid requests whose nodes the fuzz mutates too (each must answer 200 before the fuzzing)
    bases: tuple[Callable[[TestClient], Request], ...] = field(default=())


TABLES = {"real": {"records": REAL}, "synthetic": {"records": SYNTH}}
VALID: dict[tuple[str, str, str], RouteCase] = {
    ("sweep", "GET", "/healthz"): RouteCase(lambda c: Request("GET", "/healthz"), examples=10),
    ("sweep", "POST", "/sweep/simulate"): RouteCase(
        lambda c: Request("POST", "/sweep/simulate", body=SIMULATE), examples=60,
        bases=(lambda c: Request("POST", "/sweep/simulate", body=INLINE_MODEL),)),
    ("te", "GET", "/healthz"): RouteCase(lambda c: Request("GET", "/healthz"), examples=10),
    ("te", "POST", "/te"): RouteCase(
        lambda c: Request("POST", "/te", body={"source": _series()["x"], "target": _series()["y"], "surrogates": 9}),
        _te_found),
    ("te", "POST", "/mi"): RouteCase(
        lambda c: Request("POST", "/mi", body={"x": [_series()["x"]], "y": [_series()["y"]]}), examples=30),
    ("te", "POST", "/cmi"): RouteCase(
        lambda c: Request("POST", "/cmi", body={"x": [_series()["x"]], "y": [_series()["y"]],
                                                "z": [_series()["z"]]}), examples=30),
    ("te", "POST", "/te/network"): RouteCase(lambda c: Request("POST", "/te/network", body=NETWORK), _edge_found,
                                             examples=30),
    ("te", "GET", "/te/network/{net_id}"): RouteCase(
        lambda c: Request("GET", f"/te/network/{_post_network(c)}"), _edge_found, examples=30),
    ("te", "GET", "/causal/path"): RouteCase(
        lambda c: (_post_network(c), Request("GET", "/causal/path", params={"from": "x", "to": "y"}))[1]),
    ("validation", "GET", "/healthz"): RouteCase(lambda c: Request("GET", "/healthz"), examples=10),
    ("validation", "POST", "/validation/detect"): RouteCase(
        lambda c: Request("POST", "/validation/detect", body={**TABLES, "detector": DETECTOR})),
    ("validation", "POST", "/validation/localize"): RouteCase(
        lambda c: Request("POST", "/validation/localize", body={**TABLES, "label": "label",
                                                                "localizer": {"cv_folds": 2}})),
    ("validation", "POST", "/validation/recommend"): RouteCase(
        lambda c: Request("POST", "/validation/recommend", body={
            **TABLES, "label": "label", "detector": DETECTOR, "localizer": {"cv_folds": 2},
            "recommender": {"n_null": 19, "fixes": ["relabel"]}}), examples=30),
    ("validation", "POST", "/validation/diversity"): RouteCase(
        lambda c: Request("POST", "/validation/diversity", body={"table": {"records": SYNTH},
                                                                 "reference": {"records": REAL}})),
    ("validation", "POST", "/validation/prescreen"): RouteCase(
        lambda c: Request("POST", "/validation/prescreen", body={**TABLES, "k": 2})),
    ("validation", "POST", "/validation/cascade"): RouteCase(
        lambda c: Request("POST", "/validation/cascade", body={**TABLES, "label": "label", "cascade": LADDER}),
        _cascade_finished, examples=30),
    ("validation", "POST", "/validation/predict"): RouteCase(
        lambda c: Request("POST", "/validation/predict", body={"model_id": _model_id(c),
                                                               "rows": {"records": REAL[:5]}})),
}

def _route_id(client: TestClient) -> str:
    r = client.post("/route", json=ROUTE)
    _ok(r)
    return r.json()["request_id"]


def _passed_through(r) -> None:
    _ok(r)
    assert r.json()["model"] in ("tiny-a", "tiny-b") and r.headers["x-attractor-engine"] == r.json()["model"], r.text


ROUTE = {"prompt": "Prove that the square root of two is irrational.", "temperature": 0.0}
CHAT = {"model": "auto", "messages": [{"role": "system", "content": "be brief"},
                                      {"role": "user", "content": "What is 17 * 23?"}], "max_tokens": 8}
VALID.update({
    ("router", "GET", "/healthz"): RouteCase(lambda c: Request("GET", "/healthz"), examples=10),
    ("router", "POST", "/route"): RouteCase(lambda c: Request("POST", "/route", body=ROUTE)),
    ("router", "POST", "/route/feedback"): RouteCase(
        lambda c: Request("POST", "/route/feedback", body={"request_id": _route_id(c), "quality": 1.0}),
        examples=30),
    ("router", "GET", "/v1/models"): RouteCase(lambda c: Request("GET", "/v1/models"), examples=10),
    ("router", "POST", "/v1/chat/completions"): RouteCase(
        lambda c: Request("POST", "/v1/chat/completions", body=CHAT), _passed_through),
    ("router", "POST", "/v1/completions"): RouteCase(
        lambda c: Request("POST", "/v1/completions", body={"model": "auto", "prompt": "Translate 'cat' to French.",
                                                          "max_tokens": 8}), _passed_through),
})

# keys whose values differ between two runs of the same request (ids, timings; the router's posterior, which
# each rated decision moves)
VOLATILE = frozenset({"id", "network_id", "model_id", "href", "seconds", "submitted", "wall_seconds",
                      "request_id", "posterior", "timing_us"})


def stable(doc: Any) -> Any:
    """A response document without its volatile keys: two answers to the same valid request are equal."""
    if isinstance(doc, dict):
        return {k: stable(v) for k, v in doc.items() if k not in VOLATILE}
    if isinstance(doc, list):
        return [stable(v) for v in doc]
    return doc


def answer(r) -> Any:
    """The JSON of a response (the events, for an NDJSON stream)."""
    if "application/x-ndjson" in r.headers.get("content-type", ""):
        return [json.loads(line) for line in r.text.splitlines()]
    return r.json()


# ---- findings not fixed yet ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Known:
    """A 5xx the suite found that is not fixed yet: counted as `known` by the fuzz (not a failure). Add
    it together with a strict-xfail test that sends `reproducer` and expects a 4xx: once the bug is
    fixed that test passes, strict xfail turns it red, and both are removed."""

    route: tuple[str, str, str]
    reason: str
    matches: Callable[[Any], bool]     # on the request's JSON body
    reproducer: dict


KNOWN: list[Known] = []   # findings the fuzz counts instead of failing on: none (the first, a table column
# the reference lacks on /validation/diversity, is fixed: tests/test_validation_hardening.py)


def known_finding(route: tuple[str, str, str], body: Any) -> Known | None:
    return next((k for k in KNOWN if k.route == route and k.matches(body)), None)


# ---- the contract every answer keeps ---------------------------------------------------------------
def _no_constants(name: str):
    raise ValueError(f"non-finite literal {name} in a response")


def check_contract(request: str, r, known: Known | None = None) -> str:
    """Assert that an answer keeps the contract; returns the status label counted.

    2xx or 4xx, never 5xx - except 504 naming `request_timeout_s` (bounded work: the compute ran past
    the app's budget); on 4xx the one error body {"detail": {field, message, allowed}}; on 2xx JSON
    without NaN / Infinity literals (an NDJSON stream: each event, an error event in the same shape);
    never a traceback or a server path. `request` describes what was sent (for the failure message); a
    5xx of a `known` finding is counted as such instead of failing."""
    where = f"{request}\n-> {r.status_code} {r.text[:600]}"
    if known is not None and r.status_code >= 500:
        return f"known {r.status_code}"
    assert "Traceback" not in r.text, where
    for hint in ROOT_HINTS:
        assert hint not in r.text, f"server path {hint!r} in the answer: {where}"
    status = r.status_code
    if status >= 400:
        body = r.json()
        if " /v1/" in request.split(" params=")[0] and set(body) == {"error"}:
            # the router's pass-through hands the LLM app's own 4xx back in OpenAI's envelope
            assert set(body["error"]) >= {"message", "type", "param", "code"} and status < 500, where
            return f"{status} upstream"
        assert set(body) == {"detail"} and isinstance(body["detail"], dict), where
        detail = body["detail"]
        assert set(detail) == {"field", "message", "allowed"}, where
        assert isinstance(detail["message"], str) and detail["message"], where
        assert detail["field"] is None or isinstance(detail["field"], str), where
        assert detail["allowed"] is None or isinstance(detail["allowed"], str), where
        if status == 504:
            assert detail["field"] == "request_timeout_s", where
            return "504 request_timeout_s"
        assert status < 500, where
        return str(status)
    assert 200 <= status < 300, where
    if "application/x-ndjson" in str(r.headers.get("content-type", "")):   # schemathesis: a list
        for line in r.text.splitlines():
            ev = json.loads(line, parse_constant=_no_constants)
            if ev.get("status") == "error":
                assert set(ev["detail"]) == {"field", "message", "allowed"}, where
                return f"{status} stream error {ev.get('status_code')}"
    elif r.text:
        json.loads(r.text, parse_constant=_no_constants)
    return str(status)
