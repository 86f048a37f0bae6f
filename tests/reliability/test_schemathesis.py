"""Schemathesis against each app's own OpenAPI schema (served at /openapi.json, ASGI in-process): for
every operation, requests that follow the schema (positive) and requests that break it (negative),
each answer held to the same contract as tests/reliability/test_fuzz.py (routes.check_contract).

Schemathesis generates from the published schema, the hand-written fuzz (test_fuzz.py) from the
pydantic models and the valid requests: the first catches a schema that promises what the app
refuses (a 5xx on a schema-valid body), the second reaches the engines with nearly valid data.
"""
from __future__ import annotations

import collections
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from .routes import APP_MODULES, check_contract, known_finding, make_app, openapi_routes

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.generation import GenerationMode  # noqa: E402

EXAMPLES = 25   # per operation and mode
_TMP = tempfile.TemporaryDirectory(prefix="reliability_st_")
APPS = {name: make_app(name, Path(_TMP.name) / name) for name in APP_MODULES}
OPERATIONS = [(name, m, p) for name, app in APPS.items() for m, p in openapi_routes(app)]


@pytest.fixture(scope="module")
def schemas():
    out = {name: schemathesis.openapi.from_asgi("/openapi.json", app) for name, app in APPS.items()}
    yield out
    _TMP.cleanup()


def _operation(schema, method: str, path: str):
    for result in schema.get_all_operations():
        op = result.ok()
        if op.method.upper() == method and op.path == path:
            return op
    raise AssertionError(f"schemathesis does not list {method} {path} of the schema")


@pytest.mark.parametrize("mode", ["positive", "negative"])
@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda o: f"{o[0]}:{o[1]}:{o[2]}")
def test_schemathesis_operation(operation, mode, schemas, fuzz_counts):
    app_name, method, path = operation
    op = _operation(schemas[app_name], method, path)
    counts = fuzz_counts.setdefault(f"schemathesis {app_name} {method} {path}", collections.Counter())

    @settings(max_examples=EXAMPLES, suppress_health_check=list(HealthCheck))
    @given(case=op.as_strategy(generation_mode=GenerationMode(mode)))
    def run(case):
        r = case.call()
        known = known_finding(operation, case.body if isinstance(case.body, dict) else None)
        counts[check_contract(f"{mode} {case.method} {case.formatted_path} query={case.query} body={case.body!r}"[:800],
                              r, known)] += 1
        counts["cases"] += 1

    try:
        run()
    except Unsatisfiable:   # nothing to break: no body, and no parameter or only plain strings (any is valid)
        assert mode == "negative" and not op.body, op.label
        assert all(p.definition.get("schema", {}).get("type") == "string" for p in op.iter_parameters()), op.label
