"""Lyapunov spectra (QR method), the tangent-dynamics λ_max and the spectrum-based regime rule.

References are independent of the code under test: published exponents (Lorenz λ1 = 0.9056,
Rössler λ1 = 0.0714), the exact sum -(σ + 1 + β) from the trace of the Lorenz Jacobian, closed
forms of decoupled Hopf normal forms, a scipy DOP853 + LAPACK twin, and return times from
scipy's event location. Horizons are kept short; accuracy comes from averaging over a batch.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.integrate
import sympy as sp

from actors.common.errors import InputError
from actors.sweep.jacobian import derivatives
from actors.sweep.lyapunov import (
    classify_trajectories,
    largest_lyapunov,
    lyapunov_spectrum,
    lyapunov_spectrum_reference,
)
from actors.sweep.models import get_model, register_model

# two decoupled Hopf normal forms: each circle r = sqrt(mu) has exponents 0 and -2 mu, so the
# spectrum is (0, 0, -2, -2); with w2/w1 irrational the orbit fills a torus (quasi-periodic)
TORUS = register_model({
    "name": "torus_lyap_test", "states": ["x1", "y1", "x2", "y2"], "params": {"mu": 1.0, "w1": 1.0, "w2": 1.5},
    "initial_state": {"x1": 0.5, "y1": 0.0, "x2": 0.3, "y2": 0.1},
    "equations": {"x1": "x1*(mu - x1**2 - y1**2) - w1*y1", "y1": "y1*(mu - x1**2 - y1**2) + w1*x1",
                  "x2": "x2*(mu - x2**2 - y2**2) - w2*y2", "y2": "y2*(mu - x2**2 - y2**2) + w2*x2"}})
SQUARE = register_model({"name": "square_lyap_test", "states": ["u"], "params": {"k": 1.0},
                         "initial_state": {"u": 1.0}, "equations": {"u": "k*u**2"}})


def _random_states(rng, B, center, spread):
    return rng.normal(0.0, spread, (B, len(center))) + np.asarray(center)


def test_symbolic_jacobian_matches_finite_differences_and_lowerings_agree():
    import torch

    for name in ("lorenz", "rossler", "brusselator", "gaslit_af"):
        model = get_model(name)
        der = derivatives(model)
        rng = np.random.default_rng(1)
        u = model.default_state + rng.normal(0, 0.3, (5, len(model.state_names)))
        p = np.tile(model.default_params, (5, 1))
        J = der.jac_numpy(u, p)
        eps = 1e-6  # central differences of the rhs: an independent O(eps^2) check
        fd = np.stack([(model.rhs_numpy(u + eps * e, p) - model.rhs_numpy(u - eps * e, p)) / (2 * eps)
                       for e in np.eye(u.shape[1])], axis=-1)
        np.testing.assert_allclose(J, fd, rtol=1e-6, atol=1e-6)
        Jt = der.jac_torch(torch.as_tensor(u), torch.as_tensor(p)).numpy()
        np.testing.assert_allclose(Jt, J, rtol=1e-14, atol=1e-14)
        F, Jf = der.tangent_field_torch(torch.as_tensor(p))(torch.as_tensor(u))
        np.testing.assert_allclose(Jf.numpy(), J, rtol=1e-14, atol=1e-14)
        np.testing.assert_allclose(F.numpy(), model.rhs_numpy(u, p), rtol=1e-14, atol=1e-14)
        j = model.param_names.index(model.param_names[0])
        dp = np.zeros_like(p)
        dp[:, j] = eps
        fdp = (model.rhs_numpy(u, p + dp) - model.rhs_numpy(u, p - dp)) / (2 * eps)
        np.testing.assert_allclose(der.dfdp_numpy(u, p)[..., j], fdp, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(der.dfdp_column_numpy(u, p, j), fdp, rtol=1e-6, atol=1e-6)
    sigma, beta = sp.symbols("sigma beta")
    assert sp.simplify(derivatives("lorenz").trace - (-sigma - 1 - beta)) == 0


def test_lorenz_spectrum_published_lambda1_and_exact_sum():
    """λ1 = 0.906 ± 0.01 (batch mean); every row's sum = -(σ+1+β) = -13.667 ± 1e-3; λ2 ≈ 0; chaotic."""
    model = get_model("lorenz")
    B = 512  # per-row λ1 spreads ±0.04 over t = 40: the batch mean is good to ±0.002 (1σ)
    u0 = _random_states(np.random.default_rng(0), B, [0.0, 0.0, 25.0], 5.0)
    res = lyapunov_spectrum(model, np.tile(model.default_params, (B, 1)), u0, t_transient=10.0,
                            t_measure=40.0, dt=0.01, section_state=None)
    lam = res.exponents
    assert lam.shape == (B, 3) and not res.blowup.any()
    assert abs(lam[:, 0].mean() - 0.9056) < 0.01, lam[:, 0].mean()
    sigma, rho, beta = model.default_params
    np.testing.assert_allclose(lam.sum(axis=1), -(sigma + 1 + beta), atol=1e-3)
    assert abs(lam[:, 1].mean()) < 0.01
    assert abs(lam[:, 2].mean() - (-14.572)) < 0.02  # published: -14.5723
    labels = classify_trajectories(res)["regime"]
    assert set(labels) == {"chaotic"}


