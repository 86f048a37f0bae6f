"""Model registry: parsing, lowering to numpy/torch, validation errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from actors.common.errors import InputError, UnknownName
from actors.sweep.models import get_model, model_names, register_model


def test_registry_has_the_four_models():
    assert {"gaslit_af", "lorenz", "rossler", "brusselator"} <= set(model_names())


def test_lorenz_rhs_matches_hand_written_equations():
    m = get_model("lorenz")
    rng = np.random.default_rng(0)
    u = rng.normal(size=(50, 3)) * 10
    p = np.column_stack([rng.uniform(5, 15, 50), rng.uniform(10, 40, 50), rng.uniform(1, 4, 50)])
    s, r, b = p.T
    x, y, z = u.T
    expect = np.column_stack([s * (y - x), x * (r - z) - y, x * y - b * z])
    np.testing.assert_allclose(m.rhs_numpy(u, p), expect, rtol=1e-14)
    got = m.rhs_torch(torch.tensor(u), torch.tensor(p)).numpy()
    np.testing.assert_allclose(got, expect, rtol=1e-14)


def test_specialised_rhs_equals_general_rhs():
    m = get_model("gaslit_af")
    rng = np.random.default_rng(1)
    u = rng.uniform(-3, 3, size=(64, 5))
    u[:, 3] = rng.uniform(0, 10, 64)
    p = np.tile(m.default_params, (64, 1))
    g = m.param_names.index("gamma")
    p[:, g] = rng.uniform(0, 1, 64)
    fixed = {n: float(v) for n, v in m.spec.params.items() if n != "gamma"}
    rhs = m.specialized_rhs_torch(fixed)
    free = torch.tensor(p[:, m.free_param_columns(fixed)])
    np.testing.assert_allclose(rhs(torch.tensor(u), free).numpy(), m.rhs_numpy(u, p), rtol=1e-12, atol=1e-12)


def test_gaslit_jacobian_is_symbolic_and_square():
    m = get_model("gaslit_af")
    assert m.jacobian.shape == (5, 5)


def test_unknown_model_names_the_field():
    with pytest.raises(UnknownName, match="model: unknown model 'nope'.*lorenz"):
        get_model("nope")


def test_unknown_and_non_finite_parameters_are_rejected():
    m = get_model("lorenz")
    with pytest.raises(InputError, match=r"params.sgima: unknown name \(allowed: sigma, rho, beta\)"):
        m.param_vector({"sgima": 1.0})
    with pytest.raises(InputError, match="initial_state.x: must be finite"):
        m.state_vector({"x": float("nan")})


def test_user_model_registration_and_bad_equations():
    m = register_model({"name": "decay_test", "states": ["u"], "params": {"k": 0.5},
                        "initial_state": {"u": 1.0}, "equations": {"u": "-k*u"}})
    assert m.rhs_numpy(np.array([[2.0]]), np.array([[0.5]]))[0, 0] == -1.0
    with pytest.raises(InputError, match="equations.u: unknown names"):
        register_model({"name": "bad_test", "states": ["u"], "params": {"k": 0.5},
                        "initial_state": {"u": 1.0}, "equations": {"u": "-k*w"}})


def test_fixed_point_labels_follow_the_yaml_rule():
    m = get_model("gaslit_af")
    u = np.array([[0, 0, 1, 0.2, 1], [1, 2, 0.5, 9.3, 0.5]], dtype=float)
    assert list(m.fixed_point_label(u, m.default_params)) == ["healthy", "collapsed"]
