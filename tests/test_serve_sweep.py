"""serve.sweep: the HTTP front end of the sweep engine.

Fast tests drive the FastAPI app in-process (TestClient, no Ray); the slow one deploys the app on a
real local Ray + Serve and talks to it over HTTP.
"""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import scipy.integrate
from fastapi.testclient import TestClient

from serve.common import parse_cli_args
from serve.sweep import SimulateRequest, SweepServeArgs, build_app, make_fastapi, run_simulate


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(make_fastapi(SweepServeArgs(max_batch=4, max_points=50)))


def _lorenz_reference(t1: float) -> np.ndarray:
    def f(_t, u, s=10.0, r=28.0, b=8.0 / 3.0):
        return [s * (u[1] - u[0]), u[0] * (r - u[2]) - u[1], u[0] * u[1] - b * u[2]]

    sol = scipy.integrate.solve_ivp(f, (0.0, t1), [1.0, 1.0, 1.0], method="DOP853", rtol=1e-10, atol=1e-12)
    return sol.y[:, -1]


def test_healthz(client):
    r = client.get("/healthz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert {"gaslit_af", "lorenz"} <= set(body["models"])


def test_gaslit_healthy_point(client):
    r = client.post("/sweep/simulate", json={"model": "gaslit_af", "params": {"gamma": 0.1},
                                             "initial_state": {"Lambda": 1.0}, "t_span": [0, 200],
                                             "solver": {"rtol": 1e-6, "atol": 1e-9}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "gaslit_af" and body["state_names"] == ["x", "y", "f", "Lambda", "Omega"]
    assert body["t"] is None
    (traj,) = body["trajectories"]
    assert traj["attractor"] == "healthy" and traj["regime"] == "fixed_point"
    assert traj["params"]["gamma"] == 0.1 and traj["initial_state"]["Lambda"] == 1.0
    assert traj["y"] is None and traj["blowup"] is False and traj["t_blowup"] is None
    assert traj["final_state"]["Lambda"] < 5
    assert set(traj["window_min"]) == set(traj["window_max"]) == set(body["state_names"])


def test_lorenz_matches_scipy(client):
    r = client.post("/sweep/simulate", json={"model": "lorenz", "t_span": [0, 2], "save_points": [0, 0.5, 1, 2],
                                             "solver": {"rtol": 1e-10, "atol": 1e-12, "lyapunov": False}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["t"] == [0, 0.5, 1, 2]
    (traj,) = body["trajectories"]
    assert traj["lyapunov_max"] is None
    ref = _lorenz_reference(2.0)
    got = np.array([traj["y"][s][-1] for s in "xyz"])
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose([traj["final_state"][s] for s in "xyz"], ref, atol=1e-5, rtol=0)
    assert [traj["y"][s][0] for s in "xyz"] == [1.0, 1.0, 1.0]


def test_batch_and_n_save(client):
    r = client.post("/sweep/simulate", json={
        "model": "lorenz", "params": {"rho": 28.0}, "t_span": [0, 1], "n_save": 5,
        "batch": [{"params": {"rho": 10.0}}, {"initial_state": {"x": 2.0}}],
        "solver": {"rtol": 1e-6, "lyapunov": False}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["t"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    a, b = body["trajectories"]
    assert a["params"]["rho"] == 10.0 and a["initial_state"]["x"] == 1.0
    assert b["params"]["rho"] == 28.0 and b["initial_state"]["x"] == 2.0
    assert all(len(v) == 5 for v in a["y"].values())


def test_blowup_gives_valid_json_with_nulls():
    # negative damping makes Lorenz run away past the blow-up bound
    body = run_simulate({"model": "lorenz", "params": {"sigma": -10.0, "beta": -5.0}, "t_span": [0, 20],
                         "n_save": 20, "solver": {"rtol": 1e-6}})
    (traj,) = body["trajectories"]
    assert traj["blowup"] is True and traj["regime"] == "blow_up" and traj["t_blowup"] is not None
    assert None in traj["y"]["x"]  # unsaved points after the escape are NaN -> null
    json.dumps(body, allow_nan=False)


def _detail(r) -> dict:
    return r.json()["detail"]


def test_unknown_param_name(client):
    r = client.post("/sweep/simulate", json={"params": {"gama": 0.1}})
    assert r.status_code == 422
    assert _detail(r)["field"] == "params.gama" and "gamma" in _detail(r)["allowed"]
    r = client.post("/sweep/simulate", json={"batch": [{"params": {}}, {"params": {"nope": 1}}], "t_span": [0, 1]})
    assert r.status_code == 422 and _detail(r)["field"] == "batch[1].params.nope"


def test_nan_initial_state(client):
    raw = '{"model": "lorenz", "initial_state": {"x": NaN}, "t_span": [0, 1]}'
    r = client.post("/sweep/simulate", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert _detail(r)["field"] == "initial_state.x"
    assert "finite" in _detail(r)["message"]


@pytest.mark.parametrize("span", ["[10, 0]", "[0, 0]", "[0, Infinity]", "[NaN, 1]"])
def test_bad_t_span(client, span):
    raw = '{"model": "lorenz", "t_span": ' + span + '}'
    r = client.post("/sweep/simulate", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert _detail(r)["field"] in ("t_span", "t_span.0", "t_span.1")   # the span, or its non-finite end


def test_batch_over_limit(client):
    r = client.post("/sweep/simulate", json={"model": "lorenz", "batch": [{}] * 5})
    assert r.status_code == 413
    assert _detail(r)["field"] == "batch" and "4" in _detail(r)["message"]


def test_too_many_save_points(client):
    r = client.post("/sweep/simulate", json={"model": "lorenz", "n_save": 51})
    assert r.status_code == 413 and _detail(r)["field"] == "n_save"
    r = client.post("/sweep/simulate", json={"model": "lorenz", "save_points": list(range(51))})
    assert r.status_code == 413 and _detail(r)["field"] == "save_points"


def test_bad_save_points(client):
    for pts in ([0, 2, 1], [0, 200]):
        r = client.post("/sweep/simulate", json={"model": "lorenz", "t_span": [0, 10], "save_points": pts})
        assert r.status_code == 422 and _detail(r)["field"] == "save_points"
    r = client.post("/sweep/simulate", json={"model": "lorenz", "save_points": [0, 1], "n_save": 3})
    assert r.status_code == 422 and _detail(r)["field"] == "save_points"


def test_unknown_model(client):
    r = client.post("/sweep/simulate", json={"model": "nope"})
    assert r.status_code == 422
    assert _detail(r)["field"] == "model" and "lorenz" in _detail(r)["allowed"]


def test_schema_errors_name_the_field(client):
    """A malformed body is 422 with the same {field, message, allowed} body as an InputError."""
    r = client.post("/sweep/simulate", json={"model": "lorenz", "solver": {"rtol": 0.5}})
    assert r.status_code == 422 and _detail(r)["field"] == "solver.rtol" and _detail(r)["allowed"] == "<= 0.01"
    r = client.post("/sweep/simulate", json={"model": "lorenz", "n_save": 1})
    assert r.status_code == 422 and _detail(r)["field"] == "n_save" and _detail(r)["allowed"] == ">= 2"
    r = client.post("/sweep/simulate", json={"model": "lorenz", "typo": 1})
    assert r.status_code == 422 and _detail(r)["field"] == "typo"


def test_openapi_lists_routes(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert "/sweep/simulate" in paths and "/healthz" in paths


def test_args_validation():
    with pytest.raises(ValueError):
        SweepServeArgs.model_validate({"max_batch": 0})
    with pytest.raises(ValueError):
        SweepServeArgs.model_validate({"bakend": "torch"})
    cli = parse_cli_args({"max_batch": "8", "backend": "auto"})  # `serve run` args arrive as strings
    assert SweepServeArgs.model_validate(cli).max_batch == 8 and build_app(cli) is not None
    assert SimulateRequest().model == "gaslit_af"


# ---- Ray Serve end to end ---------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_serve_end_to_end(serve_instance):
    import httpx
    from ray import serve

    serve.run(build_app({"max_batch": 2, "max_points": 100}), name="sweep", route_prefix="/")
    base = serve_instance.url
    with httpx.Client(base_url=base, timeout=60) as http:
        deadline = time.time() + 30
        while True:
            r = http.get("/healthz")
            if r.status_code == 200 or time.time() > deadline:
                break
            time.sleep(0.5)
        assert r.status_code == 200 and "gaslit_af" in r.json()["models"]

        r = http.post("/sweep/simulate", json={"params": {"gamma": 0.1}, "initial_state": {"Lambda": 1.0},
                                               "t_span": [0, 200], "n_save": 11, "solver": {"rtol": 1e-6}})
        assert r.status_code == 200, r.text
        (traj,) = r.json()["trajectories"]
        assert traj["attractor"] == "healthy" and len(traj["y"]["Lambda"]) == 11

        r = http.post("/sweep/simulate", json={"params": {"gama": 0.1}})
        assert r.status_code == 422 and r.json()["detail"]["field"] == "params.gama"
        r = http.post("/sweep/simulate", json={"model": "lorenz", "t_span": [5, 1]})
        assert r.status_code == 422 and r.json()["detail"]["field"] == "t_span"
        r = http.post("/sweep/simulate", json={"model": "lorenz", "batch": [{}, {}, {}]})
        assert r.status_code == 413 and r.json()["detail"]["field"] == "batch"
        r = http.post("/sweep/simulate", json={"solver": {"rtol": "x"}})
        assert r.status_code == 422 and r.json()["detail"]["field"] == "solver.rtol"
        assert http.get("/docs").status_code == 200
