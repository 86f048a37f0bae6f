"""Generated ODE kernels compiled for CUDA against independent references (the GPU machine).

    PYTHONPATH=. python3 -m pytest -q tests/test_gpu_ode_kernels.py      # deselected without CUDA
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from actors.sweep.config import ScipySolver, TorchSolver, TritonSolver
from actors.sweep.engine import simulate
from actors.sweep.models import get_model
from kernels.ode.triton_solvers import solve_ode

pytestmark = pytest.mark.gpu
CUDA = dict(device="cuda")


def _rk4_numpy(model, u0, p, t0, t1, n_steps):
    h = (t1 - t0) / n_steps
    u = u0.copy()
    for _ in range(n_steps):
        k1 = model.rhs_numpy(u, p)
        k2 = model.rhs_numpy(u + 0.5 * h * k1, p)
        k3 = model.rhs_numpy(u + 0.5 * h * k2, p)
        k4 = model.rhs_numpy(u + h * k3, p)
        u = u + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return u


def _dop853(model, u0, p, t1):
    return np.stack([solve_ivp(lambda t, y, i=i: model.rhs_numpy(y, p[i]), (0.0, t1), u0[i], method="DOP853",
                               rtol=1e-12, atol=1e-14).y[:, -1] for i in range(len(u0))])


def _gaslit_batch(rng, b):
    m = get_model("gaslit_af")
    p = np.tile(m.default_params, (b, 1))
    p[:, m.param_names.index("gamma")] = rng.uniform(0, 0.7, b)
    u0 = np.tile(m.default_state, (b, 1))
    u0[:, m.state_names.index("Lambda")] = rng.uniform(0, 10, b)
    return m, p, u0


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 3e-4)])
def test_rk4_lorenz_matches_numpy_rk4(dtype, tol):
    rng = np.random.default_rng(10)
    m = get_model("lorenz")
    b = 3000  # several blocks, last one partial
    p = np.column_stack([rng.uniform(8, 12, b), rng.uniform(0, 30, b), rng.uniform(2, 3, b)])
    u0 = rng.normal(0, 5, (b, 3))
    r = solve_ode(m, p, u0, (0.0, 0.5), method="rk4", dtype=dtype, n_steps=500, features=False, **CUDA)
    ref = _rk4_numpy(m, u0, p, 0.0, 0.5, 500)
    np.testing.assert_allclose(r.u_final, ref, rtol=tol, atol=tol * 10)


@pytest.mark.parametrize("method", ["tsit5", "dopri5"])
def test_adaptive_fp64_gaslit_matches_dop853(method):
    m, p, u0 = _gaslit_batch(np.random.default_rng(11), 64)
    r = solve_ode(m, p, u0, (0.0, 5.0), method=method, dtype="float64", rtol=1e-10, atol=1e-12, chunk_steps=64,
                  **CUDA)
    assert r.finished.all() and not r.blowup.any()
    np.testing.assert_allclose(r.u_final, _dop853(m, u0, p, 5.0), rtol=2e-7, atol=1e-8)


def test_tsit5_fp32_gaslit_within_tolerance_and_compaction_is_exact():
    m, p, u0 = _gaslit_batch(np.random.default_rng(12), 4096)
    kw = dict(method="tsit5", dtype="float32", rtol=1e-5, atol=1e-7, **CUDA)
    chunked = solve_ode(m, p, u0, (0.0, 5.0), chunk_steps=32, **kw)
    single = solve_ode(m, p, u0, (0.0, 5.0), compact=False, chunk_steps=10**7, **kw)
    assert chunked.launches > 1 and single.launches == 1
    np.testing.assert_array_equal(chunked.u_final, single.u_final)
    sample = np.arange(0, 4096, 256)
    ref = _dop853(m, u0[sample], p[sample], 5.0)
    np.testing.assert_allclose(chunked.u_final[sample], ref, rtol=2e-3, atol=2e-3)


def test_blowup_detected_on_gpu():
    m = get_model("gaslit_af")
    pts = [x for x in m.spec.reference_points if x.expect == "blow_up"]
    p = np.stack([m.param_vector(x.params) for x in pts])
    u = np.stack([m.state_vector(x.initial_state) for x in pts])
    r = solve_ode(m, p, u, (0.0, 400.0), method="tsit5", dtype="float64", rtol=1e-8, atol=1e-10, **CUDA)
    ref = simulate(m, p, u, ScipySolver(rtol=1e-10, atol=1e-12, lyapunov=False))
    assert r.blowup.all() and ref.raw.blowup.all()
    np.testing.assert_allclose(r.t_blowup, ref.raw.t_blowup, rtol=1e-3)


def test_engine_triton_labels_agree_with_torch_on_reference_points():
    """FP64 triton vs FP64 torch (eager) on the documented points; FP32 triton against the same labels."""
    m = get_model("gaslit_af")
    pts = m.spec.reference_points
    p = np.stack([m.param_vector(x.params) for x in pts])
    u = np.stack([m.state_vector(x.initial_state) for x in pts])
    tri = simulate(m, p, u, TritonSolver(device="cuda", rtol=1e-6, atol=1e-9))
    tor = simulate(m, p, u, TorchSolver(device="cuda", rtol=1e-6, atol=1e-9, compile="off"))
    tri32 = simulate(m, p, u, TritonSolver(device="cuda", rtol=1e-6, atol=1e-9, dtype="float32"))
    assert list(tri.attractor) == list(tor.attractor) == list(tri32.attractor) == [x.expect for x in pts]
    chaotic = tri.regime == "chaotic"
    assert chaotic.any() and (tri.raw.lyapunov_max[chaotic] > 0.01).all()


# ---- dense output, Poincaré sections, Rosenbrock23 (compiled) -----------------------------------------
def _events(model, p, u0, t1, level, index, direction, method="DOP853", rtol=1e-10, **kw):
    def ev(t, y):
        return y[index] - level

    ev.direction = direction
    sol = solve_ivp(lambda t, y: model.rhs_numpy(y, p), (0.0, t1), u0, method=method, rtol=rtol, atol=1e-12, events=ev,
                    **kw)
    return sol.t_events[0], sol.y_events[0]


@pytest.mark.parametrize("dtype,rtol,tol", [("float64", 1e-10, 1e-7), ("float32", 1e-5, 2e-3)])
def test_interp_gaslit_per_lane_times_match_scipy_dense_output(dtype, rtol, tol):
    m, p, u0 = _gaslit_batch(np.random.default_rng(13), 2048)
    t_eval = np.sort(np.random.default_rng(14).uniform(0, 5.0, (2048, 16)), axis=1)
    kw = dict(method="tsit5", dtype=dtype, rtol=rtol, atol=rtol * 1e-2, t_eval=t_eval, **CUDA)
    r = solve_ode(m, p, u0, (0.0, 5.0), chunk_steps=16, **kw)
    one = solve_ode(m, p, u0, (0.0, 5.0), compact=False, chunk_steps=10**7, **kw)
    np.testing.assert_array_equal(r.ys, one.ys)  # chunked launches resume the output index exactly
    assert np.isfinite(r.ys).all()
    for i in range(0, 2048, 256):
        sol = solve_ivp(lambda t, y, i=i: m.rhs_numpy(y, p[i]), (0.0, 5.0), u0[i], method="DOP853", rtol=1e-12,
                        atol=1e-14, dense_output=True)
        np.testing.assert_allclose(r.ys[i], sol.sol(t_eval[i]).T, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-7), ("float32", 2e-3)])
def test_section_harmonic_period_is_two_pi_over_w(dtype, tol):
    from actors.sweep.models import register_model
    from kernels.ode.triton_solvers import Section

    h = register_model({"name": "harmonic_gpu_test", "states": ["x", "y"], "params": {"w": 1.0},
                        "initial_state": {"x": 1.0, "y": 0.0}, "equations": {"x": "y", "y": "-w**2*x"}})
    w = np.linspace(0.5, 3.0, 5000)
    r = solve_ode(h, w[:, None], np.tile([1.0, 0.0], (5000, 1)), (0.0, 30.0), method="tsit5", dtype=dtype,
                  rtol=1e-9 if dtype == "float64" else 1e-6, atol=1e-11 if dtype == "float64" else 1e-8,
                  section=Section("x", 0.0, 1, max_saved=3), **CUDA)
    np.testing.assert_allclose(r.return_time["mean"], 2 * np.pi / w, rtol=tol)
    np.testing.assert_array_equal(r.n_crossings, np.floor((30.0 * w / np.pi - 1.5) / 2).astype(int) + 1)
    np.testing.assert_allclose(r.crossing_t[:, 0], 1.5 * np.pi / w, rtol=tol)


def test_section_brusselator_periods_and_lorenz_crossings_match_scipy_events():
    from kernels.ode.triton_solvers import Section

    m = get_model("brusselator")
    b = np.linspace(2.2, 4.0, 512)  # limit cycles (Hopf at b = 2 for a = 1)
    p = np.column_stack([np.ones(512), b])
    r = solve_ode(m, p, np.tile([1.2, 1.3], (512, 1)), (0.0, 120.0), method="dopri5", dtype="float64", rtol=1e-10,
                  atol=1e-12, section=Section("x", 1.0, 1, t_min=60.0), **CUDA)
    for i in range(0, 512, 64):
        t_ev, _ = _events(m, p[i], [1.2, 1.3], 120.0, 1.0, 0, 1)
        t_ev = t_ev[t_ev >= 60.0]
        assert r.n_crossings[i] == len(t_ev)
        np.testing.assert_allclose(r.return_time["mean"][i], np.diff(t_ev).mean(), rtol=1e-7)
    lz = get_model("lorenz")
    pl = np.tile(lz.default_params, (64, 1))
    u0 = np.random.default_rng(15).normal(0, 5, (64, 3)) + [0, 0, 25]
    r = solve_ode(lz, pl, u0, (0.0, 8.0), method="tsit5", dtype="float64", rtol=1e-11, atol=1e-11,
                  section=Section("z", 27.0, -1, max_saved=8), **CUDA)
    for i in range(0, 64, 8):
        t_ev, y_ev = _events(lz, pl[i], u0[i], 8.0, 27.0, 2, -1)
        assert r.n_crossings[i] == len(t_ev)
        k = min(len(t_ev), 8)
        np.testing.assert_allclose(r.crossing_t[i, :k], t_ev[:k], atol=1e-6)
        np.testing.assert_allclose(r.crossings[i, :k], y_ev[:k], atol=1e-4)


def test_rosenbrock_van_der_pol_period_and_robertson_vs_radau():
    """mu = 1000 over two relaxation periods: the first downward x = 0 crossings and their return time vs Radau
    events; Tsit5 given 20x the Rosenbrock steps does not get half way. Robertson to t = 40 in FP64 and FP32 vs
    Radau, mass conserved."""
    from actors.sweep.jacobian import derivatives
    from kernels.ode.triton_solvers import Section

    vdp = get_model("van_der_pol")
    mu = np.array([[1000.0], [1000.0]])
    u0 = np.array([[2.0, 0.0], [2.0, 0.0]])
    r = solve_ode(vdp, mu, u0, (0.0, 3500.0), method="rosenbrock23", dtype="float64", rtol=1e-7, atol=1e-9,
                  section=Section("x", 0.0, -1, max_saved=2), fold=False, **CUDA)
    assert r.finished.all()
    jac = derivatives(vdp).jac_numpy
    t_ev, _ = _events(vdp, mu[0], u0[0], 3500.0, 0.0, 0, -1, method="Radau", rtol=1e-8,
                      jac=lambda t, y: jac(y, mu[0]))
    assert (r.n_crossings == len(t_ev)).all() and len(t_ev) == 2
    np.testing.assert_allclose(r.crossing_t, np.tile(t_ev, (2, 1)), rtol=1e-5)
    np.testing.assert_allclose(r.return_time["mean"], t_ev[1] - t_ev[0], rtol=1e-5)
    tsit = solve_ode(vdp, mu, u0, (0.0, 3500.0), method="tsit5", dtype="float64", rtol=1e-7, atol=1e-9,
                     max_steps=int(20 * r.n_steps.max()), fold=False, **CUDA)
    assert not tsit.finished.any() and (tsit.t_final < 0.5 * 3500.0).all()
    rob = get_model("robertson")
    p, y0 = np.tile(rob.default_params, (256, 1)), np.tile(rob.default_state, (256, 1))
    ref = solve_ivp(lambda t, y: rob.rhs_numpy(y, p[0]), (0, 40.0), y0[0], method="Radau", rtol=1e-10, atol=1e-14).y[:, -1]
    for dtype, rtol, tol in (("float64", 1e-7, 1e-5), ("float32", 1e-4, 3e-3)):
        rr = solve_ode(rob, p, y0, (0.0, 40.0), method="rosenbrock23", dtype=dtype, rtol=rtol, atol=1e-10, **CUDA)
        assert rr.finished.all()
        np.testing.assert_allclose(rr.u_final, np.tile(ref, (256, 1)), rtol=tol, atol=1e-10)
        np.testing.assert_allclose(rr.u_final.sum(1), 1.0, atol=1e-12 if dtype == "float64" else 1e-5)
