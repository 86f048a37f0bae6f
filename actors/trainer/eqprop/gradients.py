"""EP gradients from the phase contrast, and the two references they are tested against.

    grads, stats = ep_gradients(net, x, y, beta=0.1, mode="symmetric")   # {name: tensor}, {"residual_free": ...}
    ref = bptt_gradients(net, x, y, steps=200)                            # backprop through the settling loop
    ref2 = implicit_gradients(net, x, y)                                  # adjoint at the fixed point (DEQ-style)

With g(beta) = dF/dtheta at the beta-nudged fixed point (energy.py: dF/dW_j = -mean s_{j+1} s_j^T,
dF/db_j = -mean s_{j+1}), the loss gradient is g'(0). The estimators:
- one_sided:   (g(beta) - g(0)) / beta                      error O(beta)
- symmetric:   (g(beta) - g(-beta)) / (2 beta)              error O(beta^2)  (Laborieux et al. 2021)
- holomorphic: (1 / (N |beta|)) Re sum_t g(beta_t) e^{-i phi_t}, beta_t = |beta| e^{i phi_t},
               phi_t = 2 pi t / N: the first Fourier coefficient of g on the circle, i.e. the Cauchy
               integral of g'(0) by the N-point trapezoid rule; error O(|beta|^N) (Laborieux & Zenke 2022).
Every nudged phase starts from the free fixed point; all phases run under torch.no_grad and the
estimators keep one running sum, so memory does not grow with the steps or with N.

bptt_gradients backpropagates through `steps` unrolled sweeps from zero states (memory linear in steps).
implicit_gradients settles without a graph, then solves the adjoint system (I - J^T) lam = dC/ds at the
fixed point s = f(s) by fixed-point iteration of vector-Jacobian products (the DEQ implicit gradient;
memory constant in steps) and returns lam^T df/dtheta.
"""
from __future__ import annotations

import cmath
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from actors.common.errors import InputError, UnknownName
from actors.trainer.eqprop.energy import EqPropNet, cost_value, targets
from actors.trainer.eqprop.settle import (
    Couplings,
    NotConverged,
    check_beta,
    check_steps,
    check_update,
    settle_residual,
    sweep,
)

__all__ = ["MODES", "bptt_gradients", "ep_gradients", "implicit_gradients", "predict"]

MODES: tuple[str, ...] = ("one_sided", "symmetric", "holomorphic")
MAX_POINTS = 64


def _contrast(net: EqPropNet, x: Tensor, states: Sequence[Tensor]) -> list[Tensor]:
    """[dF/dW_j, dF/db_j for each layer] at `states`, batch-averaged (complex states give complex values)."""
    s = [x.to(states[0].dtype), *states]
    n = x.shape[0]
    out = []
    for j in range(len(net.layers)):
        out.append(-(s[j + 1].transpose(0, 1) @ s[j]) / n)
        out.append(-s[j + 1].mean(dim=0))
    return out


def _names(net: EqPropNet) -> list[str]:
    return [name for name, _ in net.named_parameters()]


def ep_gradients(net: EqPropNet, x: Tensor, y: Tensor, *, beta: float = 0.1, mode: str = "symmetric",
                 cost: str = "ce", steps_free: int = 30, steps_nudged: int = 10, n_points: int = 4,
                 backend: str = "auto", update: str = "sync", tol: float | None = None,
                 precision: str = "fp32") -> tuple[dict[str, Tensor], dict[str, float]]:
    """The EP estimate of d mean-loss / d parameter, keyed like net.named_parameters(), and stats:
    residual_free / residual_nudged (largest last-sweep change, nudged = the worst nudged phase), cost
    (the mean cost at the free fixed point), accuracy (argmax of s_L vs integer labels, else nan),
    phases (the number of nudged phases run). `tol` applies to every phase (NotConverged)."""
    if mode not in MODES:
        raise UnknownName("mode", mode, list(MODES))
    if isinstance(beta, complex) or isinstance(beta, bool) or not isinstance(beta, (int, float)) or beta <= 0:
        raise InputError("beta", f"{beta!r}", "a real number with 0 < beta <= 10 (the circle's radius for holomorphic)")
    check_beta(beta, nudged=True)
    check_steps(steps_free, "steps_free")
    check_steps(steps_nudged, "steps_nudged")
    check_update(update)
    if mode == "holomorphic" and (isinstance(n_points, bool) or not isinstance(n_points, int)
                                  or not 2 <= n_points <= MAX_POINTS):
        raise InputError("n_points", f"{n_points!r}", f"an integer in [2, {MAX_POINTS}]")
    x = net.check_input(x)
    if y is None:
        raise InputError("y", "missing", "the batch's labels or targets")
    target = targets(y, net.sizes[-1], cost, x.shape[0], x.dtype)
    kw = dict(cost=cost, backend=backend, tol=tol, update=update, precision=precision)
    with torch.no_grad():
        free, r_free = settle_residual(net, x, steps=steps_free, **kw)
        g0 = _contrast(net, x, free)
        r_nudged = 0.0
        if mode == "holomorphic":
            acc = [torch.zeros_like(g, dtype=torch.complex128 if g.dtype == torch.float64 else torch.complex64)
                   for g in g0]
            for t in range(n_points):
                phase = cmath.exp(2j * math.pi * t / n_points)
                b = beta * phase
                if abs(b.imag) < 1e-15 * beta:
                    b = b.real
                nudged, r = settle_residual(net, x, y=y, beta=b, steps=steps_nudged, state=free, **kw)
                r_nudged = max(r_nudged, r)
                for a, g in zip(acc, _contrast(net, x, nudged)):
                    a += g * phase.conjugate()
            est = [(a / (n_points * beta)).real for a in acc]
            phases = n_points
        else:
            plus, r = settle_residual(net, x, y=y, beta=beta, steps=steps_nudged, state=free, **kw)
            r_nudged = r
            gp = _contrast(net, x, plus)
            if mode == "one_sided":
                est = [(a - b) / beta for a, b in zip(gp, g0)]
                phases = 1
            else:
                minus, r = settle_residual(net, x, y=y, beta=-beta, steps=steps_nudged, state=free, **kw)
                r_nudged = max(r_nudged, r)
                est = [(a - b) / (2 * beta) for a, b in zip(gp, _contrast(net, x, minus))]
                phases = 2
        out = free[-1]
        c = float(cost_value(cost, out.float() if out.dtype == torch.bfloat16 else out, target.to(out.dtype)))
        acc_v = (float((out.argmax(dim=1) == y).float().mean()) if y.dim() == 1 and not y.is_floating_point()
                 else float("nan"))
    grads = {name: g.to(p.dtype) for (name, p), g in zip(net.named_parameters(), est)}
    stats = {"residual_free": r_free, "residual_nudged": r_nudged, "cost": c, "accuracy": acc_v,
             "phases": float(phases)}
    return grads, stats


