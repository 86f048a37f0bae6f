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


# ---- models as data: the safe parser, inline models, model files (issue 11, finding 5) -------------------
BASE = {"states": ["u"], "params": {"k": 0.5}, "initial_state": {"u": 1.0}}

INJECTIONS = [
    "__import__('os').system('touch {marker}')",            # sympify eval'd this: the file appeared
    "u.__class__.__mro__[1].__subclasses__()",               # attribute access / dunder
    "(lambda: __import__('os').system('touch {marker}'))()",
    "open('{marker}', 'w').write('x')",                     # a name that is no state, parameter or function
    "exec('import os')",
    "u[0]",
    "'a string'",
    "k if u else 1",
    "u == 1",                                                 # comparisons only in label conditions
    "exp",                                                    # a function name as a value
    "exp(u, base=2)",                                         # keyword arguments
]


@pytest.mark.parametrize("text", INJECTIONS)
def test_equations_are_parsed_without_running_code(tmp_path, text):
    """Before issue 11 the registry parsed equations with sympy.sympify (eval): the first case created
    the marker file. Now each is an InputError naming the equation, and nothing runs."""
    from actors.sweep.models import compile_model

    marker = tmp_path / "pwned"
    bad = text.format(marker=marker)
    with pytest.raises(InputError) as err:
        compile_model({**BASE, "name": "inject_test", "equations": {"u": bad}})
    assert err.value.field == "equations.u", err.value
    assert not marker.exists()
    with pytest.raises(InputError) as err:     # definitions and label conditions go through the same parser
        compile_model({**BASE, "name": "inject_test", "definitions": {"d": bad}, "equations": {"u": "-k*u"}})
    assert err.value.field == "definitions.d"
    with pytest.raises(InputError) as err:
        compile_model({**BASE, "name": "inject_test", "equations": {"u": "-k*u"},
                       "fixed_point_labels": [{"name": "low", "when": bad.replace("u == 1", "u.real")}]})
    assert err.value.field == "fixed_point_labels.low"
    assert not marker.exists()


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("text", "why"), [("10**10**10*u", "exponent"), ("u**(9**9)", "exponent"),
                                           ("u/0", "finite"), ("sqrt(-1)*u", "finite"), ("exp(1000)*u", "finite"),
                                           ("(" * 300 + "u" + ")" * 300, "expression")])
def test_constant_bombs_are_refused_at_once(text, why):
    """`10**10**10` made sympify compute a ten-billion-digit integer (minutes, gigabytes); constant
    sub-expressions must now be finite reals with exponents of at most 1000."""
    from actors.sweep.models import compile_model

    with pytest.raises(InputError, match=why) as err:
        compile_model({**BASE, "name": "bomb_test", "equations": {"u": text}})
    assert err.value.field == "equations.u"


def test_every_whitelisted_function_lowers_like_numpy():
    """One equation using every allowed function and constant, ^ as power, against numpy written by hand."""
    from actors.sweep.modelspec import CONSTANTS, FUNCTIONS

    text = ("exp(-x^2) + log(y) + log(y, 2) + sin(x) + cos(y) + tan(x/3) + tanh(x) + sinh(x/2) + cosh(y/3)"
            " + sqrt(y) + Abs(x) + Min(x, y) + Max(x, 0.5) + Heaviside(x - 0.1) + pi*E*a")
    assert all(f"{name}(" in text for name in FUNCTIONS) and all(c in text for c in CONSTANTS)
    m = register_model({"name": "whitelist_test", "states": ["x", "y"], "params": {"a": 0.3},
                        "initial_state": {"x": 0.0, "y": 1.0}, "equations": {"x": text, "y": "-a*y"}})
    rng = np.random.default_rng(3)
    x, y = rng.uniform(-1.5, 1.5, 200), rng.uniform(0.2, 3.0, 200)
    a = 0.3
    expect = (np.exp(-x**2) + np.log(y) + np.log2(y) + np.sin(x) + np.cos(y) + np.tan(x / 3) + np.tanh(x)
              + np.sinh(x / 2) + np.cosh(y / 3) + np.sqrt(y) + np.abs(x) + np.minimum(x, y) + np.maximum(x, 0.5)
              + (x > 0.1) + np.pi * np.e * a)
    u, p = np.column_stack([x, y]), np.full((200, 1), a)
    np.testing.assert_allclose(m.rhs_numpy(u, p)[:, 0], expect, rtol=1e-12)
    np.testing.assert_allclose(m.rhs_torch(torch.tensor(u), torch.tensor(p)).numpy()[:, 0], expect, rtol=1e-12)


