"""The fused wide-layer path's tuning knobs (kernels/eqprop/fused.py): explicit tiles, the grouped sweep
(all <= 4 state layers of a synchronous sweep in one launch) and bf16 states, against the torch settle
under TRITON_INTERPRET=1 on the CPU."""
from __future__ import annotations

import pytest
import torch

from actors.trainer.eqprop import EqPropNet, settle
from kernels.eqprop.fused import FusedSettler


def _settler(net, x, y, beta, cost, steps, update, **kw):
    drive = torch.nn.functional.linear(x, net.layers[0].weight.detach(), net.layers[0].bias.detach())
    tgt = None if beta == 0 else (torch.nn.functional.one_hot(y, net.sizes[-1]).float())
    st = FusedSettler(drive, [lin.weight.detach() for lin in net.layers[1:]], [lin.bias.detach() for lin in net.layers[1:]],
                      [net.skip(k) for k in range(net.n_states)], net.sizes[1:], beta, cost, tgt is not None, steps,
                      update, net.activation, kw.pop("precision", "fp32"), graph=False, **kw)
    return st(drive, net.zero_states(x.shape[0]), tgt)


def _data(sizes, batch=21, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, sizes[0], generator=g), torch.randint(0, sizes[-1], (batch,), generator=g)


@pytest.mark.triton_interpret
@pytest.mark.parametrize("sizes,residual,cost,beta,tiles", [
    ([5, 40, 36, 12], False, "ce", 0.5, (32, 32, 32, 4, 3)),
    ([5, 40, 40, 6], True, "mse", -0.4, (16, 32, 16, 4, 2)),
    ([6, 24, 300], False, "ce", 0.3, (32, 64, 32, 4, 3)),     # ce over > 256 units: softmax by torch first
    ([6, 48], False, "ce", 0.2, (32, 32, 32, 4, 3)),          # one state layer
    ([6, 24, 24, 24, 9], True, "ce", 0.6, (32, 32, 32, 4, 3)),  # four state layers: every program range used
    ([6, 40, 36, 12], False, "ce", 0.0, None),                 # default tiles
])
def test_grouped_sweep_equals_the_torch_settle(sizes, residual, cost, beta, tiles):
    net = EqPropNet(sizes, residual=residual, seed=3)
    x, y = _data(sizes)
    ref = settle(net, x, y=y, beta=beta, cost=cost, steps=5, backend="torch")
    out, r = _settler(net, x, y, beta, cost, 5, "sync", tiles=tiles, grouped=True)
    assert max(float((a - b).abs().max()) for a, b in zip(out, ref)) < 2e-6
    assert torch.isfinite(r)


@pytest.mark.triton_interpret
@pytest.mark.parametrize("update", ["sync", "evenodd"])
def test_explicit_tiles_per_layer_path_equals_the_torch_settle(update):
    sizes = [5, 40, 36, 12]
    net = EqPropNet(sizes, seed=4)
    x, y = _data(sizes, seed=1)
    ref = settle(net, x, y=y, beta=0.3, steps=4, update=update, backend="torch")
    out, _ = _settler(net, x, y, 0.3, "ce", 4, update, tiles=(16, 32, 16, 4, 2))
    assert max(float((a - b).abs().max()) for a, b in zip(out, ref)) < 2e-6


@pytest.mark.triton_interpret
def test_grouped_bf16_states_within_5e_3_of_float64():
    sizes = [6, 64, 64, 10]
    net = EqPropNet(sizes, seed=5)
    x, y = _data(sizes, seed=2)
    ref = settle(net.double(), x.double(), y=y, beta=0.5, steps=6, backend="torch")
    net = net.float()
    out, _ = _settler(net, x, y, 0.5, "ce", 6, "sync", tiles=(32, 32, 32, 4, 3), grouped=True,
                      state_dtype=torch.bfloat16, precision="bf16")
    assert all(o.dtype == torch.float32 for o in out)
    rel = max(float((a.double() - b).norm() / b.norm()) for a, b in zip(out, ref))
    assert 0 < rel < 5e-3
