"""The "resident" persistent settling variant (kernels/eqprop/resident.py: transposed states, the weights as
the shared-memory operand of the tensor-core dot, loaded once per launch) against the torch settle, under
TRITON_INTERPRET=1 on the CPU; its sm_90 compile (shared memory within the H100 / H200 limit) is `slow`."""
from __future__ import annotations

import pytest
import torch

from actors.trainer.eqprop import EqPropNet, settle, settle_residual
from kernels.eqprop.persistent import prepare


def _data(sizes, batch=19, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, sizes[0], generator=g), torch.randint(0, sizes[-1], (batch,), generator=g)


def _run(net, x, y, beta, cost, steps, update, start, precision="fp32", block_b=16, variant="resident"):
    drive = torch.nn.functional.linear(x, net.layers[0].weight.detach(), net.layers[0].bias.detach())
    tgt = None if beta == 0 else torch.nn.functional.one_hot(y, net.sizes[-1]).float()
    launch, collect = prepare(drive, [lin.weight.detach() for lin in net.layers[1:]],
                              [lin.bias.detach() for lin in net.layers[1:]], [net.skip(k) for k in range(net.n_states)],
                              start, beta, cost, tgt, steps, update, net.activation, precision, block_b=block_b,
                              variant=variant)
    launch()
    return collect()


def _maxdiff(a, b):
    return max(float((p.double() - q.double()).abs().max()) for p, q in zip(a, b))


@pytest.mark.triton_interpret
@pytest.mark.parametrize("sizes,act,residual,update,cost,beta,block_b", [
    ([5, 20], "hardsigmoid", False, "sync", "ce", 0.5, 16),
    ([5, 20, 3], "sigmoid", False, "evenodd", "mse", -0.3, 16),
    ([7, 16, 16, 4], "tanh", True, "evenodd", "ce", 0.7, 32),
    ([7, 24, 16, 12, 5], "hardsigmoid", False, "evenodd", "ce", -0.2, 16),
    ([3, 32, 32, 32, 10], "hardsigmoid", True, "sync", "ce", 0.1, 16),
    ([5, 200, 200, 10], "hardsigmoid", False, "sync", "ce", 0.5, 16),   # 256-padded, the case it is for
    ([5, 130, 10], "hardsigmoid", False, "sync", "ce", 0.0, 32),                  # MNIST preset shape, free phase
    ([5, 40, 40, 10], "sigmoid", True, "sync", "mse", 0.3, 8),                    # BLOCK_B 8: 128 programs at batch 1024
])
def test_resident_variant_equals_the_torch_settle(sizes, act, residual, update, cost, beta, block_b):
    net = EqPropNet(sizes, activation=act, residual=residual, seed=1)
    x, y = _data(sizes)
    start = settle(net, x, steps=2, backend="torch")   # a non-zero start state
    ref, r_ref = settle_residual(net, x, y=y, beta=beta, cost=cost, steps=5, update=update, state=start, backend="torch")
    out, r = _run(net, x, y, beta, cost, 5, update, start, block_b=block_b)
    assert _maxdiff(out, ref) < 2e-6
    assert abs(float(r) - r_ref) < 2e-6


@pytest.mark.triton_interpret
def test_resident_bf16_within_5e_3_of_float64():
    sizes = [6, 256, 256, 10]
    net = EqPropNet(sizes, seed=2)
    x, y = _data(sizes, batch=20, seed=3)
    ref = settle(net.double(), x.double(), y=y, beta=0.5, steps=8, backend="torch")
    net = net.float()
    out, _ = _run(net, x, y, 0.5, "ce", 8, "sync", net.zero_states(20), precision="bf16")
    rel = max(float((a.double() - b).norm() / b.norm()) for a, b in zip(out, ref))
    assert rel < 5e-3


@pytest.mark.slow
def test_resident_compiles_for_sm90_within_shared_memory():
    """bf16 at P = 256 with BLOCK_B 16 and 32 (8 warps) and tf32 at 128 fit the 227 KiB of an H100 / H200
    (compiled ahead of time without a GPU, in a process without the interpreter)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("from kernels.eqprop.aot import compile_kernel, resident_config\n"
            "for c in [(256, 2, 16), (256, 2, 32), (128, 1, 16, 4)]:\n"
            "    r = compile_kernel(*resident_config(*c)); print(c, r['shared'], r['fits'])\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("True") == 3, out.stdout


@pytest.mark.gpu
@pytest.mark.parametrize("hidden,update", [(256, "sync"), (128, "evenodd")])
def test_gpu_resident_bf16_vs_float64(hidden, update):
    """Compiled on the GPU: batch 1024, 30 sweeps of a nudged phase, bf16 within 5e-3 of float64."""
    sizes = [784, hidden, hidden, 10]
    net = EqPropNet(sizes, seed=0).cuda()
    x, y = _data(sizes, batch=1024)
    x, y = x.cuda(), y.cuda()
    ref = settle(EqPropNet(sizes, seed=0).double().cuda(), x.double(), y=y, beta=0.5, steps=30, update=update,
                 backend="torch")
    out, r = _run(net, x, y, 0.5, "ce", 30, update, net.zero_states(1024), precision="bf16")
    rel = max(float((a.double() - b).norm() / b.norm()) for a, b in zip(out, ref))
    assert rel < 5e-3 and torch.isfinite(r)


@pytest.mark.gpu
def test_gpu_grouped_fused_sweep_bf16_vs_float64():
    """Hidden 512: the grouped sweep (one launch per sweep) in a CUDA graph, bf16, within 5e-3 of float64."""
    from kernels.eqprop.fused import FusedSettler

    sizes = [784, 512, 512, 10]
    net = EqPropNet(sizes, seed=0).cuda()
    x, y = _data(sizes, batch=1024)
    x, y = x.cuda(), y.cuda()
    ref = settle(EqPropNet(sizes, seed=0).double().cuda(), x.double(), y=y, beta=0.5, steps=30, backend="torch")
    drive = torch.nn.functional.linear(x, net.layers[0].weight.detach(), net.layers[0].bias.detach())
    st = FusedSettler(drive, [lin.weight.detach() for lin in net.layers[1:]], [lin.bias.detach() for lin in net.layers[1:]],
                      [False, False, False], sizes[1:], 0.5, "ce", True, 30, "sync", "hardsigmoid", "bf16", graph=True,
                      tiles=(64, 64, 64, 4, 3), grouped=True)
    out, _ = st(drive, net.zero_states(1024), torch.nn.functional.one_hot(y, 10).float())
    rel = max(float((a.double() - b).norm() / b.norm()) for a, b in zip(out, ref))
    assert rel < 5e-3


@pytest.mark.gpu
@pytest.mark.parametrize("hidden,beta", [(512, 0.5), (2048, 0.0)])
def test_gpu_engine_bf16_default_wide_path_vs_float64(hidden, beta):
    """The engine's bf16 default beyond 256 units (grouped sweep, BF16_SWEEP_TILES, bf16 states, CUDA graph),
    through the user-facing settle(): batch 1024, 30 sweeps, within 5e-3 of float64."""
    sizes = [784, hidden, hidden, 10]
    net = EqPropNet(sizes, seed=0).cuda()
    x, y = _data(sizes, batch=1024)
    x, y = x.cuda(), y.cuda()
    ref = settle(EqPropNet(sizes, seed=0).double().cuda(), x.double(), y=y, beta=beta, steps=30, backend="torch")
    out = settle(net, x, y=y, beta=beta, steps=30, backend="triton", precision="bf16")
    rel = max(float((a.double() - b).norm() / b.norm()) for a, b in zip(out, ref))
    assert rel < 5e-3