def test_model_spec_is_strict_and_names_are_plain():
    """A model is Strict data: typos, NaN, booleans or strings as numbers and odd names fail naming the field."""
    from pydantic import ValidationError

    from actors.sweep.models import ModelSpec

    good = {**BASE, "equations": {"u": "-k*u"}}
    for bad, where in (({**good, "equatons": {}}, "equatons"), ({**good, "params": {"k": float("nan")}}, "params.k"),
                       ({**good, "params": {"k": True}}, "params.k"), ({**good, "params": {"k": "0.5"}}, "params.k"),
                       ({**good, "states": ["__u"], "initial_state": {"__u": 1}, "equations": {"__u": "1"}}, ""),
                       ({**good, "params": {"exp": 1.0}}, "")):
        with pytest.raises(ValidationError) as err:
            ModelSpec.model_validate(bad)
        assert ".".join(map(str, err.value.errors()[0]["loc"])) == where, (bad, err.value)


def test_model_files_register_and_errors_name_the_file(tmp_path):
    """`--model FILE.yaml`: YAML 1.2 numbers (1e-3 is a float), errors name the option, file and key."""
    from actors.sweep.models import load_model_file, register_model_file

    path = tmp_path / "decay.yaml"
    path.write_text("name: decay_file_test\nstates: [u]\nparams: {k: 1e-3}\ninitial_state: {u: 2}\n"
                    "equations: {u: -k*u}\n")
    m = register_model_file(path)
    assert get_model("decay_file_test") is not None and m.default_params[0] == 1e-3
    assert m.rhs_numpy(np.array([[2.0]]), np.array([[1e-3]]))[0, 0] == pytest.approx(-2e-3)
    with pytest.raises(InputError, match=r"--model: no such file"):
        load_model_file(tmp_path / "nope.yaml")
    path.write_text("name: bad_file_test\nstates: [u]\nparams: {k: 1}\ninitial_state: {u: 2}\nequations: {u: -q*u}\n")
    with pytest.raises(InputError) as err:
        register_model_file(path)
    assert err.value.field == f"--model {path}: equations.u" and "unknown names ['q'] in '-q*u'" in str(err.value)
    assert "bad_file_test" not in model_names()     # a model that does not compile is not registered
    path.write_text("name: bad_file_test\nstates: [u]\nparams: {k: 1}\ninitial_state: {u: 2}\nequatons: {u: 1}\n")
    with pytest.raises(InputError) as err:
        load_model_file(path)
    assert err.value.field.startswith(f"--model {path}: ")


def test_inline_models_compile_by_content_and_ship_registered_ones():
    """An inline ModelSpec resolves without registration; ship_model inlines registered models only."""
    from actors.sweep.models import ModelSpec, resolve_model, ship_model

    spec = ModelSpec.model_validate({**BASE, "name": "inline_test", "equations": {"u": "-k*u"}})
    assert "inline_test" not in model_names()
    assert resolve_model(spec) is resolve_model(ModelSpec.model_validate(spec.model_dump()))   # cached by content
    with pytest.raises(InputError) as err:
        resolve_model(ModelSpec.model_validate({**BASE, "equations": {"u": "-k*w"}}))
    assert err.value.field == "model.equations.u"
    assert ship_model("lorenz") == "lorenz" and ship_model(spec) is spec
    register_model({**BASE, "name": "shipped_test", "equations": {"u": "-k*u"}})
    shipped = ship_model("shipped_test")
    assert isinstance(shipped, ModelSpec) and shipped.equations == {"u": "-k*u"}
