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
    """48 random points over the model's whole horizon (t in [0, 400]). Every non-chaotic torch
    label is checked against scipy DOP853 at rtol 1e-9: the same blow-ups and escape times, the same
    fixed points to 1e-5 (and the same named attractor), the same cycles with envelopes within 2e-2
    (extrema are sampled at accepted steps, so they carry the step-placement error). The costly
    scipy cycles are limited to four to keep CI on two cores short; the GPU test checks more."""
    m, params, u0 = _random_gaslit(48, seed=7)
    # settle_amplitude=0: the settling-focus clause needs lambda_max, which scipy is not asked for here
    # (tests/test_sweep_reference.py checks that clause against DOP853 with its exponent)
    full = simulate(m, params, u0, TorchSolver(rtol=1e-7, atol=1e-9, settle_amplitude=0.0))
    counts = {r: int((full.regime == r).sum()) for r in ("fixed_point", "limit_cycle", "blow_up")}
    assert all(c >= 4 for c in counts.values()), counts
    cycles = np.flatnonzero(full.regime == "limit_cycle")[:4]
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
