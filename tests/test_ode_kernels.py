"""Generated per-trajectory ODE kernels on the CPU: the same Triton source under TRITON_INTERPRET=1.

References are independent of the kernels: a float64 numpy RK4 with the same dt (must agree to
~1e-12 in FP64), scipy solve_ivp DOP853 at rtol 1e-12 for the adaptive pairs, closed forms (blow-up
time of u' = u^2, the linear spiral's Lyapunov exponent), and SymPy's own numeric evaluation for the
expression printer. Output buffers the kernel writes (saves) start NaN-filled, so an unwritten
element fails. The interpreter is slow (~20 ms per step), so batches are small and horizons short.
"""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from scipy.integrate import solve_ivp

from actors.common.errors import InputError, UnknownName
from actors.sweep.config import TritonSolver
from actors.sweep.engine import simulate
from actors.sweep.models import get_model, register_model
from kernels.ode import codegen
from kernels.ode.triton_solvers import OdeInputError, solve_ode

pytestmark = pytest.mark.triton_interpret  # CUDA machines run the compiled twins in test_gpu_ode_kernels.py

SQUARE = register_model({
    "name": "square_kernel_test", "states": ["u"], "params": {"k": 1.0}, "initial_state": {"u": 1.0},
    "equations": {"u": "k*u**2"}, "time_span": [0.0, 2.0]})
SPIRAL = register_model({
    "name": "spiral_kernel_test", "states": ["x", "y"], "params": {"a": -0.3, "w": 1.0},
    "initial_state": {"x": 1.0, "y": 0.0}, "equations": {"x": "a*x - w*y", "y": "w*x + a*y"},
    "time_span": [0.0, 10.0]})
CPU = dict(device="cpu", block=16)


def _rk4_numpy(model, u0, p, t0, t1, n_steps):
    """Classical RK4 in float64 numpy: the fixed-step reference (every step's state)."""
    h = (t1 - t0) / n_steps
    out = [u0.copy()]
    u = u0.copy()
    for _ in range(n_steps):
        k1 = model.rhs_numpy(u, p)
        k2 = model.rhs_numpy(u + 0.5 * h * k1, p)
        k3 = model.rhs_numpy(u + 0.5 * h * k2, p)
        k4 = model.rhs_numpy(u + h * k3, p)
        u = u + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        out.append(u)
    return np.stack(out, axis=1)  # [B, n_steps + 1, n]


def _dop853(model, u0, p, t1):
    return np.stack([solve_ivp(lambda t, y, i=i: model.rhs_numpy(y, p[i]), (0.0, t1), u0[i], method="DOP853",
                               rtol=1e-12, atol=1e-14).y[:, -1] for i in range(len(u0))])


def _random_lorenz(rng, b):
    m = get_model("lorenz")
    p = np.column_stack([rng.uniform(8, 12, b), rng.uniform(20, 35, b), rng.uniform(2, 3, b)])
    return m, p, rng.normal(0, 8, (b, 3)) + [0, 0, 20]


# ---- the printer ---------------------------------------------------------------------------------
def test_printer_matches_sympy_numerically():
    """Lowered expressions (evaluated with numpy standing in for triton.language) equal SymPy's."""
    x, y, k = sp.symbols("x y k")
    exprs = (x**4 / (x**4 + k**4) - 3 * y**-2 + sp.sqrt(x * x + 1), x ** k + sp.tanh(y) * sp.exp(-x),
             sp.Max(x, y) + sp.Heaviside(y - 0.5) + sp.Abs(y) ** sp.Rational(-1, 2) + (-x) ** 3 + sp.Float(2.0) ** y)
    system = codegen.OdeSystem("printer", ("x", "y"), ("k",), exprs)
    consts: dict[float, str] = {}
    lines = codegen.rhs_lines(system, ["ux", "uy"], ["pk"], ["o0", "o1", "o2"], "_t", consts)

    class TL:  # numpy stand-ins for the triton.language functions the printer emits
        exp, log, sqrt, sin, cos, abs, maximum, minimum, where = (np.exp, np.log, np.sqrt, np.sin, np.cos, np.abs,
                                                                   np.maximum, np.minimum, np.where)

    rng = np.random.default_rng(1)
    env = {"tl": TL, "ux": rng.uniform(0.2, 2, 64), "uy": rng.uniform(0.2, 2, 64), "pk": rng.uniform(1, 3, 64),
           "_tanh": np.tanh, "_pow": np.power}
    env.update({name: np.float64(v) for v, name in consts.items()})
    for line in lines:
        exec(line, env)  # noqa: S102 - our own generated straight-line code
    ref = sp.lambdify((x, y, k), exprs, "numpy")(env["ux"], env["uy"], env["pk"])
    for i in range(3):
        np.testing.assert_allclose(env[f"o{i}"], ref[i], rtol=1e-13)
    assert "**" not in "\n".join(lines)  # integer powers became multiplications


