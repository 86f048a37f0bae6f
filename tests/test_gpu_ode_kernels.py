"""Generated ODE kernels compiled for CUDA against independent references (the GPU machine).

    PYTHONPATH=. python3 -m pytest -q tests/test_gpu_ode_kernels.py      # deselected without CUDA
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from actors.sweep.config import SolverConfig
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
    ref = simulate(m, p, u, SolverConfig(backend="scipy", rtol=1e-10, atol=1e-12, lyapunov=False))
    assert r.blowup.all() and ref.raw.blowup.all()
    np.testing.assert_allclose(r.t_blowup, ref.raw.t_blowup, rtol=1e-3)


def test_engine_triton_labels_agree_with_torch_on_reference_points():
    """FP64 triton vs FP64 torch (eager) on the documented points; FP32 triton against the same labels."""
    m = get_model("gaslit_af")
    pts = m.spec.reference_points
    p = np.stack([m.param_vector(x.params) for x in pts])
    u = np.stack([m.state_vector(x.initial_state) for x in pts])
    tri = simulate(m, p, u, SolverConfig(backend="triton", device="cuda", rtol=1e-6, atol=1e-9))
    tor = simulate(m, p, u, SolverConfig(backend="torch", device="cuda", rtol=1e-6, atol=1e-9, compile="off"))
    tri32 = simulate(m, p, u, SolverConfig(backend="triton", device="cuda", rtol=1e-6, atol=1e-9, dtype="float32"))
    assert list(tri.attractor) == list(tor.attractor) == list(tri32.attractor) == [x.expect for x in pts]
    chaotic = tri.regime == "chaotic"
    assert chaotic.any() and (tri.raw.lyapunov_max[chaotic] > 0.01).all()