def test_rossler_largest_exponent_by_tangent_dynamics():
    """λ1 ∈ (0.06, 0.08) for a = b = 0.2, c = 5.7 (published 0.0714), one tangent vector per row."""
    model = get_model("rossler")
    B = 512  # a CPU step costs about the same for 128 or 512 rows (op dispatch, not arithmetic)
    u0 = _random_states(np.random.default_rng(1), B, [0.0, 0.0, 0.0], 1.0)
    # the tangent vector aligns at rate λ1 - λ2 = 0.07: a transient of 30 left a -0.003 bias, 100 does not
    lam1 = largest_lyapunov(model, np.tile(model.default_params, (B, 1)), u0, t_transient=100.0, t_measure=100.0,
                            dt=0.05, section_state=None)
    assert lam1.shape == (B,) and np.isfinite(lam1).all()
    assert 0.06 < lam1.mean() < 0.08, lam1.mean()


def test_torch_spectrum_matches_scipy_reference_on_one_lorenz_trajectory():
    """RK4 + batched Gram-Schmidt (torch) vs DOP853 + LAPACK QR (scipy), same finite-time window."""
    model = get_model("lorenz")
    u0 = np.array([1.0, 1.0, 20.0])
    ref = lyapunov_spectrum_reference(model, model.default_params, u0, t_transient=0.5, t_measure=3.0,
                                      renorm_interval=0.05)
    ours = lyapunov_spectrum(model, model.default_params[None], u0[None], t_transient=0.5, t_measure=3.0,
                             dt=0.005, renorm_every=10, section_state=None).exponents[0]
    np.testing.assert_allclose(ours, ref, atol=2e-4)
    assert abs(ref.sum() + 13.6667) < 1e-4  # the reference nails the trace too


def test_torus_and_cycles_regimes_and_periods():
    """Decoupled Hopf oscillators: spectrum (0, 0, -2, -2); w2/w1 irrational -> quasi_periodic,
    w2 = 2 w1 -> limit cycle of period 2π, w2 = 2/3 w1 -> period-3 section, period 6π."""
    params = np.array([[1.0, 1.0, np.sqrt(2.0)], [1.0, 1.0, 2.0], [1.0, 1.0, 2.0 / 3.0]])
    res = lyapunov_spectrum(TORUS, params, np.tile(TORUS.default_state, (3, 1)), t_transient=10.0,
                            t_measure=50.0, dt=0.05)
    np.testing.assert_allclose(res.exponents, np.tile([0.0, 0.0, -2.0, -2.0], (3, 1)), atol=2e-3)
    out = classify_trajectories(res)
    assert list(out["regime"]) == ["quasi_periodic", "limit_cycle", "limit_cycle"]
    np.testing.assert_allclose(out["period"][1:], [2 * np.pi, 6 * np.pi], rtol=1e-6)
    assert list(out["section_order"]) == [0, 1, 3]


