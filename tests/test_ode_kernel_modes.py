"""Generated ODE kernels, newer modes, on the CPU (TRITON_INTERPRET=1): dense output at given times,
Poincaré sections with return-time statistics, and the stiff Rosenbrock23 solver.

References are independent of the kernels: closed forms (harmonic oscillator, u' = u^2, a linear
system through scipy's expm), scipy solve_ivp (DOP853 / Radau at rtol 1e-10..1e-12, dense output
and `events`), scipy's CubicHermiteSpline through a float64 numpy RK4, and Robertson's conserved
y1 + y2 + y3. Every buffer the kernel writes starts NaN, so an unwritten element fails; slots that
must stay unwritten are asserted NaN. Horizons are short: the interpreter costs ~50 ms per step.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.interpolate import CubicHermiteSpline
from scipy.linalg import expm

from actors.sweep.models import get_model, register_model
from kernels.ode import codegen
from kernels.ode.tableaus import DOPRI5, ROSENBROCK23, TSIT5
from kernels.ode.triton_solvers import OdeInputError, Section, solve_ode

pytestmark = pytest.mark.triton_interpret  # CUDA machines run the compiled twins in test_gpu_ode_kernels.py

HARMONIC = register_model({
    "name": "harmonic_kernel_test", "states": ["x", "y"], "params": {"w": 1.0}, "initial_state": {"x": 1.0, "y": 0.0},
    "equations": {"x": "y", "y": "-w**2*x"}, "time_span": [0.0, 10.0]})
SQUARE = register_model({
    "name": "square_modes_test", "states": ["u"], "params": {"k": 1.0}, "initial_state": {"u": 1.0},
    "equations": {"u": "k*u**2"}, "time_span": [0.0, 2.0]})
CPU = dict(device="cpu", block=16)


def _harmonic(w: np.ndarray, t: np.ndarray) -> np.ndarray:
    """x = cos(w t), y = -w sin(w t): [len(w), len(t), 2]."""
    wt = w[:, None] * t[None, :]
    return np.stack([np.cos(wt), -w[:, None] * np.sin(wt)], axis=-1)


# ---- tableaus -----------------------------------------------------------------------------------
@pytest.mark.parametrize("tab", [TSIT5, DOPRI5])
def test_dense_polynomials_are_consistent_with_the_step(tab):
    """b_j(1) are the step's weights (the FSAL stage's is 0) and sum_j b_j(theta) = theta."""
    D = np.array(tab.dense)
    np.testing.assert_allclose(D.sum(axis=1), np.array(tab.b + (0.0,)), atol=1e-13)
    theta = np.linspace(0, 1, 11)
    np.testing.assert_allclose(np.polynomial.polynomial.polyval(theta, D.sum(axis=0)), theta, atol=1e-13)


def test_rosenbrock_source_has_the_jacobian_and_the_key_follows_the_modes():
    m = get_model("robertson")
    s = codegen.system_from_model(m)
    keys = {codegen.KernelSpec(s, "rosenbrock23", "float64").key,
            codegen.KernelSpec(s, "rosenbrock23", "float64", interp=True).key,
            codegen.KernelSpec(s, "rosenbrock23", "float64", section=(0, 1)).key,
            codegen.KernelSpec(s, "rosenbrock23", "float64", section=(0, -1)).key}
    assert len(keys) == 4
    src = codegen.kernel_source(codegen.KernelSpec(s, "rosenbrock23", "float64", interp=True, section=(1, 0)))
    compile(src, "<generated>", "exec")
    assert "kW2_2 =" in src and "ksw0_2 =" in src and "kip2 =" in src  # W entries, pivot swaps, inverse pivots
    assert ROSENBROCK23.error_order == 2


# ---- dense output at given times ----------------------------------------------------------------
@pytest.mark.parametrize("method", ["tsit5", "dopri5"])
def test_interp_matches_the_harmonic_closed_form(method):
    """Shared t_eval, denser than the steps, both ends included: error at the solver's tolerance."""
    w = np.array([0.5, 1.0, 2.0])
    t_eval = np.linspace(0.0, 4.0, 81)
    rtol = 1e-6
    r = solve_ode(HARMONIC, w[:, None], np.tile([1.0, 0.0], (3, 1)), (0.0, 4.0), method=method, dtype="float64",
                  rtol=rtol, atol=1e-10, t_eval=t_eval, fold=False, **CPU)
    assert np.isfinite(r.ys).all() and r.ys.shape == (3, 81, 2)
    assert (r.n_steps < len(t_eval)).all(), r.n_steps  # several requested times inside one step
    err = np.abs(r.ys - _harmonic(w, t_eval)).max()
    assert err < 30 * rtol, err
    np.testing.assert_array_equal(r.ys[:, 0], np.tile([1.0, 0.0], (3, 1)))  # theta = 0 is the start exactly
    np.testing.assert_allclose(r.ys[:, -1], r.u_final, rtol=1e-12, atol=1e-14)  # theta = 1 is the step's end


