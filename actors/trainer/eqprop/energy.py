"""The energy-based network of Equilibrium Propagation: a layered (optionally residual) Hopfield-like MLP.

State layers s_1..s_L (s_0 = x is clamped), weights W_j: layer j -> j+1 (an nn.Linear each, so
`named_parameters()` gives `layers.<j>.weight` and `layers.<j>.bias`). The primitive function and the
energy (Scellier & Bengio 2017, in the "primitive" form of Laborieux et al. 2021):

    Phi(s)  = sum_j s_{j+1} . (W_j s_j + b_j)  [+ sum of s_{j+1} . s_j between equal-width state layers
                                                  when residual=True: an identity coupling]
    F(s)    = sum_k sum_units G(s_k) - Phi(s),   G' = activation^{-1}
    F_beta  = F + beta * C(s_L, y)               (C: cross-entropy of s_L as logits, or squared error)

so dF_beta/ds_k = 0 is exactly s_k = act(a_k) with a_k = dPhi/ds_k (- beta dC/ds_L at the output): the
settling update. For hardsigmoid (act = clip(z/6 + 1/2, 0, 1)) the fixed point is the minimiser of F over
the box [0, 1] (G(s) = 3 s^2 - 3 s inside it), for sigmoid / tanh G is the (scaled) binary entropy /
its tanh analogue. Updating the layers of one parity at a time (even/odd) minimises F exactly over
those layers (same-parity layers do not interact), so that schedule decreases F monotonically; the
synchronous (Jacobi) schedule converges when the couplings are contractive.

EP's gradient of the mean loss: dL/dW_j = d/dbeta [dF/dW_j](s^beta) at beta = 0 with
dF/dW_j = -mean_b s_{j+1} s_j^T and dF/db_j = -mean_b s_{j+1} (gradients.py estimates the derivative).
The activations accept complex input (holomorphic EP): sigmoid and tanh are analytic; hardsigmoid is
continued piecewise (affine z/6 + 1/2 where Re z is inside (-3, 3), constant outside), analytic near any
point off the two kinks.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from actors.common.errors import InputError, UnknownName

__all__ = ["ACTIVATIONS", "COSTS", "EqPropNet", "activate", "cost_grad", "cost_value", "energy", "targets"]

ACTIVATIONS: tuple[str, ...] = ("hardsigmoid", "sigmoid", "tanh")
COSTS: tuple[str, ...] = ("ce", "mse")
MAX_WIDTH = 1 << 16
MAX_LAYERS = 4096


def activate(name: str, z: Tensor) -> Tensor:
    """act(z) for real or complex z (see the module docstring for the complex continuation)."""
    if name == "hardsigmoid":
        if z.is_complex():
            r = z.real
            inside = ((r > -3) & (r < 3)).to(z.dtype)
            return (z / 6 + 0.5) * inside + (r >= 3).to(z.dtype)
        return torch.nn.functional.hardsigmoid(z)
    if name == "sigmoid":
        return 1 / (1 + torch.exp(-z)) if z.is_complex() else torch.sigmoid(z)
    if name == "tanh":
        return torch.tanh(z)
    raise UnknownName("activation", name, list(ACTIVATIONS))


def _g(name: str, s: Tensor) -> Tensor:
    """G(s) with G' = act^{-1} (the self-energy of a unit), real states only."""
    if name == "hardsigmoid":
        return 3 * s * s - 3 * s
    eps = torch.finfo(s.dtype).eps
    if name == "sigmoid":
        p = s.clamp(eps, 1 - eps)
        return p * torch.log(p) + (1 - p) * torch.log1p(-p)
    p = s.clamp(-1 + eps, 1 - eps)
    return p * torch.atanh(p) + 0.5 * torch.log1p(-p * p)


def targets(y: Tensor, n_out: int, cost: str, batch: int, dtype: torch.dtype) -> Tensor:
    """The (batch, n_out) target the cost compares s_L with: one-hot of integer labels, or y itself
    (soft targets for "ce", regression targets for "mse")."""
    if cost not in COSTS:
        raise UnknownName("cost", cost, list(COSTS))
    if not isinstance(y, Tensor):
        raise InputError("y", f"a {type(y).__name__}, not a tensor", "a (batch,) int64 label tensor or (batch, n_out)")
    if y.dim() == 1 and not y.is_floating_point() and not y.is_complex():
        if y.shape[0] != batch:
            raise InputError("y", f"{y.shape[0]} labels for a batch of {batch}", f"shape ({batch},)")
        if y.numel():
            lo, hi = torch.stack(torch.aminmax(y)).tolist()   # one device sync for both ends
            if lo < 0 or hi >= n_out:
                raise InputError("y", f"labels in [{lo}, {hi}]", f"0 <= label < {n_out}")
        return torch.nn.functional.one_hot(y.long(), n_out).to(dtype)
    if y.dim() == 2 and y.is_floating_point():
        if tuple(y.shape) != (batch, n_out):
            raise InputError("y", f"shape {tuple(y.shape)}", f"({batch}, {n_out}) or ({batch},) integer labels")
        return y.to(dtype)
    raise InputError("y", f"dtype {y.dtype} shape {tuple(y.shape)}",
                     f"({batch},) integer labels or ({batch}, {n_out}) float targets")


