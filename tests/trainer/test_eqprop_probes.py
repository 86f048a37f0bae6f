"""Deep signal probes and the sleep phase: the block-tridiagonal solver against a dense solve, the probe's
fixed point against the engine's settle, the signal against closed forms (sinh / harmonic profiles of a
skip-coupled chain, a dense linear solve with weights), the anti-Hebbian update against numpy."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from actors.common.errors import InputError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_block_tridiagonal_solve_equals_a_dense_solve():
    from actors.trainer.eqprop.probes import block_tridiag_solve

    g = torch.Generator().manual_seed(0)
    K, B, n = 6, 3, 4
    r64 = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    lo, up = [0.3 * r64(B, n, n) for _ in range(K)], [0.3 * r64(B, n, n) for _ in range(K)]
    di = [torch.eye(n, dtype=torch.float64) + 0.1 * r64(B, n, n) for _ in range(K)]
    rhs = [r64(B, n) for _ in range(K)]
    x = torch.cat(block_tridiag_solve(lo, di, up, rhs), dim=1).numpy()
    for b in range(B):
        A = np.zeros((K * n, K * n))
        for k in range(K):
            A[k * n:(k + 1) * n, k * n:(k + 1) * n] = di[k][b].numpy()
            if k:
                A[k * n:(k + 1) * n, (k - 1) * n:k * n] = lo[k][b].numpy()
            if k < K - 1:
                A[k * n:(k + 1) * n, (k + 1) * n:(k + 2) * n] = up[k][b].numpy()
        # both solves are backward stable, so each is within ~ cond(A) * (K n) * eps * |x| of the exact x (the
        # perturbation bound); a fixed atol 1e-12 did not hold on every machine (batch 0: cond 138, |x| 23.4,
        # the two solves 1.09e-12 apart on the 2-core CI VM; this bound is 1.7e-11 there, 4.4e-13 and 4.6e-14
        # for batches 1 and 2)
        ref = np.linalg.solve(A, torch.cat(rhs, 1)[b].numpy())
        tol = np.linalg.cond(A) * K * n * np.finfo(np.float64).eps * np.abs(ref).max()
        np.testing.assert_allclose(x[b], ref, rtol=0, atol=tol)


@pytest.mark.parametrize("residual", [False, True])
def test_newton_fixed_point_is_the_engines_settled_state(residual):
    from actors.trainer.eqprop import settle
    from actors.trainer.eqprop.probes import ProbeSpec, fixed_point, probe_net

    spec = ProbeSpec(depth=5, width=12, residual=residual, seed=3)
    net = probe_net(spec)
    x = torch.rand(4, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    s, info = fixed_point(net, x)
    ref = settle(net, x, steps=400, backend="torch", update="evenodd")
    assert info["residual"] < 1e-12
    for a, b in zip(s, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


@pytest.mark.parametrize(("gain", "depth"), [(3.0, 20), (2.0, 12), (3.0, 1000)])
def test_signal_of_a_skip_chain_is_the_sinh_profile(gain, depth):
    """W = 0 between states, biases centred, all units in hardsigmoid's linear range (slope 1/6): each unit
    obeys d_k = (g/6)(d_{k-1} + d_{k+1}), d_0 = 0, d_L = delta, so d_k / delta = sinh(kappa k) / sinh(kappa L)
    with cosh(kappa) = 3 / g; g = 3 is the harmonic profile k / L (depth 1000: 0.1% at the deepest layer)."""
    from actors.trainer.eqprop.probes import ProbeSpec, signal_profile

    p = signal_profile(ProbeSpec(depth=depth, width=8, residual=True, skip_gain=gain, weight_scale=0.0, center=True,
                                 batch=4))
    assert p["saturated_fraction"] == 0.0
    k = np.arange(1, depth + 1)
    if gain == 3.0:
        want = k / depth
    else:
        kappa = math.acosh(3.0 / gain)
        want = np.sinh(kappa * k) / np.sinh(kappa * depth)
    np.testing.assert_allclose(p["signal"], want, rtol=1e-9, atol=1e-12)
    if depth == 1000:
        assert p["signal_deepest"] == pytest.approx(1e-3) and p["layers_above_1pct"] == 990


def test_signal_with_weights_is_a_dense_linear_solve():
    """Plain engine net (all units unsaturated here): the response solves (I - J) d = rhs with J the
    hidden-hidden coupling times 1/6 — one dense numpy solve of the whole stack."""
    from actors.trainer.eqprop.probes import ProbeSpec, probe_net, signal_profile

    spec = ProbeSpec(depth=6, width=8, batch=1, seed=2)
    p = signal_profile(spec)
    assert p["saturated_fraction"] == 0.0
    net = probe_net(spec)
    W = [lin.weight.detach().numpy() for lin in net.layers]
    n, H = 8, spec.depth - 1
    A = np.eye(n * H)
    for k in range(H):          # hidden state k+1 couples to k (W_k) and k+2 (W_{k+1}^T)
        if k:
            A[k * n:(k + 1) * n, (k - 1) * n:k * n] -= W[k] / 6
        if k < H - 1:
            A[k * n:(k + 1) * n, (k + 1) * n:(k + 2) * n] -= W[k + 1].T / 6
    gen = torch.Generator().manual_seed(spec.seed + 1)
    torch.rand(1, 8, generator=gen, dtype=torch.float64)      # the probe's x draw
    delta = (spec.perturbation * torch.randn(1, 8, generator=gen, dtype=torch.float64)).numpy()[0]
    rhs = np.zeros(n * H)
    rhs[(H - 1) * n:] = W[H].T @ delta / 6
    d = np.linalg.solve(A, rhs).reshape(H, n)
    want = [float(np.sqrt((d[k] ** 2).mean()) / np.sqrt((delta ** 2).mean())) for k in range(H)] + [1.0]
    np.testing.assert_allclose(p["signal"], want, rtol=1e-9)


def test_run_probes_writes_json_and_png(tmp_path):
    from actors.trainer.eqprop.probes import run_probes

    s = run_probes(tmp_path, depths=(10, 30), width=8, batch=2)
    assert (tmp_path / "probes.json").is_file() and (tmp_path / "probes.png").stat().st_size > 10_000
    crit = [r for r in s["rows"] if r["label"].startswith("residual critical")]
    assert [r["signal_deepest"] for r in crit] == pytest.approx([0.1, 1 / 30])
    plain = [r for r in s["rows"] if r["label"] == "plain"]
    assert all(r["signal_deepest"] < 1e-3 for r in plain)   # without skips the nudge dies within a few layers


def test_newton_refuses_other_activations():
    from actors.trainer.eqprop import EqPropNet
    from actors.trainer.eqprop.probes import fixed_point

    with pytest.raises(InputError) as e:
        fixed_point(EqPropNet([4, 4, 4], activation="tanh").double(), torch.zeros(1, 4, dtype=torch.float64))
    assert e.value.field == "activation"


# ---- the sleep phase ---------------------------------------------------------------------------------
def test_anti_hebbian_update_is_w_minus_lr_h_ht():
    from actors.trainer.eqprop import EqPropNet, settle
    from actors.trainer.eqprop.sleep import anti_hebbian_update

    net = EqPropNet([6, 5, 3], seed=1).double()
    x = torch.rand(7, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    s = settle(net, x, steps=30, backend="torch")
    before = [lin.weight.detach().numpy().copy() for lin in net.layers]
    anti_hebbian_update(net, x, s, 0.01)
    h = [x.numpy(), *(t.numpy() for t in s)]
    for j, lin in enumerate(net.layers):
        want = before[j] - 0.01 * np.einsum("bi,bj->ij", h[j + 1], h[j]) / 7
        np.testing.assert_allclose(lin.weight.detach().numpy(), want, rtol=0, atol=1e-15)


def test_sleep_phase_is_seeded_and_anti_hebbian():
    """100 steps at lr 0.01: deterministic for a seed; positive (hardsigmoid) states only push weights
    down, so the mean weight falls by lr * sum of mean outer products."""
    from actors.trainer.eqprop import EqPropNet
    from actors.trainer.eqprop.sleep import SleepSpec, sleep_phase

    nets = [EqPropNet([16, 12, 10], seed=0) for _ in range(2)]
    w0 = [lin.weight.detach().clone() for lin in nets[0].layers]
    infos = [sleep_phase(n, SleepSpec(steps=100, lr=0.01, batch=16, seed=4)) for n in nets]
    for a, b in zip(nets[0].layers, nets[1].layers):
        assert torch.equal(a.weight, b.weight)
    for lin, w in zip(nets[0].layers, w0):
        wt = lin.weight.detach()
        assert bool((wt <= w + 1e-7).all()) and float((w - wt).mean()) > 0
    assert infos[0]["relative_weight_change"] > 0 and infos[0]["steps"] == 100
