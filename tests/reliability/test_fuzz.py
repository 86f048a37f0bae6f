"""Property-based fuzzing of every route of the three Serve apps, in-process (FastAPI TestClient on
`make_fastapi(args)` with small limits, no Ray).

Routes are listed from each app's OpenAPI schema at collection time, so a new route is fuzzed without
editing this file; one without a valid request in tests/reliability/routes.py (or whose request model
has an annotation tests/reliability/strategies.py cannot generate) fails.

Every answer must be:
- 2xx or 4xx, never 5xx - except 504 naming `request_timeout_s`, the bounded-work answer of a request
  whose compute ran past the app's budget (counted as such in the summary);
- on 4xx, the one error body {"detail": {"field", "message", "allowed"}};
- JSON without NaN / Infinity literals on 2xx (a cascade stream: NDJSON events, an error event in the
  same shape);
- free of tracebacks and of the server's own paths.
and the route's valid request answers the same before and after the fuzzing (ids and timings apart).

Examples are derandomized (the conftest hypothesis profile) and bounded per route (routes.VALID).
"""
from __future__ import annotations

import collections
import math
import time

import pytest
from hypothesis import HealthCheck, given, settings

from .routes import (
    APP_MODULES,
    NO_BODY,
    VALID,
    Request,
    answer,
    check_contract,
    known_finding,
    make_app,
    openapi_routes,
    send,
    stable,
)
from .strategies import find_route, fixed_battery, route_strategy


def _all_routes() -> list[tuple[str, str, str]]:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        return [(name, m, p) for name in APP_MODULES for m, p in openapi_routes(make_app(name, Path(tmp) / name))]


ROUTES = _all_routes()


@pytest.mark.parametrize("app_name", list(APP_MODULES))
def test_every_route_has_a_strategy(app_name, app_clients):
    """Each OpenAPI route has a valid request and a strategy; no entry of routes.VALID is stale."""
    app = app_clients[app_name].app
    listed = {(app_name, m, p) for m, p in openapi_routes(app)}
    known = {k for k in VALID if k[0] == app_name}
    assert not listed - known, f"routes without a valid request in tests/reliability/routes.py: {listed - known}"
    assert not known - listed, f"routes.VALID names routes the app does not have: {known - listed}"
    for _, method, path in listed:
        case = VALID[(app_name, method, path)]
        client = app_clients[app_name]
        route_strategy(find_route(app, method, path), case.valid(client), tuple(b(client) for b in case.bases))


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r[0]}:{r[1]}:{r[2]}")
def test_fuzz_route(route, app_clients, fuzz_counts):
    app_name, method, path = route
    assert route in VALID, f"{route} has no valid request in tests/reliability/routes.py: add one"
    case = VALID[route]
    client = app_clients[app_name]
    valid = case.valid(client)
    first = send(client, valid)
    case.check(first)
    before = stable(answer(first))
    bases = tuple(base(client) for base in case.bases)
    for base in bases:
        case.check(send(client, base))
    counts = fuzz_counts.setdefault(f"{app_name} {method} {path}", collections.Counter())
    t0 = time.perf_counter()

    def one(req: Request) -> None:
        known = known_finding(route, None if req.body is NO_BODY else req.body)
        counts[check_contract(req.describe(), send(client, req), known)] += 1
        counts["cases"] += 1

    for req in fixed_battery(find_route(client.app, method, path), valid):
        one(req)

    @settings(max_examples=case.examples, suppress_health_check=list(HealthCheck))
    @given(req=route_strategy(find_route(client.app, method, path), valid, bases))
    def fuzz(req):
        one(req)

    fuzz()
    counts["seconds"] = math.ceil(time.perf_counter() - t0)
    again = send(client, case.valid(client))
    case.check(again)
    assert stable(answer(again)) == before, "the valid request answers differently after the fuzzing"
    assert send(client, VALID[(app_name, "GET", "/healthz")].valid(client)).status_code == 200


@pytest.mark.parametrize("app_name", list(APP_MODULES))
def test_unknown_routes_and_methods_use_the_error_body(app_name, app_clients):
    """404 (no such route, a '/' inside a path parameter) and 405 (wrong method) in the one error body."""
    client = app_clients[app_name]
    for method, url in [("GET", "/nope"), ("POST", "/"), ("GET", "/te/network/a/b"), ("DELETE", "/healthz"),
                        ("PUT", "/healthz"), ("GET", "/%2e%2e/%2e%2e/etc/passwd")]:
        r = client.request(method, url)
        assert r.status_code in (404, 405), (method, url, r.status_code, r.text)
        assert set(r.json()) == {"detail"} and set(r.json()["detail"]) == {"field", "message", "allowed"}, r.text
    for m, p in openapi_routes(client.app):
        wrong = "DELETE" if m != "DELETE" else "PATCH"
        r = client.request(wrong, p.replace("{net_id}", "abc"))
        assert r.status_code == 405 and set(r.json()["detail"]) == {"field", "message", "allowed"}, (p, r.text)