def test_brusselator_fixed_point_and_cycle_period_against_scipy_events():
    model = get_model("brusselator")
    params = np.array([[1.0, 1.5], [1.0, 3.0]])  # Hopf at b = 2: fixed point, then a limit cycle
    res = lyapunov_spectrum(model, params, np.tile([1.2, 1.3], (2, 1)), t_transient=60.0, t_measure=60.0, dt=0.05)
    out = classify_trajectories(res)
    assert list(out["regime"]) == ["fixed_point", "limit_cycle"]
    # fixed point (a, b/a): eigenvalues -1/4 ± i sqrt(15)/4, so both exponents -> -1/4 (the finite-time
    # split oscillates with the rotation, O(1/T)); their sum is the trace b - 1 - a^2 = -1/2 exactly
    np.testing.assert_allclose(res.exponents[0], [-0.25, -0.25], atol=0.03)
    np.testing.assert_allclose(res.exponents[0].sum(), -0.5, atol=1e-6)
    assert abs(res.exponents[1, 0]) < 0.01 and res.exponents[1, 1] < -0.5
    # the cycle's period from scipy's event location on the same section (x = level, upward)

    def section(t, y):
        return y[0] - res.section_level[1]

    section.direction = 1
    sol = scipy.integrate.solve_ivp(lambda t, u: model.rhs_numpy(u, params[1]), (0, 50), [1.2, 1.3],
                                    method="DOP853", rtol=1e-11, atol=1e-11, events=section, dense_output=True)
    period_ref = np.diff(sol.t_events[0])[-3:].mean()
    np.testing.assert_allclose(out["period"][1], period_ref, rtol=1e-5)
    # over whole returns: λ1 = 0 (the flow direction) and λ2 = the Floquet exponent, which then is
    # the period average of trace J = 2xy - (b + 1) - x^2 along the cycle (scipy's dense output)
    t_a, t_b = sol.t_events[0][-2:]
    trace = scipy.integrate.quad(lambda t: (lambda x, y: 2 * x * y - 4.0 - x * x)(*sol.sol(t)), t_a, t_b,
                                 limit=200, epsabs=1e-12)[0] / (t_b - t_a)
    assert abs(res.exponents_section[1, 0]) < 1e-4  # the raw window value carries the flow-speed term
    np.testing.assert_allclose(res.exponents_section[1, 1], trace, atol=1e-4)


def test_blow_up_and_bad_inputs():
    res = lyapunov_spectrum(SQUARE, np.array([[1.0], [-1.0]]), np.array([[1.0], [1.0]]), t_transient=1.0,
                            t_measure=4.0, dt=0.01, blowup_bound=1e4)
    assert res.blowup.tolist() == [True, False] and np.isnan(res.exponents[0, 0])
    assert list(classify_trajectories(res)["regime"]) == ["blow_up", "fixed_point"]
    model = get_model("lorenz")
    p, u = model.default_params[None], model.default_state[None]
    with pytest.raises(InputError, match="k"):
        lyapunov_spectrum(model, p, u, t_transient=1, t_measure=1, k=4)
    with pytest.raises(InputError, match="dt"):
        lyapunov_spectrum(model, p, u, t_transient=1, t_measure=1, dt=0.0)
    with pytest.raises(InputError, match="params"):
        lyapunov_spectrum(model, np.full_like(p, np.nan), u, t_transient=1, t_measure=1)
    with pytest.raises(InputError, match="initial_state"):
        lyapunov_spectrum(model, p, np.full_like(u, np.inf), t_transient=1, t_measure=1)
    with pytest.raises(InputError, match="t_measure"):
        lyapunov_spectrum(model, p, u, t_transient=1, t_measure=0.0)
    for bad in ("nope", 3):
        with pytest.raises(InputError, match="section_state"):
            lyapunov_spectrum(model, p, u, t_transient=1, t_measure=1, section_state=bad)


@pytest.mark.gpu
def test_cuda_spectrum_matches_cpu_and_lorenz_on_a_large_batch():
    """On the GPU machine: CUDA and CPU give the same spectra on non-chaotic rows (rounding only),
    and a 4096-row Lorenz batch pins λ1 = 0.9056 ± 0.01 with Σλ = -13.667 ± 1e-3 per row."""
    model = get_model("brusselator")
    params = np.column_stack([np.ones(64), np.linspace(1.5, 3.0, 64)])
    u0 = np.tile([1.2, 1.3], (64, 1))
    kw = dict(t_transient=20.0, t_measure=20.0, dt=0.02)
    cpu = lyapunov_spectrum(model, params, u0, device="cpu", **kw)
    gpu = lyapunov_spectrum(model, params, u0, device="cuda", **kw)
    np.testing.assert_allclose(gpu.exponents, cpu.exponents, atol=1e-9)
    lorenz = get_model("lorenz")
    B = 4096
    u0 = _random_states(np.random.default_rng(3), B, [0.0, 0.0, 25.0], 5.0)
    res = lyapunov_spectrum(lorenz, np.tile(lorenz.default_params, (B, 1)), u0, t_transient=5.0,
                            t_measure=45.0, dt=0.01, device="cuda")
    assert abs(res.exponents[:, 0].mean() - 0.9056) < 0.01
    np.testing.assert_allclose(res.exponents.sum(axis=1), -13.6667, atol=1e-3)
    assert (classify_trajectories(res)["regime"] == "chaotic").mean() > 0.99
