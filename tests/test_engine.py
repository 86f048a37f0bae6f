"""Sweep engine: both backends against closed forms, against each other, and the regime rule."""
from __future__ import annotations

import numpy as np
import pytest

from actors.common.errors import InputError
from actors.sweep.config import ScipySolver, TorchSolver, make_solver
from actors.sweep.engine import simulate
from actors.sweep.models import get_model, register_model

SPIRAL = register_model({
    "name": "spiral_test", "states": ["x", "y"], "params": {"a": -0.3, "w": 1.0},
    "initial_state": {"x": 1.0, "y": 0.0}, "equations": {"x": "a*x - w*y", "y": "w*x + a*y"},
    "time_span": [0.0, 40.0]})
SQUARE = register_model({
    "name": "square_test", "states": ["u"], "params": {"k": 1.0}, "initial_state": {"u": 1.0},
    "equations": {"u": "k*u**2"}, "time_span": [0.0, 2.0]})

BACKENDS = ["torch", "scipy"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_spiral_closed_form_and_lyapunov(backend):
    """x + iy = e^{(a + i w) t}: saved points match the closed form, λ_max = a exactly."""
    a = np.array([-0.3, 0.05, 0.2])
    params = np.column_stack([a, np.ones(3)])
    u0 = np.tile([1.0, 0.0], (3, 1))
    t_eval = np.linspace(0, 10, 41)
    res = simulate(SPIRAL, params, u0, make_solver(backend=backend, rtol=1e-10, atol=1e-12, t_span=(0, 10),
                                                    window=0.5, blowup_bound=1e6), t_eval=t_eval)
    z = np.exp((a[:, None] + 1j) * t_eval[None, :])
    np.testing.assert_allclose(res.raw.ys[..., 0], z.real, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(res.raw.ys[..., 1], z.imag, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(res.raw.lyapunov_max, a, atol=2e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_finite_time_blowup_time(backend):
    """u' = u^2, u(0) = u0 reaches the bound B at t = 1/u0 - 1/B."""
    u0 = np.array([[1.0], [2.0], [0.25]])
    res = simulate(SQUARE, np.ones((3, 1)), u0, make_solver(backend=backend, rtol=1e-10, atol=1e-12,
                                                             blowup_bound=1e4, t_span=(0, 2)))
    assert list(res.regime[:2]) == ["blow_up", "blow_up"] and res.regime[2] != "blow_up"
    np.testing.assert_allclose(res.raw.t_blowup[:2], 1 / u0[:2, 0] - 1e-4, rtol=1e-6)
    assert not res.raw.blowup[2]
    np.testing.assert_allclose(res.raw.u_final[2, 0], 1 / (1 / 0.25 - 2.0), rtol=1e-8)


@pytest.mark.parametrize("backend", BACKENDS)
def test_brusselator_hopf_at_b_equals_one_plus_a_squared(backend):
    """Fixed point (a, b/a) is stable for b < 1 + a^2 and a limit cycle follows beyond it."""
    a = 1.0
    b = np.array([1.6, 1.9, 2.1, 2.6])
    m = get_model("brusselator")
    res = simulate(m, np.column_stack([np.full(4, a), b]), np.tile([1.2, 1.3], (4, 1)),
                   make_solver(backend=backend, rtol=1e-8, atol=1e-10, t_span=(0, 300)))
    assert list(res.regime) == ["fixed_point", "fixed_point", "limit_cycle", "limit_cycle"]
    np.testing.assert_allclose(res.raw.u_final[:2], np.column_stack([np.full(2, a), b[:2] / a]), atol=1e-5)


def test_gaslit_reference_points_both_backends():
    """The five documented GASLIT-AF points show their documented attractors in both backends."""
    m = get_model("gaslit_af")
    pts = m.spec.reference_points
    params = np.stack([m.param_vector(p.params) for p in pts])
    u0 = np.stack([m.state_vector(p.initial_state) for p in pts])
    expect = [p.expect for p in pts]
    assert sorted(expect) == ["blow_up", "chaotic", "collapsed", "healthy", "limit_cycle"]
    torch_res = simulate(m, params, u0, TorchSolver(rtol=1e-6, atol=1e-9))
    scipy_res = simulate(m, params, u0, ScipySolver(rtol=1e-8, atol=1e-10))
    assert list(torch_res.attractor) == expect
    assert list(scipy_res.attractor) == expect
    chaotic = expect.index("chaotic")
    assert torch_res.raw.lyapunov_max[chaotic] > 0.05 and scipy_res.raw.lyapunov_max[chaotic] > 0.05
    cycle = expect.index("limit_cycle")
    assert abs(torch_res.raw.lyapunov_max[cycle]) < 0.01 and abs(scipy_res.raw.lyapunov_max[cycle]) < 0.01
    # the two fixed points are distinct states of the same parameters (bistability)
    h, c = expect.index("healthy"), expect.index("collapsed")
    assert params[h, m.param_names.index("gamma")] == params[c, m.param_names.index("gamma")]
    assert abs(torch_res.raw.u_final[h, 2] - torch_res.raw.u_final[c, 2]) > 0.3  # functional capacity
    np.testing.assert_allclose(torch_res.raw.u_final[[h, c]], scipy_res.raw.u_final[[h, c]], rtol=1e-4, atol=1e-5)


def _random_gaslit(n: int, seed: int):
    m = get_model("gaslit_af")
    rng = np.random.default_rng(seed)
    params = np.tile(m.default_params, (n, 1))
    params[:, m.param_names.index("gamma")] = rng.uniform(0, 1, n)
    u0 = np.tile(m.default_state, (n, 1))
    u0[:, 3] = rng.uniform(0, 10, n)
    return m, params, u0


def test_torch_matches_scipy_on_200_random_points_short_horizon():
    """200 random (gamma, Lambda0) points over t in [0, 5] at rtol 1e-10: the same escapes, final
    states to 1e-6 and blow-up times to 1e-6 against scipy DOP853."""
    m, params, u0 = _random_gaslit(200, seed=7)
    short = dict(rtol=1e-10, atol=1e-12, t_span=(0.0, 5.0), lyapunov=False)
    a = simulate(m, params, u0, TorchSolver(**short))
    b = simulate(m, params, u0, ScipySolver(method="DOP853", **short))
    assert (a.raw.blowup == b.raw.blowup).all()
    ok = ~b.raw.blowup
    assert 0 < ok.sum() < 200
    np.testing.assert_allclose(a.raw.u_final[ok], b.raw.u_final[ok], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(a.raw.t_blowup[~ok], b.raw.t_blowup[~ok], rtol=1e-6)


def test_torch_regimes_match_scipy_over_full_horizon():
    """24 random points over the model's whole horizon (t in [0, 400]). Every non-chaotic torch
    label but the cycles past the first three is checked against scipy DOP853 at rtol 1e-9: the same
    blow-ups and escape times, the same fixed points to 1e-5 (and the same named attractor), the same
    cycles with envelopes within 2e-2 (extrema are sampled at accepted steps, so they carry the
    step-placement error). Kept short for CI on two cores; the GPU test checks more.
    Why 24 points, seed 4: the batched torch solve costs its slowest lane's steps (a fast cycle), not
    its lanes; seed 7's 48 points had a 38k-step lane (70 s), seed 4's 24 points take at most 16.5k
    steps (31 s) and still hold 6 fixed points, 6 cycles and 8 blow-ups. Its worst errors were 0.13 of
    the envelope tolerance, 0.002 of the blow-up time's and 1e-4 of the fixed points' (2026-12-03)."""
    m, params, u0 = _random_gaslit(24, seed=4)
    # settle_amplitude=0: the settling-focus clause needs lambda_max, which scipy is not asked for here
    # (tests/test_sweep_reference.py checks that clause against DOP853 with its exponent)
    full = simulate(m, params, u0, TorchSolver(rtol=1e-7, atol=1e-9, settle_amplitude=0.0))
    counts = {r: int((full.regime == r).sum()) for r in ("fixed_point", "limit_cycle", "blow_up")}
    assert all(c >= 4 for c in counts.values()), counts
    cycles = np.flatnonzero(full.regime == "limit_cycle")[:3]   # scipy takes 1.5-10 s per cycle here
    pick = np.sort(np.concatenate([np.flatnonzero(np.isin(full.regime, ["fixed_point", "blow_up"])), cycles]))
    ref = simulate(m, params[pick], u0[pick], ScipySolver(rtol=1e-9, atol=1e-11, lyapunov=False))
    mine = full.regime[pick]
    theirs = np.where(ref.regime == "oscillatory", "limit_cycle", ref.regime)  # no Lyapunov asked of scipy
    assert list(mine) == list(theirs)
    fp, bu, lc = mine == "fixed_point", mine == "blow_up", mine == "limit_cycle"
    np.testing.assert_allclose(full.raw.u_final[pick][fp], ref.raw.u_final[fp], rtol=1e-5, atol=1e-6)
    assert (full.attractor[pick][fp] == ref.attractor[fp]).all()
    np.testing.assert_allclose(full.raw.t_blowup[pick][bu], ref.raw.t_blowup[bu], rtol=1e-4)
    np.testing.assert_allclose(full.raw.u_max[pick][lc], ref.raw.u_max[lc], rtol=2e-2, atol=2e-2)
    np.testing.assert_allclose(full.raw.u_min[pick][lc], ref.raw.u_min[lc], rtol=2e-2, atol=2e-2)


def test_bad_inputs_raise_named_errors():
    m = get_model("lorenz")
    with pytest.raises(InputError, match="params: contains non-finite"):
        simulate(m, np.array([[np.nan, 28, 8 / 3]]), m.default_state[None])
    with pytest.raises(InputError, match=r"initial_state: shape \(1, 2\)"):
        simulate(m, m.default_params[None], np.zeros((1, 2)))
    with pytest.raises(ValueError, match="t_span must be finite and increasing"):
        TorchSolver(t_span=(5.0, 1.0))
    with pytest.raises(ValueError, match="rtol"):
        ScipySolver(rtol=0.5)
    with pytest.raises(InputError, match="t_eval"):
        simulate(m, m.default_params[None], m.default_state[None], TorchSolver(t_span=(0, 1)),
                 t_eval=np.array([0.5, 2.0]))


# ---- bounded work (issue 11, finding 1) -----------------------------------------------------------------
NAN_RHS = register_model({"name": "nan_rhs_engine_test", "states": ["u"], "params": {"k": 1.0},
                          "initial_state": {"u": -1.0}, "equations": {"u": "sqrt(u) - k"}})
ALL_BACKENDS = ["torch", "scipy", "triton"]   # triton: compiled on CUDA, interpreted on a CPU


def _solver(backend: str, **kw):
    if backend != "scipy":
        kw = {"max_steps": 2000, "device": "auto" if backend == "triton" else "cpu", **kw}
    return make_solver(backend=backend, **kw)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_non_finite_step_size_or_rhs_stops_a_trajectory_at_once(backend):
    """The issue's request (gaslit_af, gamma = 1e308): the starting step size is NaN (its estimate
    overflows), and NaN < h_min is false, so the torch loop rejected steps to max_steps (2,000,000:
    about an hour). sqrt(u) at u < 0: the right-hand side itself is NaN. Every backend now stops such
    a trajectory at t0 as a blow-up marked `stalled`, taking no accepted step."""
    g = get_model("gaslit_af")
    for model, params, u0 in ((g, g.param_vector({"gamma": 1e308})[None], g.default_state[None]),
                              (NAN_RHS, np.array([[1.0]]), np.array([[-1.0]]))):
        res = simulate(model, params, u0, _solver(backend, t_span=(0.0, 1.0)))
        assert list(res.regime) == ["blow_up"] and res.raw.blowup.all() and res.raw.stalled.all(), model.name
        assert res.raw.t_blowup[0] == 0.0 and res.raw.n_steps[0] == 0
        assert res.raw.n_rejected[0] <= (60 if backend == "triton" else 1), res.raw.n_rejected


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_a_state_reaching_a_nan_region_stalls_where_the_closed_form_says(backend):
    """u' = sqrt(u) - 1 from u0 = s0^2 reaches u = 0 (beyond it sqrt is NaN) at
    t* = -2 s0 - 2 ln(1 - s0); there the step size collapses and every backend reports a stall."""
    s0 = np.sqrt(0.2)
    t_star = -2 * s0 - 2 * np.log(1 - s0)
    res = simulate(NAN_RHS, np.array([[1.0]]), np.array([[0.2]]),
                   _solver(backend, t_span=(0.0, 3.0), rtol=1e-8, atol=1e-10, max_steps=20_000)
                   if backend != "scipy" else _solver(backend, t_span=(0.0, 3.0), rtol=1e-8, atol=1e-10))
    assert res.raw.blowup[0] and res.raw.stalled[0] and res.regime[0] == "blow_up"
    np.testing.assert_allclose(res.raw.t_blowup[0], t_star, atol=1e-3)


def test_escaping_past_the_bound_is_not_a_stall():
    """u' = u^2 escapes past the bound: a blow-up, `stalled` false (both CPU backends)."""
    for backend in BACKENDS:
        res = simulate(SQUARE, np.ones((1, 1)), np.array([[1.0]]), make_solver(backend=backend, t_span=(0, 2)))
        assert res.raw.blowup[0] and not res.raw.stalled[0], backend


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_budget_stops_a_long_integration(backend):
    """Lorenz over 10^6 time units is hours of work; under a 0.5 s budget the engine stops with
    BudgetExceeded naming the budget's setting, and a cancelled budget stops it with Cancelled."""
    import threading
    import time

    from actors.common.budget import Budget, BudgetExceeded, Cancelled, scope

    m = get_model("lorenz")
    solver = make_solver(backend=backend, t_span=(0.0, 1e6), **({"device": "cpu"} if backend == "torch" else {}))
    t0 = time.perf_counter()
    with pytest.raises(BudgetExceeded) as err, scope(Budget(0.5, setting="chunk_timeout_s")):
        simulate(m, np.tile(m.default_params, (4, 1)), np.tile(m.default_state, (4, 1)), solver)
    assert time.perf_counter() - t0 < 3.0
    assert err.value.field == "chunk_timeout_s" and err.value.status_code == 504
    budget = Budget(None)
    threading.Timer(0.3, budget.cancel).start()
    t0 = time.perf_counter()
    with pytest.raises(Cancelled), scope(budget):
        simulate(m, m.default_params[None], m.default_state[None], solver)
    assert time.perf_counter() - t0 < 3.0


# ---- models as data (issue 11, finding 5) ---------------------------------------------------------------
def test_an_inline_model_simulates_without_registration():
    """simulate() takes a ModelSpec: the linear spiral inline, against its closed form."""
    from actors.sweep.models import ModelSpec, model_names

    spec = ModelSpec.model_validate({"name": "spiral_inline_engine_test", "states": ["x", "y"],
                                     "params": {"a": -0.3, "w": 1.0}, "initial_state": {"x": 1.0, "y": 0.0},
                                     "equations": {"x": "a*x - w*y", "y": "w*x + a*y"}})
    res = simulate(spec, np.array([[-0.3, 1.0]]), np.array([[1.0, 0.0]]),
                   TorchSolver(t_span=(0, 5), rtol=1e-10, atol=1e-12, device="cpu"))
    np.testing.assert_allclose(res.raw.u_final[0], np.exp(-1.5) * np.array([np.cos(5), np.sin(5)]), atol=1e-8)
    assert "spiral_inline_engine_test" not in model_names()


def test_check_sweep_names_every_bad_field_before_any_work():
    """What jobs.sweep checks before Ray starts: the model, params, initial_state, axes, map_axes."""
    from actors.sweep.config import SweepSpec
    from actors.sweep.engine import check_sweep

    base = {"model": "lorenz", "axes": [{"name": "rho", "lo": 1, "hi": 30, "n": 3}]}
    assert check_sweep(SweepSpec.model_validate(base)).name == "lorenz"
    for patch, field in (({"model": "x"}, "model"), ({"params": {"rh": 1.0}}, "params.rh"),
                         ({"initial_state": {"w": 1.0}}, "initial_state.w"),
                         ({"axes": [{"name": "r", "lo": 0, "hi": 1, "n": 2}]}, "axes.r"),
                         ({"map_axes": ["rho", "sigma"]}, "map_axes")):
        with pytest.raises(InputError) as err:
            check_sweep(SweepSpec.model_validate({**base, **patch}))
        assert err.value.field == field, (patch, err.value)
    with pytest.raises(InputError, match=r"model: unknown model 'x' \(allowed: .*lorenz"):
        check_sweep(SweepSpec.model_validate({**base, "model": "x"}))
