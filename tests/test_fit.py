"""Parameter recovery with Ray Tune (tune/fit_ode.py: the study, its outputs) and its job (jobs/fit.py)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from pydantic import ValidationError
from scipy.integrate import solve_ivp

from actors.sweep.models import get_model
from configs import preset
from tune.fit_ode import FitSpec, Problem, load_spec, make_observations, observation_times

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

CONFIG = preset("fit", "gaslit_fit.yaml")


@pytest.fixture(scope="module")
def spec() -> FitSpec:
    return load_spec(CONFIG)


# ---- fast ---------------------------------------------------------------------------------------
def test_observations_match_independent_solve_ivp(spec):
    clean = spec.model_copy(update={"noise": 0.0})
    t, y = make_observations(clean)
    model = get_model(spec.model)
    p = model.param_vector(spec.true_params)
    u0 = model.state_vector(spec.initial_state)
    ref = solve_ivp(lambda _t, u: model.rhs_numpy(u, p), spec.t_span, u0, method="DOP853",
                    rtol=1e-12, atol=1e-14, t_eval=observation_times(spec))
    assert ref.success
    assert np.allclose(t, ref.t)
    assert y.shape == (spec.n_obs, len(model.state_names))
    np.testing.assert_allclose(y, ref.y.T, rtol=1e-7, atol=1e-9)

    # noise: seeded, Gaussian, sd = noise * each state's own sd
    _, y1 = make_observations(spec)
    _, y2 = make_observations(spec)
    _, y3 = make_observations(spec.model_copy(update={"seed": spec.seed + 1}))
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(y1, y3)
    ratio = (y1 - y).std(axis=0) / y.std(axis=0)
    np.testing.assert_allclose(ratio, spec.noise, rtol=0.2)


def test_loss_at_truth_is_the_noise_floor(spec):
    t, y_obs = make_observations(spec)
    problem = Problem.build(spec, t, y_obs)
    truth = np.array([spec.true_fitted[n] for n in spec.fit])
    t_end = problem.t_ends[-1]
    loss = float((problem.residuals(problem.predict(truth, t_end, 1e-8), t_end) ** 2).sum())
    floor = spec.noise ** 2 / (1 + spec.noise ** 2)
    assert 0.7 * floor < loss < 1.3 * floor


@pytest.mark.parametrize("update, field", [
    ({"fit": {"gmma": [0.1, 0.5]}}, "fit.gmma"),                       # not a model parameter
    ({"fit": {"gamma": [0.6, 0.3]}}, "fit.gamma"),                      # lo >= hi
    ({"fit": {"gamma": [0.5, 0.5]}}, "fit.gamma"),                      # lo == hi
    ({"fit": {"gamma": [0.5, 0.6]}}, "fit.gamma"),                      # planted 0.4 outside
    ({"true_params": {"gamma": 0.4, "nope": 1.0}}, "true_params.nope"),
    ({"observe": ["x", "q"]}, "observe.q"),
    ({"horizons": [0.5, 0.25, 1.0]}, "horizons"),
    ({"horizons": [0.25, 0.5]}, "horizons"),
    ({"model": "no_such_model"}, "model"),
])
def test_bad_spec_names_the_field(update, field):
    data = {"model": "gaslit_af", "true_params": {"gamma": 0.4}, "fit": {"gamma": [0.25, 0.6]}, **update}
    with pytest.raises(ValidationError) as err:
        FitSpec.model_validate(data)
    assert f"{field}:" in str(err.value)


def test_exact_product_pair_is_rejected():
    from actors.sweep.models import register_model

    register_model({"name": "fit_test_product", "states": ["u"], "params": {"k": 0.5, "g": 2.0, "d": 1.0},
                    "initial_state": {"u": 1.0}, "equations": {"u": "-k*g*u + d"}})
    with pytest.raises(ValidationError, match="fit.g: k and g enter the model only as their product"):
        FitSpec(model="fit_test_product", fit={"k": (0.1, 1.0), "g": (1.0, 3.0)})
    FitSpec(model="fit_test_product", fit={"k": (0.1, 1.0), "d": (0.5, 2.0)})  # separable: fine


def test_confounded_pair_is_rejected_before_tuning(spec, monkeypatch, tmp_path):
    """GASLIT-AF's a1 and gamma: not an exact product (gamma also gates rho*gamma*sig), yet
    inseparable in this window, where sig(Lambda <= 1) < 2e-3. The Fisher preflight catches it."""
    import tune.fit_ode as fit_ode
    from actors.common.errors import InputError

    bad = FitSpec.model_validate({**spec.model_dump(), "fit": {**spec.fit, "a1": (0.1, 1.0)}})
    t, y_obs = make_observations(bad)
    se = fit_ode.expected_rel_se(bad, t, y_obs)
    assert se["gamma"] > 0.05 and se["a1"] > 0.05 and se["alpha_xy"] < 1e-3

    def no_tune(*a, **k):
        raise AssertionError("the preflight should have stopped before Tune")

    monkeypatch.setattr(fit_ode, "run_tune", no_tune)
    with pytest.raises(InputError, match="not identifiable.*gamma.*a1"):
        fit_ode.fit(bad, tmp_path)


# ---- slow: the documented fit on a private 2-CPU Ray -------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("ray_cluster", [{"num_gpus": 0}], ids=["2cpu"], indirect=True)
def test_documented_fit_recovers_planted_parameters(ray_cluster, spec, tmp_path):
    from tune.fit_ode import fit, table, write_outputs

    result = fit(spec, storage_path=tmp_path / "tune")
    print("\n" + table(result))
    assert set(result.best_params) == {"gamma", "alpha_xy", "c"}
    for name, err in result.rel_errors.items():
        assert err < 0.05, f"{name}: fitted {result.best_params[name]}, planted {result.true_params[name]}"
    assert result.ok
    assert result.n_trials == spec.num_samples
    assert 1 <= result.n_full_horizon <= result.n_trials
    assert result.polished_loss <= result.tune_best_loss
    assert result.polished_loss < 2 * result.noise_floor  # fits down to the noise, not below it by much
    assert result.polished_loss > 0.5 * result.noise_floor

    json_path, png_path = write_outputs(spec, result, tmp_path / "out")
    payload = json.loads(json_path.read_text())
    assert payload["result"]["ok"] is True
    assert payload["spec"]["fit"]["gamma"] == [0.25, 0.6]
    assert png_path.stat().st_size > 10_000
    assert not list((tmp_path / "out").glob(".fit.json.*"))  # no temp file left behind
