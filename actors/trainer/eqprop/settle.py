"""Settling: relax the state layers of an EqPropNet to the fixed point of s_k = act(dPhi/ds_k [- beta dC]).

    from actors.trainer.eqprop import EqPropNet, settle
    net = EqPropNet([784, 256, 10])
    free = settle(net, x, steps=30)                              # free phase (beta = 0)
    nudged = settle(net, x, y=y, beta=0.1, steps=10, state=free) # nudged phase, started from the free one

One sweep updates every state layer: `update="sync"` (Jacobi: all layers from the previous states) or
`"evenodd"` (the first, third, ... state layers, then the second, fourth, ... from the fresh ones; an
exact block minimisation of the energy, see energy.py). The residual is the largest absolute change of
any unit in the last sweep; with `tol` given, a residual above it raises NotConverged (an InputError
naming `steps`) rather than handing back a state that is not a fixed point.

Backends: "torch" (any device, real or complex beta), "triton" (CUDA, or the CPU under
TRITON_INTERPRET=1; real beta: a persistent kernel running all steps in one launch when every state
layer is <= 256 wide and there are <= 4 of them, else a fused matmul + activation + nudge kernel per
layer with the step loop captured in a CUDA graph), "cupy" (CUDA: a RawKernel twin of the fused step),
"auto" (triton on CUDA for real beta, torch otherwise). Everything here runs under torch.no_grad: the
memory of a phase does not grow with its steps.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch
from torch import Tensor

from actors.common.errors import InputError, UnknownName
from actors.trainer.eqprop.energy import EqPropNet, activate, cost_grad, targets

__all__ = ["BACKENDS", "UPDATES", "NotConverged", "Couplings", "resolve_backend", "run_phase", "settle",
           "settle_residual"]

BACKENDS: tuple[str, ...] = ("auto", "torch", "triton", "cupy")
UPDATES: tuple[str, ...] = ("sync", "evenodd")
PRECISIONS: tuple[str, ...] = ("fp32", "tf32", "bf16")
MAX_STEPS = 1_000_000
MAX_BETA = 10.0


class NotConverged(InputError):
    """Settling did not reach its tolerance: `residual` is the largest unit change of the last sweep."""

    def __init__(self, residual: float, tol: float, steps: int, phase: str = "settling"):
        super().__init__("steps", f"{phase} did not converge in {steps} steps: residual {residual:.3g} > tol {tol:.3g}",
                         "more steps, a smaller |beta|, smaller weights or the evenodd update")
        self.residual = residual
        self.tol = tol


class Couplings:
    """The net's weights in one dtype (complex for holomorphic phases) and the constant input drive
    W_0 x + b_0, prepared once per phase so the sweeps allocate only their outputs."""

    def __init__(self, net: EqPropNet, x: Tensor, dtype: torch.dtype | None = None):
        dtype = dtype or net.layers[0].weight.dtype
        self.act = net.activation
        self.w = [lin.weight.detach().to(dtype) for lin in net.layers]
        self.b = [lin.bias.detach().to(dtype) for lin in net.layers]
        self.skip = [net.skip(k) for k in range(net.n_states)]
        self.drive = torch.nn.functional.linear(x.to(dtype), self.w[0], self.b[0])
        self.dtype = dtype


def check_steps(steps: int, field: str = "steps") -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise InputError(field, f"{steps!r}", f"an integer in [1, {MAX_STEPS}]")
    return steps


def check_update(update: str) -> str:
    if update not in UPDATES:
        raise UnknownName("update", update, list(UPDATES))
    return update


def check_beta(beta: complex | float, nudged: bool) -> complex | float:
    """beta as a number; 0 is refused for a nudged phase (the phase contrast would be 0/0)."""
    if isinstance(beta, bool) or not isinstance(beta, (int, float, complex)) or not math.isfinite(abs(beta)):
        raise InputError("beta", f"{beta!r}", f"a finite number with 0 < |beta| <= {MAX_BETA}")
    if abs(beta) > MAX_BETA:
        raise InputError("beta", f"|beta| = {abs(beta):g}", f"0 < |beta| <= {MAX_BETA}")
    if nudged and beta == 0:
        raise InputError("beta", "0 for a nudged phase", f"0 < |beta| <= {MAX_BETA}")
    return beta


def resolve_backend(backend: str, device: torch.device, complex_beta: bool = False) -> str:
    """The backend `backend` names on `device`: auto -> triton on CUDA for real beta, else torch.
    triton / cupy need CUDA (triton also runs under TRITON_INTERPRET=1) and real beta."""
    if backend not in BACKENDS:
        raise UnknownName("backend", backend, list(BACKENDS))
    if backend == "auto":
        return "triton" if device.type == "cuda" and not complex_beta and _triton_ok() else "torch"
    if backend != "torch" and complex_beta:
        raise InputError("backend", f"{backend} with a complex beta (holomorphic EP)", "torch (or auto) for complex beta")
    if backend == "triton" and not (_triton_ok() and (device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1")):
        raise InputError("backend", f"triton on {device.type} without TRITON_INTERPRET=1 (or triton missing)",
                         "torch, or triton on a CUDA device")
    if backend == "cupy" and device.type != "cuda":
        raise InputError("backend", f"cupy on {device.type}", "torch, or cupy on a CUDA device")
    return backend


def _triton_ok() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _check_state(net: EqPropNet, state: Sequence[Tensor] | None, batch: int, dtype: torch.dtype) -> list[Tensor]:
    if state is None:
        return net.zero_states(batch, dtype)
    if not isinstance(state, (list, tuple)) or len(state) != net.n_states:
        raise InputError("state", f"{type(state).__name__} of {len(state) if hasattr(state, '__len__') else '?'} layers",
                         f"a list of {net.n_states} tensors (batch, width) for sizes {net.sizes}")
    out = []
    for k, (s, n) in enumerate(zip(state, net.sizes[1:])):
        if not isinstance(s, Tensor) or tuple(s.shape) != (batch, n):
            raise InputError(f"state[{k}]", f"shape {tuple(getattr(s, 'shape', ()))}", f"({batch}, {n})")
        out.append(s.detach().to(device=net.layers[0].weight.device, dtype=dtype))
    return out


def _preact(c: Couplings, s: Sequence[Tensor], k: int, beta: complex | float, cost: str,
            target: Tensor | None) -> Tensor:
    """a_k = dPhi/ds_k (- beta dC/ds_L at the output) from the states `s` (0-based state index k)."""
    a = c.drive if k == 0 else torch.nn.functional.linear(s[k - 1], c.w[k], c.b[k])
    if k + 1 < len(s):
        a = a + s[k + 1] @ c.w[k + 1]
        if c.skip[k]:
            a = a + s[k + 1]
    if k >= 1 and c.skip[k - 1]:
        a = a + s[k - 1]
    if beta != 0 and k == len(s) - 1:
        a = a - beta * cost_grad(cost, s[k], target)
    return a


def sweep(c: Couplings, s: list[Tensor], beta: complex | float, cost: str, target: Tensor | None,
          update: str) -> list[Tensor]:
    """One sweep of every state layer (sync or evenodd); returns the new states (a new list)."""
    if update == "sync":
        return [activate(c.act, _preact(c, s, k, beta, cost, target)) for k in range(len(s))]
    s = list(s)
    for parity in (0, 1):
        for k in range(parity, len(s), 2):
            s[k] = activate(c.act, _preact(c, s, k, beta, cost, target))
    return s


def torch_settle(c: Couplings, s: list[Tensor], beta: complex | float, cost: str, target: Tensor | None,
                 steps: int, update: str) -> tuple[list[Tensor], Tensor]:
    """`steps` sweeps; (states, residual as a 0-d tensor: the last sweep's largest unit change)."""
    for _ in range(steps - 1):
        s = sweep(c, s, beta, cost, target, update)
    new = sweep(c, s, beta, cost, target, update)
    res = torch.stack([(a - b).abs().max() for a, b in zip(new, s)]).max()
    return new, res


def settle_residual(net: EqPropNet, x: Tensor, *, y: Tensor | None = None, beta: complex | float = 0.0,
                    cost: str = "ce", steps: int = 30, state: Sequence[Tensor] | None = None,
                    backend: str = "auto", tol: float | None = None, update: str = "sync",
                    precision: str = "fp32") -> tuple[list[Tensor], float]:
    """settle() and the residual of its last sweep (a float). `precision` selects the matmul operands of
    the triton kernels: "fp32" fp32-accurate (3xTF32), "tf32" tensor-core tf32, "bf16" bf16 (fp32 accumulation in
    all); torch uses the parameters' dtype and the cupy twin fp32."""
    check_steps(steps)
    check_update(update)
    beta = check_beta(beta, nudged=False)
    if precision not in PRECISIONS:
        raise UnknownName("precision", precision, list(PRECISIONS))
    if tol is not None and (isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol > 0):
        raise InputError("tol", f"{tol!r}", "a number > 0 or None")
    x = net.check_input(x)
    batch = x.shape[0]
    cplx = isinstance(beta, complex) and beta.imag != 0
    if isinstance(beta, complex) and not cplx:
        beta = beta.real
    rdtype = x.dtype
    dtype = (torch.complex128 if rdtype == torch.float64 else torch.complex64) if cplx else rdtype
    if cost not in ("ce", "mse"):
        raise UnknownName("cost", cost, ["ce", "mse"])
    target = None
    if beta != 0:
        if y is None:
            raise InputError("y", "missing for a nudged phase (beta != 0)", "the batch's labels or targets")
        target = targets(y, net.sizes[-1], cost, batch, rdtype).to(x.device)
    s = _check_state(net, state, batch, dtype)
    kind = resolve_backend(backend, x.device, cplx)
    out, res_t = run_phase(net, x, s, beta, cost, target, steps, kind, update, precision)
    res = float(res_t)
    if tol is not None and not res <= tol:
        raise NotConverged(res, float(tol), steps, "the nudged phase" if beta != 0 else "the free phase")
    return out, res


def run_phase(net: EqPropNet, x: Tensor, s: list[Tensor], beta: complex | float, cost: str, target: Tensor | None,
              steps: int, kind: str, update: str, precision: str) -> tuple[list[Tensor], Tensor]:
    """One phase on already checked input (x of the net's dtype, `s` in the phase's dtype, `target` the
    (batch, n_out) real target or None, `kind` a resolved backend): (states, residual as a 0-d device
    tensor, so a caller running several phases synchronises with the device once)."""
    with torch.no_grad():
        if kind == "torch":
            dtype = s[0].dtype
            c = Couplings(net, x, dtype)
            return torch_settle(c, s, beta, cost, target.to(dtype) if target is not None else None, steps, update)
        from kernels.eqprop import settle_kernel

        weights = [lin.weight.detach() for lin in net.layers]
        biases = [lin.bias.detach() for lin in net.layers]
        skips = [net.skip(k) for k in range(net.n_states)]
        return settle_kernel(kind, x, weights, biases, skips, s, float(beta.real if isinstance(beta, complex) else beta),
                             cost, target, steps, update, net.activation, precision)


def settle(net: EqPropNet, x: Tensor, *, y: Tensor | None = None, beta: complex | float = 0.0, cost: str = "ce",
           steps: int = 30, state: Sequence[Tensor] | None = None, backend: str = "auto", tol: float | None = None,
           update: str = "sync", precision: str = "fp32") -> list[Tensor]:
    """The states s_1..s_L after `steps` sweeps from `state` (zeros by default), nudged by `beta` towards
    `y` under `cost` when beta != 0 (complex beta: complex states, torch only). Raises NotConverged
    (an InputError) when `tol` is given and the last sweep changed some unit by more than it."""
    return settle_residual(net, x, y=y, beta=beta, cost=cost, steps=steps, state=state, backend=backend, tol=tol,
                           update=update, precision=precision)[0]
