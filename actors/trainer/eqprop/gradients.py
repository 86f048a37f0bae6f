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
    PRECISIONS,
    Couplings,
    NotConverged,
    check_beta,
    check_steps,
    check_update,
    resolve_backend,
    run_phase,
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
    if precision not in PRECISIONS:
        raise UnknownName("precision", precision, list(PRECISIONS))
    if tol is not None and (isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol > 0):
        raise InputError("tol", f"{tol!r}", "a number > 0 or None")
    x = net.check_input(x)
    if y is None:
        raise InputError("y", "missing", "the batch's labels or targets")
    target = targets(y, net.sizes[-1], cost, x.shape[0], x.dtype).to(x.device)
    kind = resolve_backend(backend, x.device, False)
    kind_c = resolve_backend(backend, x.device, True) if mode == "holomorphic" else kind
    cdtype = torch.complex128 if x.dtype == torch.float64 else torch.complex64

    def phase(b: complex | float, start: list[Tensor], steps: int, what: str) -> tuple[list[Tensor], Tensor]:
        cplx = isinstance(b, complex)
        st = [t.to(cdtype) for t in start] if cplx else start
        # holomorphic: every point of the circle (the real ones too) on the complex-capable backend, so the
        # Fourier sum mixes no precisions
        use = kind_c if cplx or (mode == "holomorphic" and b != 0) else kind
        out, r = run_phase(net, x, st, b, cost, target if b != 0 else None, steps, use, update, precision)
        if tol is not None and not float(r) <= tol:   # one device sync per phase only when a tolerance is set
            raise NotConverged(float(r), float(tol), steps, what)
        return out, r

    with torch.no_grad():
        free, r_free = phase(0.0, net.zero_states(x.shape[0]), steps_free, "the free phase")
        g0 = _contrast(net, x, free)
        if mode == "holomorphic":
            acc = [torch.zeros_like(g, dtype=cdtype) for g in g0]
            rs = []
            for t in range(n_points):
                turn = cmath.exp(2j * math.pi * t / n_points)
                b = beta * turn
                b = b.real if abs(b.imag) < 1e-15 * beta else b
                nudged, r = phase(b, free, steps_nudged, "a nudged phase")
                rs.append(r)
                for a, g in zip(acc, _contrast(net, x, nudged)):
                    a += g * turn.conjugate()
            est = [(a / (n_points * beta)).real for a in acc]
        else:
            plus, r = phase(beta, free, steps_nudged, "the nudged phase")
            rs = [r]
            gp = _contrast(net, x, plus)
            if mode == "one_sided":
                est = [(a - b) / beta for a, b in zip(gp, g0)]
            else:
                minus, r = phase(-beta, free, steps_nudged, "the negatively nudged phase")
                rs.append(r)
                est = [(a - b) / (2 * beta) for a, b in zip(gp, _contrast(net, x, minus))]
        out = free[-1].float() if free[-1].dtype in (torch.bfloat16, torch.float16) else free[-1]
        cost_t = cost_value(cost, out, target.to(out.dtype))
        labels = y.dim() == 1 and not y.is_floating_point()
        acc_t = (out.argmax(dim=1) == y.to(x.device)).double().mean() if labels else torch.zeros((), device=x.device)
        vals = torch.stack([r_free.double(), torch.stack(rs).max().double(), cost_t.double(), acc_t.double()]).tolist()
    grads = {name: g.to(p.dtype) for (name, p), g in zip(net.named_parameters(), est)}
    stats = {"residual_free": vals[0], "residual_nudged": vals[1], "cost": vals[2],
             "accuracy": vals[3] if labels else float("nan"), "phases": float(len(rs))}
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