def test_interp_per_trajectory_times_match_scipy_dense_output_on_lorenz():
    rng = np.random.default_rng(21)
    m = get_model("lorenz")
    p = np.column_stack([rng.uniform(8, 12, 3), rng.uniform(20, 35, 3), rng.uniform(2, 3, 3)])
    u0 = rng.normal(0, 8, (3, 3)) + [0, 0, 20]
    t_eval = np.sort(rng.uniform(0.0, 0.25, (3, 20)), axis=1)
    r = solve_ode(m, p, u0, (0.0, 0.25), method="tsit5", dtype="float64", rtol=1e-9, atol=1e-9, t_eval=t_eval, **CPU)
    for i in range(3):
        sol = solve_ivp(lambda t, y, i=i: m.rhs_numpy(y, p[i]), (0.0, 0.25), u0[i], method="DOP853", rtol=1e-12,
                        atol=1e-12, dense_output=True)
        np.testing.assert_allclose(r.ys[i], sol.sol(t_eval[i]).T, rtol=2e-7, atol=2e-6)
    np.testing.assert_array_equal(r.t_eval, t_eval)


def test_rk4_interp_is_the_cubic_hermite_through_numpy_rk4():
    """RK4's interpolant: scipy's CubicHermiteSpline through the float64 RK4 states and slopes."""
    rng = np.random.default_rng(22)
    m = get_model("lorenz")
    p = np.tile(m.default_params, (2, 1))
    u0 = rng.normal(0, 5, (2, 3)) + [0, 0, 20]
    steps, t1 = 30, 0.15
    t_eval = np.sort(rng.uniform(0, t1, 25))
    r = solve_ode(m, p, u0, (0.0, t1), method="rk4", dtype="float64", n_steps=steps, t_eval=t_eval, fold=False, **CPU)
    h = t1 / steps
    grid = np.arange(steps + 1) * h
    for i in range(2):
        u, ys = u0[i].copy(), [u0[i].copy()]
        for _ in range(steps):
            k1 = m.rhs_numpy(u, p[i])
            k2 = m.rhs_numpy(u + 0.5 * h * k1, p[i])
            k3 = m.rhs_numpy(u + 0.5 * h * k2, p[i])
            k4 = m.rhs_numpy(u + h * k3, p[i])
            u = u + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            ys.append(u)
        ys = np.array(ys)
        ref = CubicHermiteSpline(grid, ys, m.rhs_numpy(ys, p[i]))(t_eval)
        np.testing.assert_allclose(r.ys[i], ref, rtol=1e-11, atol=1e-11)


