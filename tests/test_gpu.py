"""GPU path against the references (runs on the GPU machine; deselected without CUDA)."""
from __future__ import annotations

import numpy as np
import pytest

from actors.sweep.config import ScipySolver, TorchSolver
from actors.sweep.engine import simulate
from actors.sweep.models import get_model

pytestmark = pytest.mark.gpu


def test_cuda_torch_matches_closed_form_spiral():
    from tests.test_engine import SPIRAL

    a = np.array([-0.3, 0.05, 0.2])
    t_eval = np.linspace(0, 10, 41)
    res = simulate(SPIRAL, np.column_stack([a, np.ones(3)]), np.tile([1.0, 0.0], (3, 1)),
                   TorchSolver(device="cuda", rtol=1e-10, atol=1e-12, t_span=(0, 10), window=0.5, blowup_bound=1e6), t_eval=t_eval)
    z = np.exp((a[:, None] + 1j) * t_eval[None, :])
    np.testing.assert_allclose(res.raw.ys[..., 0], z.real, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(res.raw.lyapunov_max, a, atol=2e-3)


def test_cuda_matches_cpu_torch_and_scipy_on_gaslit():
    m = get_model("gaslit_af")
    rng = np.random.default_rng(3)
    n = 256
    params = np.tile(m.default_params, (n, 1))
    params[:, m.param_names.index("gamma")] = rng.uniform(0, 1, n)
    u0 = np.tile(m.default_state, (n, 1))
    u0[:, 3] = rng.uniform(0, 10, n)
    short = dict(rtol=1e-10, atol=1e-12, t_span=(0.0, 5.0), lyapunov=False)
    gpu = simulate(m, params, u0, TorchSolver(device="cuda", **short))
    cpu = simulate(m, params, u0, TorchSolver(device="cpu", **short))
    ref = simulate(m, params, u0, ScipySolver(**short))
    assert (gpu.raw.blowup == cpu.raw.blowup).all()
    mismatch = np.flatnonzero(gpu.raw.blowup != ref.raw.blowup)
    assert mismatch.size <= 2, (mismatch, gpu.raw.t_blowup[mismatch], ref.raw.t_blowup[mismatch])
    ok = ~ref.raw.blowup & ~gpu.raw.blowup
    np.testing.assert_allclose(gpu.raw.u_final[ok], cpu.raw.u_final[ok], rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(gpu.raw.u_final[ok], ref.raw.u_final[ok], rtol=2e-5, atol=1e-6)
    pts = m.spec.reference_points
    p = np.stack([m.param_vector(x.params) for x in pts])
    u = np.stack([m.state_vector(x.initial_state) for x in pts])
    res = simulate(m, p, u, TorchSolver(device="cuda", rtol=1e-6, atol=1e-9))
    assert list(res.attractor) == [x.expect for x in pts]