def cost_grad(cost: str, out: Tensor, target: Tensor) -> Tensor:
    """dC/ds_L per sample (not divided by the batch): softmax(s_L) - t for "ce", s_L - t for "mse";
    analytic, so it takes complex states."""
    if cost == "ce":
        z = out - out.real.amax(dim=1, keepdim=True)
        e = torch.exp(z)
        return e / e.sum(dim=1, keepdim=True) - target
    if cost == "mse":
        return out - target
    raise UnknownName("cost", cost, list(COSTS))


def cost_value(cost: str, out: Tensor, target: Tensor) -> Tensor:
    """The mean over the batch of C(s_L, t): cross-entropy with soft targets, or 0.5 ||s_L - t||^2."""
    if cost == "ce":
        return -(target * torch.log_softmax(out, dim=1)).sum(dim=1).mean()
    if cost == "mse":
        return 0.5 * ((out - target) ** 2).sum(dim=1).mean()
    raise UnknownName("cost", cost, list(COSTS))


class EqPropNet(nn.Module):
    """A layered energy-based MLP: `sizes` = [input, hidden..., output]; every non-input layer is a
    state that settles. `residual=True` adds an identity coupling between consecutive state layers of
    equal width (a symmetric term of the energy, so EP's gradient formula is unchanged). Weights are
    drawn from a generator seeded by `seed` (nn.Linear's default uniform(+-1/sqrt(fan_in)) scale)."""

    def __init__(self, sizes: Sequence[int], activation: str = "hardsigmoid", residual: bool = False, seed: int = 0):
        super().__init__()
        sizes = list(sizes) if isinstance(sizes, (list, tuple)) else sizes
        if not isinstance(sizes, list) or len(sizes) < 2 or len(sizes) > MAX_LAYERS + 1:
            raise InputError("sizes", f"{sizes!r}", f"a list of 2 to {MAX_LAYERS + 1} layer widths [input, ..., output]")
        for i, n in enumerate(sizes):
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_WIDTH:
                raise InputError(f"sizes[{i}]", f"{n!r}", f"an integer in [1, {MAX_WIDTH}]")
        if activation not in ACTIVATIONS:
            raise UnknownName("activation", activation, list(ACTIVATIONS))
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise InputError("seed", f"{seed!r}", "an integer in [0, 2**63)")
        self.sizes = sizes
        self.activation = activation
        self.residual = bool(residual)
        self.seed = seed
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for lin in self.layers:
                bound = lin.in_features ** -0.5
                lin.weight.copy_(torch.rand(lin.weight.shape, generator=gen) * 2 * bound - bound)
                lin.bias.copy_(torch.rand(lin.bias.shape, generator=gen) * 2 * bound - bound)

    @property
    def n_states(self) -> int:
        """The number of settling layers (every layer but the input)."""
        return len(self.sizes) - 1

    def skip(self, k: int) -> bool:
        """Whether state layers k and k+1 (0-based state indices) are joined by the identity coupling."""
        return self.residual and k + 1 < self.n_states and self.sizes[k + 1] == self.sizes[k + 2]

    def check_input(self, x: Tensor) -> Tensor:
        """x as a (batch, sizes[0]) tensor of the parameters' dtype and device (InputError naming `x`)."""
        if not isinstance(x, Tensor):
            raise InputError("x", f"a {type(x).__name__}, not a tensor", f"a (batch, {self.sizes[0]}) tensor")
        if x.dim() != 2 or x.shape[1] != self.sizes[0] or x.shape[0] < 1:
            raise InputError("x", f"shape {tuple(x.shape)}", f"(batch >= 1, {self.sizes[0]}) for sizes {self.sizes}")
        p = self.layers[0].weight
        return x.to(device=p.device, dtype=p.dtype)

    def zero_states(self, batch: int, dtype: torch.dtype | None = None) -> list[Tensor]:
        """All-zero states (the settling start of a free phase)."""
        p = self.layers[0].weight
        return [torch.zeros(batch, n, device=p.device, dtype=dtype or p.dtype) for n in self.sizes[1:]]

    def forward(self, x: Tensor, steps: int = 30) -> Tensor:
        """The output state after a free phase of `steps` torch sweeps (no gradient through it)."""
        from actors.trainer.eqprop.settle import settle

        return settle(self, x, steps=steps, backend="torch")[-1]


def energy(net: EqPropNet, x: Tensor, states: Sequence[Tensor], y: Tensor | None = None, beta: float = 0.0,
           cost: str = "ce") -> Tensor:
    """F_beta(s) per sample (shape (batch,)), real states: sum G(s_k) - Phi(s) + beta C(s_L, y). Used by
    the tests (each even/odd half-sweep lowers it) and to define the gradient formula."""
    x = net.check_input(x)
    s = [x, *states]
    e = sum(_g(net.activation, sk).sum(dim=1) for sk in states)
    for j, lin in enumerate(net.layers):
        e = e - (s[j + 1] * lin(s[j])).sum(dim=1)
        if j >= 1 and net.skip(j - 1):
            e = e - (s[j + 1] * s[j]).sum(dim=1)
    if beta:
        if y is None:
            raise InputError("y", "missing for beta != 0", "the targets of the nudged phase")
        t = targets(y, net.sizes[-1], cost, x.shape[0], x.dtype)
        if cost == "ce":
            e = e + beta * -(t * torch.log_softmax(states[-1], dim=1)).sum(dim=1)
        else:
            e = e + beta * 0.5 * ((states[-1] - t) ** 2).sum(dim=1)
    return e