def test_interp_stops_at_blow_up_and_leaves_later_times_unwritten():
    """u' = u^2: u = 1/(1/u0 - t); u0 = 1 escapes the bound 1e4 at t ~ 1, u0 = 0.25 stays finite to 2."""
    t_eval = np.array([[0.2, 0.5, 0.9, 1.5, 1.9], [0.0, 0.5, 1.0, 1.5, 2.0]])
    u0 = np.array([[1.0], [0.25]])
    r = solve_ode(SQUARE, np.ones((2, 1)), u0, (0.0, 2.0), method="tsit5", dtype="float64", rtol=1e-8, atol=1e-12,
                  t_eval=t_eval, fold=False, **CPU)
    assert list(r.blowup) == [True, False]
    np.testing.assert_allclose(r.ys[0, :3, 0], 1 / (1 - t_eval[0, :3]), rtol=1e-6)
    assert np.isnan(r.ys[0, 3:]).all()
    np.testing.assert_allclose(r.ys[1, :, 0], 1 / (4 - t_eval[1]), rtol=1e-7)


# ---- Poincaré sections --------------------------------------------------------------------------
@pytest.mark.parametrize("method,direction,t_min,kw", [("tsit5", 1, None, dict(rtol=1e-6, atol=1e-9)),
                                                       ("dopri5", -1, None, dict(rtol=1e-6, atol=1e-9)),
                                                       ("rk4", 0, 1.2, dict(n_steps=200))])
def test_section_crossings_and_period_of_the_harmonic_oscillator(method, direction, t_min, kw):
    """x = cos(w t) crosses 0 upwards at w t = 3pi/2 + 2 pi k, downwards at pi/2 + 2 pi k: period 2 pi / w.
    With t_min, earlier crossings are not counted (nor enter the return times)."""
    w = np.array([1.5, 2.0, 3.0])
    t1, K = 6.5, 6
    r = solve_ode(HARMONIC, w[:, None], np.tile([1.0, 0.0], (3, 1)), (0.0, t1), method=method, dtype="float64",
                  section=Section("x", 0.0, direction, t_min=t_min, max_saved=K), fold=False, **kw, **CPU)
    phase = {1: [1.5 * np.pi], -1: [0.5 * np.pi], 0: [0.5 * np.pi, 1.5 * np.pi]}[direction]
    period = 2 * np.pi / w if direction else np.pi / w
    for i in range(3):
        times = np.sort(np.concatenate([(ph + 2 * np.pi * np.arange(10)) / w[i] for ph in phase]))
        times = times[(times <= t1) & (times >= (t_min or 0.0))]
        assert r.n_crossings[i] == len(times)
        np.testing.assert_allclose(r.crossing_t[i, : len(times)], times[:K], atol=2e-5)
        assert np.isnan(r.crossing_t[i, len(times):]).all() and np.isnan(r.crossings[i, len(times):]).all()
        ref_states = _harmonic(w[i: i + 1], times[:K])[0]
        np.testing.assert_allclose(r.crossings[i, : len(times)], ref_states, atol=2e-5)
        if len(times) >= 2:
            np.testing.assert_allclose([r.return_time[k][i] for k in ("mean", "min", "max")], period[i], rtol=1e-5)
            assert r.return_time["std"][i] < 1e-5
        else:
            assert np.isnan(r.return_time["mean"][i])


def test_brusselator_limit_cycle_period_matches_scipy_events():
    """On the limit cycle (a = 1, b = 3): crossing times of x = 1 upwards vs solve_ivp events at rtol 1e-10."""
    m = get_model("brusselator")
    p = np.array([[1.0, 3.0]])
    pre = solve_ivp(lambda t, y: m.rhs_numpy(y, p[0]), (0, 60), [1.2, 1.3], method="DOP853", rtol=1e-10, atol=1e-12)
    u0 = pre.y[:, -1][None]  # a point on the cycle

    def event(t, y):
        return y[0] - 1.0

    event.direction = 1
    ref = solve_ivp(lambda t, y: m.rhs_numpy(y, p[0]), (0, 16), u0[0], method="DOP853", rtol=1e-10, atol=1e-12,
                    events=event)
    t_ref, y_ref = ref.t_events[0], ref.y_events[0]
    r = solve_ode(m, p, u0, (0.0, 16.0), method="dopri5", dtype="float64", rtol=1e-7, atol=1e-9,
                  section=Section("x", 1.0, 1, max_saved=4), fold=False, **CPU)
    assert r.n_crossings[0] == len(t_ref) >= 2
    np.testing.assert_allclose(r.crossing_t[0, : len(t_ref)], t_ref, atol=2e-5)
    np.testing.assert_allclose(r.crossings[0, : len(t_ref)], y_ref, atol=2e-5)
    np.testing.assert_allclose(r.return_time["mean"][0], np.diff(t_ref).mean(), rtol=3e-6)


