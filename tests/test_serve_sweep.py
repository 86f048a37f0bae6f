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


# ---- bounded work (issue 11, finding 1) -----------------------------------------------------------------
@pytest.mark.timeout(120)
def test_the_issue_request_answers_at_once_as_a_stalled_blowup(client):
    """POST {"t_span": [0, 1], "params": {"gamma": 1e308}} never answered (the torch step size was NaN
    and the loop ran to 2,000,000 steps). gamma = 1e308 is a finite number inside the model's domain,
    so the answer is 200, not a 4xx: the right-hand side there is ~1e306, |u| passes the blow-up
    bound within ~1e-302 time units, and the trajectory is a blow-up at t = 0 — what the scipy
    reference and the Triton kernels report too — marked `stalled` (its step size was not finite)."""
    t0 = time.perf_counter()
    r = client.post("/sweep/simulate", json={"t_span": [0, 1], "params": {"gamma": 1e308}})
    assert time.perf_counter() - t0 < 5.0
    assert r.status_code == 200, r.text
    (traj,) = r.json()["trajectories"]
    assert (traj["regime"], traj["blowup"], traj["blowup_reason"], traj["t_blowup"]) == ("blow_up", True, "stalled", 0.0)
    assert traj["n_steps"] == 0 and traj["params"]["gamma"] == 1e308
    r = client.post("/sweep/simulate", json={"model": "lorenz", "params": {"sigma": -10.0, "beta": -5.0},
                                             "t_span": [0, 20], "solver": {"rtol": 1e-6}})
    assert r.json()["trajectories"][0]["blowup_reason"] == "escaped"   # past the bound: not a stall


@pytest.mark.timeout(60)
def test_a_long_request_stops_at_its_budget_with_504():
    """The engine checks the request's budget every step: request_timeout_s = 0.5 s on a 10^6-time-unit
    Lorenz run is a 504 naming request_timeout_s within a few seconds, and the replica answers next."""
    app = TestClient(make_fastapi(SweepServeArgs(request_timeout_s=0.5)))
    t0 = time.perf_counter()
    r = app.post("/sweep/simulate", json={"model": "lorenz", "t_span": [0, 1e6]})
    assert time.perf_counter() - t0 < 5.0
    assert r.status_code == 504 and _detail(r)["field"] == "request_timeout_s", r.text
    assert app.post("/sweep/simulate", json={"model": "lorenz", "t_span": [0, 1]}).status_code == 200


# ---- inline models (issue 11, finding 5) ----------------------------------------------------------------
SPIRAL = {"name": "spiral", "states": ["x", "y"], "params": {"a": -0.3, "w": 1.0},
          "initial_state": {"x": 1.0, "y": 0.0}, "equations": {"x": "a*x - w*y", "y": "w*x + a*y"}}


def test_inline_model_matches_its_closed_form(client):
    """x + iy = e^{(a + i w) t}; the model travels in the request, the registry is untouched."""
    r = client.post("/sweep/simulate", json={"model": SPIRAL, "t_span": [0, 6], "n_save": 4,
                                             "params": {"a": 0.1}, "solver": {"rtol": 1e-10, "atol": 1e-12}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "spiral" and body["state_names"] == ["x", "y"]
    t = np.array(body["t"])
    z = np.exp((0.1 + 1j) * t)
    (traj,) = body["trajectories"]
    np.testing.assert_allclose(traj["y"]["x"], z.real, atol=1e-7)
    np.testing.assert_allclose(traj["y"]["y"], z.imag, atol=1e-7)
    assert traj["lyapunov_max"] == pytest.approx(0.1, abs=5e-3)
    assert "spiral" not in client.get("/healthz").json()["models"]


def test_inline_model_cannot_shadow_a_shipped_one(client):
    fake = {**SPIRAL, "name": "lorenz", "states": ["x", "y", "z"], "initial_state": {"x": 1, "y": 1, "z": 1},
            "params": {"sigma": 0.0}, "equations": {"x": "0", "y": "0", "z": "0"}}
    assert client.post("/sweep/simulate", json={"model": fake, "t_span": [0, 1]}).status_code == 200
    r = client.post("/sweep/simulate", json={"model": "lorenz", "t_span": [0, 2], "solver": {"rtol": 1e-10,
                                                                                              "atol": 1e-12}})
    final = r.json()["trajectories"][0]["final_state"]
    np.testing.assert_allclose([final[s] for s in "xyz"], _lorenz_reference(2.0), atol=1e-5)


@pytest.mark.parametrize("equation", ["__import__('os').system('touch {marker}')",
                                      "x.__class__.__mro__", "(lambda: 0)()", "open('{marker}')", "x[0]",
                                      "getattr(x, 'real')", "10**10**10"])
def test_inline_equations_are_never_run(client, tmp_path, equation):
    """Equations are parsed by the whitelist parser: 422 naming the equation, and nothing runs."""
    marker = tmp_path / "pwned"
    model = {**SPIRAL, "equations": {"x": equation.format(marker=marker), "y": "x"}}
    r = client.post("/sweep/simulate", json={"model": model, "t_span": [0, 1]})
    assert r.status_code == 422 and _detail(r)["field"] == "model.equations.x", r.text
    assert "exp, log" in _detail(r)["allowed"]
    assert not marker.exists()


def test_inline_model_limits_are_413_naming_the_field(client):
    """The app's limits (SweepServeArgs: 16 states, 64 parameters, 32 definitions, 2000 characters per
    expression) answer 413 naming the field; a malformed model is 422 naming its key."""
    n = 17
    big = {"states": [f"s{i}" for i in range(n)], "params": {"k": 1.0},
           "initial_state": {f"s{i}": 0.0 for i in range(n)}, "equations": {f"s{i}": "-k" for i in range(n)}}
    cases = [(big, "model.states"),
             ({**SPIRAL, "params": {f"p{i}": 1.0 for i in range(65)}}, "model.params"),
             ({**SPIRAL, "definitions": {f"d{i}": "x" for i in range(33)}}, "model.definitions"),
             ({**SPIRAL, "equations": {"x": "+".join(["x"] * 1001), "y": "x"}}, "model.equations.x")]
    for model, field in cases:
        r = client.post("/sweep/simulate", json={"model": model, "t_span": [0, 1]})
        assert r.status_code == 413 and _detail(r)["field"] == field, (field, r.text)
    for model, field in (({**SPIRAL, "equatoins": {}}, "model.equatoins"),
                         ({**SPIRAL, "params": {"a": True, "w": 1.0}}, "model.params.a"),
                         ({**SPIRAL, "equations": {"x": "a*x - q", "y": "x"}}, "model.equations.x")):
        r = client.post("/sweep/simulate", json={"model": model, "t_span": [0, 1]})
        assert r.status_code == 422 and _detail(r)["field"] == field, (field, r.text)
    limits = client.get("/healthz").json()["limits"]["inline_model"]
    assert (limits["max_states"], limits["max_params"], limits["max_expression_chars"]) == (16, 64, 2000)
    assert "Heaviside" in limits["functions"] and limits["constants"] == ["pi", "E"]