def bptt_gradients(net: EqPropNet, x: Tensor, y: Tensor, *, cost: str = "ce", steps: int = 30,
                   update: str = "sync", state: Sequence[Tensor] | None = None) -> dict[str, Tensor]:
    """The reference: autograd through `steps` unrolled torch sweeps from zero states (or `state`) of
    the free phase, loss = the mean cost of s_L. Memory grows linearly with `steps`."""
    check_steps(steps)
    check_update(update)
    x = net.check_input(x)
    target = targets(y, net.sizes[-1], cost, x.shape[0], x.dtype)
    params = list(net.parameters())
    with torch.enable_grad():
        c = _live_couplings(net, x)
        s = net.zero_states(x.shape[0]) if state is None else [t.detach() for t in state]
        for _ in range(steps):
            s = sweep(c, s, 0.0, cost, None, update)
        loss = cost_value(cost, s[-1], target)
        grads = torch.autograd.grad(loss, params)
    return dict(zip(_names(net), grads))


def _live_couplings(net: EqPropNet, x: Tensor) -> Couplings:
    """Couplings that keep the autograd graph to the parameters (for bptt / implicit)."""
    c = Couplings.__new__(Couplings)
    c.act = net.activation
    c.w = [lin.weight for lin in net.layers]
    c.b = [lin.bias for lin in net.layers]
    c.skip = [net.skip(k) for k in range(net.n_states)]
    c.drive = torch.nn.functional.linear(x, c.w[0], c.b[0])
    c.dtype = x.dtype
    return c


def implicit_gradients(net: EqPropNet, x: Tensor, y: Tensor, *, cost: str = "ce", steps: int = 200,
                       adjoint_steps: int = 500, tol: float | None = None, backend: str = "torch") -> dict[str, Tensor]:
    """The implicit (DEQ) gradient at the free fixed point: settle without a graph, solve
    lam = J_s^T lam + dC/ds by iteration (NotConverged naming the adjoint's residual if it does not
    reach `tol` relative to |dC/ds| within `adjoint_steps`), return lam^T J_theta. Memory is constant in
    `steps`; it equals EP's beta -> 0 limit (the energy's Hessian is symmetric). `tol` defaults to 1e-10
    in float64 and 1e-5 otherwise."""
    check_steps(adjoint_steps, "adjoint_steps")
    x = net.check_input(x)
    if tol is None:
        tol = 1e-10 if x.dtype == torch.float64 else 1e-5
    elif isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol > 0:
        raise InputError("tol", f"{tol!r}", "a number > 0 or None")
    target = targets(y, net.sizes[-1], cost, x.shape[0], x.dtype)
    star, _ = settle_residual(net, x, cost=cost, steps=steps, backend=backend)
    params = list(net.parameters())
    with torch.enable_grad():
        s = [t.detach().requires_grad_(True) for t in star]
        c = _live_couplings(net, x)
        f = sweep(c, s, 0.0, cost, None, "sync")
        loss = cost_value(cost, s[-1], target)
        dc = torch.autograd.grad(loss, s[-1])[0]
        rhs = [torch.zeros_like(t) for t in s[:-1]] + [dc]
        lam = [r.clone() for r in rhs]
        scale = max(float(dc.abs().max()), 1e-30)
        res = float("inf")
        for _ in range(adjoint_steps):
            jt = torch.autograd.grad(f, s, lam, retain_graph=True, allow_unused=True)
            new = [r + (j if j is not None else 0) for r, j in zip(rhs, jt)]
            res = max(float((a - b).abs().max()) for a, b in zip(new, lam)) / scale
            lam = new
            if res <= tol:
                break
        if not res <= tol:
            raise NotConverged(res, tol, adjoint_steps, "the adjoint solve")
        grads = torch.autograd.grad(f, params, lam, allow_unused=True)
    return {name: (g if g is not None else torch.zeros_like(p))
            for (name, p), g in zip(net.named_parameters(), grads)}


def predict(net: EqPropNet, x: Tensor, *, steps: int = 30, backend: str = "auto", update: str = "sync",
            precision: str = "fp32") -> Tensor:
    """The output layer state s_L (the logits for cost "ce") after a free phase of `steps` sweeps."""
    return settle_residual(net, x, steps=steps, backend=backend, update=update, precision=precision)[0][-1]