# ---- Rosenbrock23 -------------------------------------------------------------------------------
def _radau(m, u0, p, t1, t_eval=None):
    return solve_ivp(lambda t, y: m.rhs_numpy(y, p), (0.0, t1), u0, method="Radau", rtol=1e-10, atol=1e-14,
                     t_eval=t_eval)


def test_rosenbrock_robertson_matches_radau_and_conserves_mass():
    m = get_model("robertson")
    p, u0 = m.default_params[None], m.default_state[None]
    t_eval = np.array([1e-3, 0.1, 1.0, 4.0])
    rtol = 1e-4
    r = solve_ode(m, p, u0, (0.0, 4.0), method="rosenbrock23", dtype="float64", rtol=rtol, atol=1e-10, t_eval=t_eval,
                  **CPU)
    ref = _radau(m, u0[0], p[0], 4.0, t_eval)
    assert r.finished.all() and not r.blowup.any()
    # global error within a few tolerances of each component's scale (y2 ~ 3.6e-5 is the hard one)
    np.testing.assert_allclose(r.ys[0], ref.y.T, rtol=20 * rtol, atol=1e-9)
    np.testing.assert_allclose(r.u_final[0], ref.y[:, -1], rtol=20 * rtol, atol=1e-9)
    # linear invariants are kept exactly by a Rosenbrock method (c^T J = 0 -> c^T W^-1 = c^T)
    np.testing.assert_allclose(r.u_final.sum(1), 1.0, atol=1e-13)


def test_rosenbrock_van_der_pol_mu_1000_matches_radau_where_tsit5_stalls():
    """mu = 1000: Rosenbrock23 crosses [0, 2] in a few dozen steps; Tsit5, given as many trial steps,
    is stability-bound (h ~ 3 / (mu (x^2 - 1))) and gets nowhere near t = 2."""
    m = get_model("van_der_pol")
    p, u0 = m.default_params[None], m.default_state[None]
    r = solve_ode(m, p, u0, (0.0, 2.0), method="rosenbrock23", dtype="float64", rtol=1e-5, atol=1e-8, **CPU)
    ref = _radau(m, u0[0], p[0], 2.0)
    assert r.finished.all()
    np.testing.assert_allclose(r.u_final[0], ref.y[:, -1], rtol=1e-4, atol=1e-8)
    budget = int(r.n_steps[0] + r.n_rejected[0])
    assert budget < 120
    explicit = solve_ode(m, p, u0, (0.0, 2.0), method="tsit5", dtype="float64", rtol=1e-5, atol=1e-8,
                         max_steps=budget, **CPU)
    assert not explicit.finished.any() and explicit.t_final[0] < 0.2, explicit.t_final  # stopped by max_steps


def test_rosenbrock_stiff_linear_system_matches_expm():
    """u' = A u with eigenvalues -1 .. -1e4 in a random basis (pivoting needed as h grows): u = expm(A t) u0."""
    rng = np.random.default_rng(23)
    Q = rng.normal(size=(4, 4))
    A = Q @ np.diag([-1.0, -10.0, -1e3, -1e4]) @ np.linalg.inv(Q)
    eqs = {f"x{r}": " + ".join(f"({float(A[r, c])!r})*x{c}" for c in range(4)) + " + 0*s" for r in range(4)}
    lin = register_model({"name": "stiff_linear_kernel_test", "states": [f"x{i}" for i in range(4)], "params": {"s": 0.0},
                          "initial_state": {f"x{i}": 1.0 for i in range(4)}, "equations": eqs})
    u0 = np.array([[1.0, -0.5, 0.25, 2.0], [0.3, 0.2, -1.0, 0.5]])
    rtol = 1e-4
    r = solve_ode(lin, np.zeros((2, 1)), u0, (0.0, 1.5), method="rosenbrock23", dtype="float64", rtol=rtol, atol=1e-8,
                  t_eval=np.array([0.5, 1.5]), **CPU)
    assert r.finished.all() and (r.n_steps < 300).all()
    for i in range(2):
        ref = np.stack([expm(A * t) @ u0[i] for t in (0.5, 1.5)])
        np.testing.assert_allclose(r.ys[i], ref, atol=20 * rtol * np.abs(ref).max())


