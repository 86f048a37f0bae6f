"""EqProp engine (actors/trainer/eqprop): EP gradients against two independent references (backprop
through the unrolled settling loop, and the implicit / adjoint gradient at the fixed point), their
order in beta, the energy the dynamics minimise, memory flat in the settling steps, and bad input.
All CPU, float64, seeded; the GPU memory check is marked `gpu`."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from actors.common.errors import InputError, UnknownName
from actors.trainer.eqprop import (
    MODES,
    EqPropNet,
    NotConverged,
    bptt_gradients,
    energy,
    ep_gradients,
    implicit_gradients,
    predict,
    settle,
    settle_residual,
)
from actors.trainer.eqprop.memory import peak_tensor_bytes

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _data(sizes, batch=16, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, sizes[0], generator=g, dtype=dtype) * 2
    y = torch.randint(0, sizes[-1], (batch,), generator=g)
    return x, y


def _net(sizes, act="sigmoid", residual=False, seed=1):
    return EqPropNet(sizes, activation=act, residual=residual, seed=seed).double()


def _cos(a, b):
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


def _rel(g, ref):
    return max(float((g[k] - ref[k]).norm() / ref[k].norm()) for k in ref)


CASES = [([5, 8, 3], "sigmoid", False), ([6, 10, 7, 4], "tanh", False), ([6, 8, 8, 8, 3], "hardsigmoid", True)]


@pytest.mark.parametrize("sizes,act,residual", CASES)
@pytest.mark.parametrize("cost", ["ce", "mse"])
def test_symmetric_ep_matches_bptt_for_every_weight_matrix(sizes, act, residual, cost):
    net = _net(sizes, act, residual)
    x, y = _data(sizes)
    ref = bptt_gradients(net, x, y, cost=cost, steps=300)
    grads, stats = ep_gradients(net, x, y, beta=0.01, mode="symmetric", cost=cost, steps_free=300,
                                steps_nudged=300, backend="torch", tol=1e-9)
    assert list(grads) == [n for n, _ in net.named_parameters()]
    assert stats["residual_free"] <= 1e-9 and stats["phases"] == 2
    for name in ref:
        assert grads[name].shape == ref[name].shape
        assert _cos(grads[name], ref[name]) >= 0.99, name
    assert _rel(grads, ref) < 1e-3


@pytest.mark.parametrize("update", ["sync", "evenodd"])
def test_implicit_gradient_equals_bptt_and_the_ep_limit(update):
    sizes = [5, 9, 6, 3]
    net = _net(sizes, "sigmoid")
    x, y = _data(sizes, seed=3)
    ref = bptt_gradients(net, x, y, steps=300, update=update)
    imp = implicit_gradients(net, x, y, steps=300)
    assert _rel(imp, ref) < 1e-8
    grads, _ = ep_gradients(net, x, y, beta=1e-3, mode="holomorphic", steps_free=300, steps_nudged=300,
                            backend="torch", update=update)
    assert _rel(grads, imp) < 1e-7


@pytest.mark.parametrize("act", ["sigmoid", "tanh", "hardsigmoid"])
def test_holomorphic_is_closer_to_bptt_than_one_sided_and_symmetric(act):
    sizes = [5, 8, 6, 3]
    net = _net(sizes, act)
    x, y = _data(sizes, seed=2)
    ref = bptt_gradients(net, x, y, steps=300)
    err = {m: _rel(ep_gradients(net, x, y, beta=0.1, mode=m, steps_free=300, steps_nudged=300, n_points=4,
                                backend="torch")[0], ref) for m in MODES}
    assert err["holomorphic"] < err["symmetric"] < err["one_sided"], err
    assert err["holomorphic"] < 1e-2 * err["one_sided"], err


def test_ep_error_orders_in_beta():
    """log-log slope of |EP - BPTT| over beta: 1 for one-sided, 2 for symmetric (centered) nudging."""
    sizes = [5, 8, 6, 3]
    net = _net(sizes, "sigmoid")
    x, y = _data(sizes, seed=4)
    ref = bptt_gradients(net, x, y, steps=300)
    betas = [0.2, 0.1, 0.05, 0.025]
    for mode, order in (("one_sided", 1.0), ("symmetric", 2.0)):
        errs = [_rel(ep_gradients(net, x, y, beta=b, mode=mode, steps_free=300, steps_nudged=300,
                                  backend="torch")[0], ref) for b in betas]
        slope = np.polyfit(np.log(betas), np.log(errs), 1)[0]
        assert abs(slope - order) < 0.15, (mode, slope, errs)


def test_holomorphic_two_points_is_symmetric():
    sizes = [4, 7, 3]
    net = _net(sizes, "tanh")
    x, y = _data(sizes, seed=5)
    kw = dict(beta=0.05, steps_free=200, steps_nudged=200, backend="torch")
    h, _ = ep_gradients(net, x, y, mode="holomorphic", n_points=2, **kw)
    s, _ = ep_gradients(net, x, y, mode="symmetric", **kw)
    assert _rel(h, s) < 1e-12


def test_evenodd_half_sweeps_lower_the_energy_and_reach_the_sync_fixed_point():
    sizes = [6, 10, 8, 5, 3]
    net = _net(sizes, "hardsigmoid", seed=7)
    x, y = _data(sizes, seed=6)
    s = net.zero_states(x.shape[0])
    prev = energy(net, x, s, y, beta=0.5).sum()
    for _ in range(20):
        s = settle(net, x, y=y, beta=0.5, steps=1, state=s, update="evenodd", backend="torch")
        e = energy(net, x, s, y, beta=0.5).sum()
        assert float(e.detach()) <= float(prev.detach()) + 1e-12
        prev = e
    a = settle(net, x, y=y, beta=0.5, steps=400, update="evenodd", backend="torch", tol=1e-12)
    b = settle(net, x, y=y, beta=0.5, steps=400, update="sync", backend="torch", tol=1e-12)
    assert max(float((p - q).abs().max()) for p, q in zip(a, b)) < 1e-11
    # the fixed point is a stationary point of F_beta: the energy's gradient in s vanishes there
    sv = [t.clone().requires_grad_(True) for t in a]
    gs = torch.autograd.grad(energy(net, x, sv, y, beta=0.5).sum(), sv)
    inside = [(t > 1e-9) & (t < 1 - 1e-9) for t in a]   # hardsigmoid: interior units (the box constraint)
    assert max(float(g[m].abs().max()) for g, m in zip(gs, inside) if m.any()) < 1e-9


def test_predict_settle_and_residual():
    sizes = [5, 8, 3]
    net = _net(sizes)
    x, _ = _data(sizes)
    out = predict(net, x, steps=50, backend="torch")
    assert out.shape == (16, 3)
    states, res = settle_residual(net, x, steps=50, backend="torch")
    assert torch.equal(states[-1], out) and 0 <= res < 1e-6
    assert torch.equal(net(x, steps=50), out)


def test_not_converged_reports_the_residual():
    sizes = [5, 8, 3]
    net = _net(sizes, "tanh")
    x, y = _data(sizes)
    with pytest.raises(NotConverged) as exc:
        settle(net, x, steps=1, tol=1e-12, backend="torch")
    assert isinstance(exc.value, InputError) and exc.value.field == "steps"
    assert exc.value.residual > 1e-12 and "residual" in str(exc.value)
    with pytest.raises(NotConverged):
        ep_gradients(net, x, y, steps_free=2, tol=1e-12, backend="torch")


def test_memory_flat_in_steps_for_ep_and_growing_for_bptt():
    """Peak extra tensor bytes (allocations counted on the CPU, saved-for-backward tensors included):
    EP's is the same at 10 and 1000 settling steps, BPTT's grows ~linearly and is >= 100x EP's."""
    net = EqPropNet([20, 64, 64, 10], seed=0)
    x, y = _data([20, 64, 64, 10], batch=64, dtype=torch.float32)
    ep = {n: peak_tensor_bytes(lambda n=n: ep_gradients(net, x, y, steps_free=n, steps_nudged=n, backend="torch"))[0]
          for n in (10, 1000)}
    bp = {n: peak_tensor_bytes(lambda n=n: bptt_gradients(net, x, y, steps=n))[0] for n in (10, 1000)}
    assert 0 < ep[1000] <= 1.2 * ep[10], ep
    assert bp[1000] >= 50 * bp[10], bp
    assert bp[1000] >= 100 * ep[1000], (bp, ep)