def test_cache_key_follows_equations_solver_and_dtype(tmp_path, monkeypatch):
    m = get_model("lorenz")
    s = codegen.system_from_model(m)
    keys = {codegen.KernelSpec(s, "rk4", "float32").key, codegen.KernelSpec(s, "rk4", "float64").key,
            codegen.KernelSpec(s, "tsit5", "float32").key,
            codegen.KernelSpec(codegen.system_from_model(m, {"rho": 28.0}), "rk4", "float32").key}
    assert len(keys) == 4
    assert codegen.KernelSpec(s, "rk4", "float32").key == codegen.KernelSpec(codegen.system_from_model(m), "rk4",
                                                                              "float32").key
    src = codegen.kernel_source(codegen.KernelSpec(codegen.system_from_model(m, {"rho": 28.0, "sigma": 10.0}),
                                                   "tsit5", "float64"))
    assert "p_0 = tl.load(P + row * 1 + 0" in src and "p_1" not in src  # only beta is loaded per lane
    compile(src, "<generated>", "exec")


# ---- fixed step ------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_name", ["lorenz", "gaslit_af"])
def test_rk4_fp64_matches_numpy_rk4_every_saved_step(model_name):
    rng = np.random.default_rng(2)
    m = get_model(model_name)
    b, steps, every = 5, 24, 4
    if model_name == "lorenz":
        m, p, u0 = _random_lorenz(rng, b)
    else:
        p = np.tile(m.default_params, (b, 1))
        p[:, 0] = rng.uniform(0, 1, b)
        u0 = np.tile(m.default_state, (b, 1)) + rng.uniform(0, 0.5, (b, 5))
    ref = _rk4_numpy(m, u0, p, 0.0, 0.3, steps)
    n_save = steps // every + 2  # two slots more than there are saves: they must stay NaN
    r = solve_ode(m, p, u0, (0.0, 0.3), method="rk4", dtype="float64", n_steps=steps, save_every=every,
                  n_save=n_save, **CPU)
    np.testing.assert_allclose(r.u_final, ref[:, -1], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(r.saves[:, : steps // every], ref[:, every::every], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(r.save_t[:, : steps // every], np.tile(0.3 / steps * np.arange(every, steps + 1, every),
                                                                      (b, 1)), rtol=1e-14)
    assert np.isnan(r.saves[:, steps // every:]).all() and np.isnan(r.save_t[:, steps // every:]).all()
    assert (r.n_steps == steps).all() and r.finished.all() and not r.blowup.any()
    np.testing.assert_allclose(r.t_final, 0.3, rtol=1e-14)


def test_rk4_fp32_close_to_fp64_reference():
    m, p, u0 = _random_lorenz(np.random.default_rng(3), 4)
    ref = _rk4_numpy(m, u0, p, 0.0, 0.2, 20)[:, -1]
    r = solve_ode(m, p, u0, (0.0, 0.2), method="rk4", dtype="float32", n_steps=20, features=False, **CPU)
    np.testing.assert_allclose(r.u_final, ref, rtol=2e-5, atol=2e-4)
    np.testing.assert_allclose(r.t_final, 0.2, rtol=1e-6)
    assert r.finished.all() and (r.n_steps == 20).all()


# ---- adaptive ----------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["tsit5", "dopri5"])
def test_adaptive_fp64_matches_dop853_on_lorenz(method):
    m, p, u0 = _random_lorenz(np.random.default_rng(4), 3)
    r = solve_ode(m, p, u0, (0.0, 0.1), method=method, dtype="float64", rtol=1e-10, atol=1e-12,
                  chunk_steps=8, **CPU)
    ref = _dop853(m, u0, p, 0.1)
    np.testing.assert_allclose(r.u_final, ref, rtol=2e-8, atol=1e-8)
    np.testing.assert_allclose(r.t_final, 0.1, rtol=1e-14)
    assert r.finished.all() and r.launches > 1 and (r.n_steps > 10).all()


@pytest.mark.parametrize("model_name,t1", [("gaslit_af", 0.15), ("brusselator", 3.0)])
def test_tsit5_fp64_matches_dop853_on_registered_models(model_name, t1):
    rng = np.random.default_rng(5)
    m = get_model(model_name)
    b = 3
    p = np.tile(m.default_params, (b, 1)) * rng.uniform(0.8, 1.2, (b, len(m.param_names)))
    u0 = np.tile(m.default_state, (b, 1)) * rng.uniform(0.8, 1.2, (b, len(m.state_names)))
    r = solve_ode(m, p, u0, (0.0, t1), method="tsit5", dtype="float64", rtol=1e-9, atol=1e-12, **CPU)
    np.testing.assert_allclose(r.u_final, _dop853(m, u0, p, t1), rtol=1e-7, atol=1e-8)


def test_tsit5_fp32_within_its_tolerance():
    m, p, u0 = _random_lorenz(np.random.default_rng(6), 4)
    r = solve_ode(m, p, u0, (0.0, 0.15), method="tsit5", dtype="float32", rtol=1e-5, atol=1e-6, **CPU)
    np.testing.assert_allclose(r.u_final, _dop853(m, u0, p, 0.15), rtol=2e-4, atol=2e-3)


def test_compaction_changes_nothing_but_launches():
    """Chunked launches over a compacted index list give bit-identical states to one launch."""
    m, p, u0 = _random_lorenz(np.random.default_rng(7), 6)
    kw = dict(method="tsit5", dtype="float64", rtol=1e-7, atol=1e-9, **CPU)
    one = solve_ode(m, p, u0, (0.0, 0.1), compact=False, **kw)
    many = solve_ode(m, p, u0, (0.0, 0.1), chunk_steps=8, **kw)
    assert one.launches == 1 and many.launches > 1
    np.testing.assert_array_equal(one.u_final, many.u_final)
    np.testing.assert_array_equal(one.n_steps, many.n_steps)


# ---- blow-up, features, Lyapunov ---------------------------------------------------------------
@pytest.mark.parametrize("method,kw,tol", [("tsit5", dict(rtol=1e-8, atol=1e-12), 1e-5),
                                           ("rk4", dict(n_steps=250), 5e-3)])
def test_blowup_time_of_u_squared(method, kw, tol):
    """u' = u^2, u(0) = u0 reaches the bound B at t = 1/u0 - 1/B; u0 = 0.25 stays bounded to t = 2."""
    u0 = np.array([[1.0], [2.0], [0.25]])
    r = solve_ode(SQUARE, np.ones((3, 1)), u0, (0.0, 2.0), method=method, dtype="float64", blowup_bound=1e4,
                  fold=False, **kw, **CPU)
    assert list(r.blowup) == [True, True, False] and r.finished.all()
    np.testing.assert_allclose(r.t_blowup[:2], 1 / u0[:2, 0] - 1e-4, atol=tol)
    assert np.isnan(r.t_blowup[2])
    np.testing.assert_allclose(r.u_final[2, 0], 1 / (1 / 0.25 - 2.0), rtol=1e-6)


def test_nan_right_hand_side_stops_at_once():
    """sqrt of a negative state: the first trial step is nan, so the lane stops (blow-up at t0)."""
    m = register_model({"name": "nan_kernel_test", "states": ["u"], "params": {"k": 1.0},
                        "initial_state": {"u": -1.0}, "equations": {"u": "sqrt(u) - k"}})
    # adaptive: the nan trial is rejected and the step size collapses; fixed step: the first step escapes
    for method, kw, accepted in (("tsit5", dict(rtol=1e-6, atol=1e-9), 0), ("rk4", dict(n_steps=50), 1)):
        r = solve_ode(m, np.ones((2, 1)), np.array([[-1.0], [-2.0]]), (0.0, 1.0), method=method,
                      dtype="float64", max_steps=10**6, **kw, **CPU)
        assert r.blowup.all() and (r.n_steps == accepted).all() and (r.n_rejected <= 60).all(), method
        np.testing.assert_array_equal(r.t_blowup, [0.0, 0.0])


def test_window_features_and_lyapunov_on_the_linear_spiral():
    """x + iy = e^{(a+i)t}: window min/max/mean match the closed form; lambda_max = a."""
    a = np.array([-0.1, 0.0, 0.1])
    p = np.column_stack([a, np.ones(3)])
    r = solve_ode(SPIRAL, p, np.tile([1.0, 0.0], (3, 1)), (0.0, 5.0), method="tsit5", dtype="float64",
                  rtol=1e-7, atol=1e-10, window=0.5, lyapunov=True, **CPU)
    t = np.linspace(2.5, 5.0, 40001)
    x = np.exp(a[:, None] * t) * np.cos(t)
    # extremes are taken at accepted points only: inside the true range, within a step's curvature of it
    assert (r.u_max[:, 0] <= x.max(1) + 1e-8).all() and (r.u_max[:, 0] > x.max(1) - 0.08).all()
    assert (r.u_min[:, 0] >= x.min(1) - 1e-8).all() and (r.u_min[:, 0] < x.min(1) + 0.08).all()
    np.testing.assert_allclose(r.u_mean[:, 0], np.trapezoid(x, t, axis=1) / 2.5, atol=2e-3)
    np.testing.assert_allclose(r.lyapunov_max, a, atol=2e-3)


def test_fp32_twin_does_not_force_tiny_steps():
    """In FP32 the twin's separation error is floored at its rounding level: steps stay as without it."""
    a = np.array([-0.2, 0.1])
    kw = dict(method="tsit5", dtype="float32", rtol=1e-6, atol=1e-9, window=0.5, twin_separation=1e-4, **CPU)
    p, u0 = np.column_stack([a, np.ones(2)]), np.tile([1.0, 0.0], (2, 1))
    plain = solve_ode(SPIRAL, p, u0, (0.0, 1.5), **kw)
    twin = solve_ode(SPIRAL, p, u0, (0.0, 1.5), lyapunov=True, **kw)
    assert twin.finished.all() and not twin.blowup.any()
    assert (twin.n_steps <= 1.5 * plain.n_steps).all(), (twin.n_steps, plain.n_steps)
    np.testing.assert_allclose(twin.lyapunov_max, a, atol=2e-2)


# ---- engine backend and bad input ------------------------------------------------------------------
def test_engine_triton_backend_brusselator_sides_of_the_hopf():
    """Through simulate(): a stable focus below b = 1 + a^2 (converged to (a, b/a)), oscillation above."""
    m = get_model("brusselator")
    p = np.array([[1.0, 1.2], [1.0, 3.0]])
    res = simulate(m, p, np.tile([1.2, 1.3], (2, 1)), TritonSolver(device="cpu", rtol=1e-5, atol=1e-8, t_span=(0, 30),
                                                                   lyapunov=False))
    assert list(res.regime) == ["fixed_point", "oscillatory"]
    np.testing.assert_allclose(res.raw.u_final[0], [1.0, 1.2], atol=1e-4)


@pytest.mark.parametrize("kw,field", [
    (dict(method="rk5"), "method"), (dict(dtype="float16"), "dtype"), (dict(t_span=(1.0, 0.0)), "t_span"),
    (dict(t_span=(0.0, float("inf"))), "t_span"), (dict(rtol=1e-9), "rtol"), (dict(rtol=0.5), "rtol"),
    (dict(atol=-1.0), "atol"), (dict(method="rk4"), "n_steps"), (dict(params=np.ones((2, 2))), "params"),
    (dict(params=np.full((2, 3), np.nan)), "params"), (dict(u0=np.array([[1.0, np.inf, 0.0]] * 2)), "initial_state"),
    (dict(block=48), "block"), (dict(save_every=2), "n_save"), (dict(twin_separation=0.5), "twin_separation")])
def test_bad_input_names_the_field(kw, field):
    m = get_model("lorenz")
    args = dict(params=np.tile(m.default_params, (2, 1)), u0=np.ones((2, 3)), t_span=(0.0, 1.0), device="cpu",
                dtype="float32")
    args.update(kw)
    with pytest.raises(OdeInputError) as err:
        solve_ode(m, args.pop("params"), args.pop("u0"), args.pop("t_span"), **args)
    assert err.value.field == field and str(err.value).startswith(field)


def test_engine_bad_input_names_the_field():
    m = get_model("lorenz")
    p, u = m.default_params[None], m.default_state[None]
    with pytest.raises(InputError, match="solver.rtol"):   # below FP32 resolution
        simulate(m, p, u, TritonSolver(device="cpu", dtype="float32", rtol=1e-9))
    with pytest.raises(InputError, match="t_eval"):
        simulate(m, p, u, TritonSolver(device="cpu", t_span=(0, 1)), t_eval=np.array([1.5]))
    with pytest.raises(UnknownName, match="model"):
        simulate("no_such_model", p, u, TritonSolver(device="cpu"))
    with pytest.raises(InputError, match="params.nope"):
        m.param_vector({"nope": 1.0})
    with pytest.raises(ValueError, match="t_span"):
        TritonSolver(t_span=(1.0, 0.0))