# ---- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw,field", [
    (dict(t_eval=np.array([0.5, 0.2])), "t_eval"), (dict(t_eval=np.array([0.5, 2.0])), "t_eval"),
    (dict(t_eval=np.ones((3, 2))), "t_eval"), (dict(t_eval=np.array([np.nan])), "t_eval"),
    (dict(section=Section("nope")), "section.state"), (dict(section=Section(5)), "section.state"),
    (dict(section=Section(0, direction=2)), "section.direction"),
    (dict(section=Section(0, level=float("inf"))), "section.level"),
    (dict(section=Section(0, t_min=1.0)), "section.t_min"), (dict(section=Section(0, max_saved=-1)), "section.max_saved"),
    (dict(method="rosenbrock2"), "method")])
def test_bad_mode_input_names_the_field(kw, field):
    m = get_model("lorenz")
    args = dict(method="tsit5", dtype="float64", device="cpu")
    args.update(kw)
    with pytest.raises(OdeInputError) as err:
        solve_ode(m, np.tile(m.default_params, (2, 1)), np.ones((2, 3)), (0.0, 1.0), **args)
    assert err.value.field == field and str(err.value).startswith(field)


# ---- through the sweep engine's config --------------------------------------------------------------
def test_engine_triton_config_rosenbrock_save_and_poincare():
    """solver: {backend: triton, kernel: rosenbrock23, save: {times}, poincare: {...}} vs the scipy backend."""
    from pydantic import ValidationError

    from actors.common.errors import InputError
    from actors.sweep.config import ScipySolver, TritonSolver, make_solver
    from actors.sweep.engine import simulate

    m = get_model("brusselator")
    p = np.array([[1.0, 3.0], [1.0, 2.5]])
    u0 = np.array([[1.2, 1.3], [0.5, 3.0]])
    common = dict(t_span=(0.0, 4.0), save={"times": [0.5, 2.0, 4.0]})
    tri = simulate(m, p, u0, TritonSolver(device="cpu", kernel="rosenbrock23", rtol=1e-4, atol=1e-8,
                                          poincare={"state": "x", "level": 1.0, "max_saved": 2}, **common))
    ref = simulate(m, p, u0, ScipySolver(method="Radau", rtol=1e-10, atol=1e-12, lyapunov=False, **common))
    np.testing.assert_allclose(tri.raw.ys, ref.raw.ys, rtol=2e-3, atol=2e-3)
    np.testing.assert_array_equal(tri.t_eval, [0.5, 2.0, 4.0])
    assert np.isfinite(tri.raw.lyapunov_max).all()  # the twin runs through the Rosenbrock step too
    cols = tri.table()
    def up_through_1(t, y):
        return y[0] - 1.0

    up_through_1.direction = 1
    n_ref = [len(solve_ivp(lambda t, y, i=i: m.rhs_numpy(y, p[i]), (0.0, 4.0), u0[i], method="Radau", rtol=1e-10,
                           atol=1e-12, events=up_through_1).t_events[0]) for i in range(2)]
    np.testing.assert_array_equal(cols["section_crossings"], n_ref)
    assert {"return_time_mean", "return_time_std", "return_time_min", "return_time_max"} <= set(cols)
    with pytest.raises(ValidationError, match="poincare is an option of backend triton or auto, not scipy"):
        make_solver(backend="scipy", poincare={"state": "x"}, **common)   # sections: generated kernels only
    with pytest.raises(InputError, match="solver.poincare.state"):
        simulate(m, p, u0, TritonSolver(device="cpu", poincare={"state": "z"}, **common))