def test_complex_beta_settles_to_complex_states():
    sizes = [4, 6, 3]
    net = _net(sizes)
    x, y = _data(sizes)
    s = settle(net, x, y=y, beta=0.1j, steps=50, backend="torch")
    assert s[-1].is_complex()
    real = settle(net, x, y=y, beta=complex(0.1, 0), steps=50, backend="torch")
    assert not real[-1].is_complex()


@pytest.mark.parametrize("call,field", [
    (lambda n, x, y: ep_gradients(n, x, y, beta=0.0), "beta"),
    (lambda n, x, y: ep_gradients(n, x, y, beta=-0.1), "beta"),
    (lambda n, x, y: ep_gradients(n, x, y, beta=math.nan), "beta"),
    (lambda n, x, y: ep_gradients(n, x, y, mode="two_sided"), "mode"),
    (lambda n, x, y: ep_gradients(n, x, y, cost="hinge"), "cost"),
    (lambda n, x, y: ep_gradients(n, x, y, backend="jax"), "backend"),
    (lambda n, x, y: ep_gradients(n, x, y, mode="holomorphic", n_points=1), "n_points"),
    (lambda n, x, y: ep_gradients(n, x, y, steps_free=0), "steps_free"),
    (lambda n, x, y: ep_gradients(n, x, y, steps_nudged=-3), "steps_nudged"),
    (lambda n, x, y: ep_gradients(n, x, y, update="random"), "update"),
    (lambda n, x, y: ep_gradients(n, x[:, :3], y), "x"),
    (lambda n, x, y: ep_gradients(n, x, y[:5]), "y"),
    (lambda n, x, y: ep_gradients(n, x, y + 10), "y"),
    (lambda n, x, y: ep_gradients(n, x, torch.zeros(16, 7)), "y"),
    (lambda n, x, y: settle(n, x, beta=0.1), "y"),
    (lambda n, x, y: settle(n, x, y=y, beta=20.0), "beta"),
    (lambda n, x, y: settle(n, x, backend="cupy"), "backend"),
    (lambda n, x, y: settle(n, x, y=y, beta=0.1j, backend="triton"), "backend"),
    (lambda n, x, y: settle(n, x, state=[torch.zeros(16, 8)]), "state"),
    (lambda n, x, y: settle(n, x, state=[torch.zeros(16, 8), torch.zeros(16, 4)]), "state[1]"),
    (lambda n, x, y: settle(n, x, tol=-1.0), "tol"),
    (lambda n, x, y: settle(n, x, precision="fp8"), "precision"),
])
def test_bad_input_names_the_field(call, field):
    net = _net([5, 8, 3])
    x, y = _data([5, 8, 3])
    with pytest.raises(InputError) as exc:
        call(net, x, y)
    assert exc.value.field == field, str(exc.value)
    assert exc.value.allowed


@pytest.mark.parametrize("kwargs,field", [
    (dict(sizes=[5]), "sizes"), (dict(sizes=[5, 0, 3]), "sizes[1]"), (dict(sizes="5,3"), "sizes"),
    (dict(sizes=[5, 3], activation="relu"), "activation"), (dict(sizes=[5, 3], seed=-1), "seed"),
])
def test_bad_net_config_names_the_field(kwargs, field):
    with pytest.raises(InputError) as exc:
        EqPropNet(**kwargs)
    assert exc.value.field == field
    if field == "activation":
        assert isinstance(exc.value, UnknownName) and "hardsigmoid" in exc.value.allowed


def test_weights_are_seeded_and_named_per_layer():
    a, b = EqPropNet([4, 6, 2], seed=3), EqPropNet([4, 6, 2], seed=3)
    assert [n for n, _ in a.named_parameters()] == ["layers.0.weight", "layers.0.bias", "layers.1.weight",
                                                    "layers.1.bias"]
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.layers[0].weight, EqPropNet([4, 6, 2], seed=4).layers[0].weight)


@pytest.mark.gpu
def test_gpu_memory_flat_in_steps_and_far_below_bptt():
    """torch.cuda.max_memory_allocated above the baseline: EP flat within 1.2x from 10 to 1000 steps
    (torch and triton backends) and >= 100x below BPTT at 1000 steps (batch 1024, 784-128-128-10)."""
    dev = torch.device("cuda")
    sizes = [784, 128, 128, 10]
    net = EqPropNet(sizes, seed=0).to(dev)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1024, 784, generator=g).to(dev)
    y = torch.randint(0, 10, (1024,), generator=g).to(dev)

    def peak(fn):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base

    kw = dict(update="evenodd", beta=0.5)   # the compiles the kernel tests share
    ep = {n: peak(lambda n=n: ep_gradients(net, x, y, steps_free=n, steps_nudged=n, backend="torch", **kw))
          for n in (10, 1000)}
    bp = peak(lambda: bptt_gradients(net, x, y, steps=1000))
    assert ep[1000] <= 1.2 * ep[10], ep
    assert bp >= 100 * ep[1000], (bp, ep)
    tri = {n: peak(lambda n=n: ep_gradients(net, x, y, steps_free=n, steps_nudged=n, backend="triton", **kw))
           for n in (10, 1000)}
    assert tri[1000] <= 1.2 * tri[10], tri


def test_bench_cpu_smoke_writes_its_tables(tmp_path):
    from jobs.bench import eqprop as bench

    assert bench.main(["--cpu-smoke", "--skip", "estimators", "--out", str(tmp_path)]) == 0
    md = (tmp_path / "eqprop_bench.md").read_text()
    assert "Peak memory vs settling steps" in md and "--cpu-smoke" in md
    import json

    data = json.loads((tmp_path / "eqprop_bench.json").read_text())
    mem = {m["steps"]: m for m in data["memory"]}
    assert mem[100]["ep_torch_mb"] == mem[10]["ep_torch_mb"] and mem[100]["bptt_mb"] > 5 * mem[10]["bptt_mb"]
    assert data["small"][0]["rel_err_fp64"] < 1e-5
