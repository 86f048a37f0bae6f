"""Deep signal probes of the EqProp energy: how far a nudge of the output reaches into a deep network.

    from actors.trainer.eqprop.probes import ProbeSpec, signal_profile, run_probes
    prof = signal_profile(ProbeSpec(depth=1000, width=32, residual=True, skip_gain=3.0))
    prof["signal"]          # per state layer k = 1..L: rms(s_k^clamped - s_k^free) / rms(delta)
    summary = run_probes(out_dir)   # depths 10/100/500/1000, plain and residual: probes.json + probes.png

The network is the engine's (actors.trainer.eqprop.energy.EqPropNet, uniform width, its weights and
seeded init): s_k = act(a_k), a_k = C_{k-1} s_{k-1} + b_k + C_k^T s_{k+1}, where C_j = W_j plus
`skip_gain` * I between equal-width state layers when residual (the engine's residual coupling is
skip_gain = 1). The probe:

1. free phase: the exact fixed point s* for input x (Newton's method; each step is one block-tridiagonal
   solve in float64, O(L width^3) per sample, so depth 1000 takes a second on the CPU — the settling
   loop would need O(L^2) sweeps to carry a signal through a near-critical chain);
2. perturb the output: clamp s_L = s_L* + 0.1 N(0, 1) and solve the hidden layers again (Newton);
3. signal_k = rms over the batch and units of (s_k - s_k*) / rms of the perturbation.

Closed forms the tests use: in the linear region of hardsigmoid (slope 1/6) with W = 0 and a skip
coupling g, the response is delta * sinh(kappa k) / sinh(kappa L) with cosh(kappa) = 3 / g; with weights,
it is one dense linear solve. What is achievable: with the input clamped, the linearised response of
a symmetric chain obeys a discrete maximum principle once the coupling is critical (g = 3, effective
coupling 1/2): signal_k = k / L, the harmonic profile, so at depth 1000 every layer k >= 10 keeps >= 1%
but the deepest, k = 1, only 1/L = 0.1%; weaker couplings decay exponentially (the engine's residual
g = 1: a factor ~0.17 per layer).
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from actors.common.config import Strict
from actors.common.errors import InputError

__all__ = ["ProbeSpec", "block_tridiag_solve", "fixed_point", "probe_net", "run_probes", "signal_profile"]

_SLOPE = {"hardsigmoid": 1.0 / 6.0}


class ProbeSpec(Strict):
    """One probe: a uniform-width EqPropNet of `depth` weight layers (depth state layers)."""

    depth: int = Field(10, ge=2, le=4096)
    width: int = Field(32, ge=1, le=1024)
    residual: bool = False
    skip_gain: float = Field(1.0, ge=0.0, le=6.0)   # identity coupling when residual (engine: 1)
    weight_scale: float = Field(1.0, ge=0.0, le=10.0)   # multiplies the engine's init of layers 1.. (W and b)
    center: bool = False   # biases -= skip_gain/2 per skip neighbour: s = 1/2 is the chain's operating point
    batch: int = Field(8, ge=1, le=1024)
    perturbation: float = Field(0.1, gt=0, le=10.0)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    newton_iters: int = Field(60, ge=1, le=1000)
    tol: float = Field(1e-10, gt=0, le=1e-2)


def probe_net(spec: ProbeSpec):
    """The engine's EqPropNet([width] * (depth + 1)), weights and biases past the input layer times
    weight_scale (float64; a bias in a critical chain is a source whose response grows as L^2);
    `center` shifts each bias by -skip_gain/2 per skip neighbour, so that with W = 0 the state 1/2 (the
    middle of hardsigmoid's linear range) is the fixed point of a critical (skip_gain 3) chain."""
    from actors.trainer.eqprop.energy import EqPropNet

    net = EqPropNet([spec.width] * (spec.depth + 1), activation="hardsigmoid", residual=spec.residual,
                    seed=spec.seed).double()
    with torch.no_grad():
        if spec.weight_scale != 1.0:
            for lin in net.layers[1:]:
                lin.weight.mul_(spec.weight_scale)
                lin.bias.mul_(spec.weight_scale)
        if spec.center and spec.residual:
            for k in range(1, len(net.layers) + 1):   # state s_k: skips to s_{k-1} (k >= 2) and s_{k+1}
                n_skip = int(k >= 2 and net.skip(k - 2)) + int(k < len(net.layers) and net.skip(k - 1))
                net.layers[k - 1].bias.sub_(spec.skip_gain * 0.5 * n_skip)
    return net


def _couplings(net, skip_gain: float) -> list[Tensor]:
    """C_j (n_{j+1} x n_j): W_j plus skip_gain * I where the engine joins layers j and j+1."""
    out = []
    for j, lin in enumerate(net.layers):
        c = lin.weight.detach().double().clone()
        if j >= 1 and net.skip(j - 1):
            c = c + skip_gain * torch.eye(c.shape[0], dtype=c.dtype)
        out.append(c)
    return out


def block_tridiag_solve(lower: list[Tensor | None], diag: list[Tensor], upper: list[Tensor | None],
                        rhs: list[Tensor]) -> list[Tensor]:
    """Solve the batched block-tridiagonal system  lower[k] x[k-1] + diag[k] x[k] + upper[k] x[k+1] = rhs[k]
    (blocks (batch, n_k, n_j), rhs (batch, n_k)) by block elimination: O(K n^3) instead of a dense
    O((K n)^3) solve. lower[0] and upper[-1] are ignored."""
    K = len(diag)
    dp: list[Tensor] = [diag[0]]
    rp: list[Tensor] = [rhs[0]]
    for k in range(1, K):
        m = torch.linalg.solve(dp[k - 1].transpose(1, 2), lower[k].transpose(1, 2)).transpose(1, 2)   # L_k D'^-1
        dp.append(diag[k] - m @ upper[k - 1])
        rp.append(rhs[k] - (m @ rp[k - 1].unsqueeze(-1)).squeeze(-1))
    x: list[Tensor] = [None] * K   # type: ignore[list-item]
    x[K - 1] = torch.linalg.solve(dp[K - 1], rp[K - 1])
    for k in range(K - 2, -1, -1):
        x[k] = torch.linalg.solve(dp[k], rp[k] - (upper[k] @ x[k + 1].unsqueeze(-1)).squeeze(-1))
    return x


def _act(z: Tensor) -> tuple[Tensor, Tensor]:
    """hardsigmoid and its derivative (1/6 inside (-3, 3), 0 outside)."""
    return torch.nn.functional.hardsigmoid(z), ((z > -3) & (z < 3)).to(z.dtype) * _SLOPE["hardsigmoid"]


def _pre(C: list[Tensor], b: list[Tensor], x: Tensor, s: list[Tensor]) -> list[Tensor]:
    full = [x, *s]
    L = len(s)
    out = []
    for k in range(1, L + 1):
        a = full[k - 1] @ C[k - 1].T + b[k - 1]
        if k < L:
            a = a + full[k + 1] @ C[k]
        out.append(a)
    return out


def fixed_point(net, x: Tensor, *, skip_gain: float = 1.0, clamp_output: Tensor | None = None,
                start: list[Tensor] | None = None, iters: int = 60, tol: float = 1e-10) -> tuple[list[Tensor], dict]:
    """The exact fixed point s_k = act(a_k) of `net` (hardsigmoid) for input x by Newton's method in float64;
    with `clamp_output`, s_L is held at it and only the hidden layers solve. Returns (states, info) with
    info = {iterations, residual}. A Newton iteration that stops improving raises InputError naming
    `settle` with the residual (no probe is computed from an unsettled state)."""
    if net.activation != "hardsigmoid":
        raise InputError("activation", f"the probe's Newton solver takes hardsigmoid, not {net.activation!r}",
                         "hardsigmoid")
    C = _couplings(net, skip_gain)
    b = [lin.bias.detach().double() for lin in net.layers]
    x = x.double()
    B = x.shape[0]
    L = len(C)
    if start is None:   # the feedforward pass
        s, h = [], x
        for k in range(L):
            h = _act(h @ C[k].T + b[k])[0]
            s.append(h)
    else:
        s = [t.double().clone() for t in start]
    if clamp_output is not None:
        s[-1] = clamp_output.double().clone()
    n_free = L - 1 if clamp_output is not None else L
    res = math.inf
    for it in range(1, iters + 1):
        pre = _pre(C, b, x, s)
        acts = [_act(a) for a in pre[:n_free]]
        F = [s[k] - acts[k][0] for k in range(n_free)]
        res = max(float(f.abs().max()) for f in F)
        if res <= tol:
            return s, {"iterations": it - 1, "residual": res}
        eye = [torch.eye(s[k].shape[1], dtype=x.dtype).expand(B, -1, -1) for k in range(n_free)]
        # unknown i is state s_{i+1}: dF_i/ds_i = -D_i C_i, dF_i/ds_{i+2} = -D_i C_{i+1}^T
        lower = [None] + [-acts[i][1].unsqueeze(-1) * C[i] for i in range(1, n_free)]
        upper = [-acts[i][1].unsqueeze(-1) * C[i + 1].T for i in range(n_free - 1)] + [None]
        delta = block_tridiag_solve(lower, eye, upper, [-f for f in F])
        for k in range(n_free):
            s[k] = s[k] + delta[k]
    pre = _pre(C, b, x, s)
    res = max(float((s[k] - _act(pre[k])[0]).abs().max()) for k in range(n_free))
    if res > max(tol, 1e-8):
        raise InputError("settle", f"Newton's method did not converge in {iters} iterations (residual {res:.3g})",
                         "a network whose fixed point Newton finds (smaller weights or skip_gain)")
    return s, {"iterations": iters, "residual": res}


def signal_profile(spec: ProbeSpec, net=None, x: Tensor | None = None) -> dict[str, Any]:
    """Per-layer signal of an output perturbation of `perturbation` * N(0, 1) (see the module docstring);
    `net` / `x` default to the spec's seeded EqPropNet and uniform [0, 1] inputs."""
    t0 = time.perf_counter()
    net = probe_net(spec) if net is None else net
    gen = torch.Generator().manual_seed(spec.seed + 1)
    if x is None:
        x = torch.rand(spec.batch, net.sizes[0], generator=gen, dtype=torch.float64)
    start = [torch.full((x.shape[0], n), 0.5, dtype=torch.float64) for n in net.sizes[1:]] if spec.center else None
    free, info_f = fixed_point(net, x, skip_gain=spec.skip_gain, start=start, iters=spec.newton_iters, tol=spec.tol)
    delta = spec.perturbation * torch.randn(free[-1].shape, generator=gen, dtype=torch.float64)
    clamped, info_c = fixed_point(net, x, skip_gain=spec.skip_gain, clamp_output=free[-1] + delta, start=free,
                                  iters=spec.newton_iters, tol=spec.tol)
    ref = float(delta.pow(2).mean().sqrt())
    signal = [float((c - f).pow(2).mean().sqrt()) / ref for c, f in zip(clamped, free)]
    saturated = float(np.mean([float(((a <= -3) | (a >= 3)).double().mean())
                               for a in _pre(_couplings(net, spec.skip_gain), [lin.bias.detach().double()
                                                                              for lin in net.layers], x.double(), free)]))
    one_pct = 0.01 * (1 - 1e-9)   # 1%, forgiving round-off (the harmonic profile hits it exactly at k = L / 100)
    first_below = next((k + 1 for k, v in enumerate(signal) if v < one_pct), None)
    return {"depth": spec.depth, "width": spec.width, "residual": spec.residual, "skip_gain": spec.skip_gain,
            "weight_scale": spec.weight_scale, "signal": signal, "signal_deepest": signal[0],
            "layers_above_1pct": int(sum(v >= one_pct for v in signal[:-1])), "hidden_layers": spec.depth - 1,
            "deepest_above_1pct": signal[0] >= one_pct, "first_layer_below_1pct": first_below,
            "saturated_fraction": saturated, "newton_free": info_f, "newton_clamped": info_c,
            "wall_s": time.perf_counter() - t0}


DEFAULT_VARIANTS: tuple[dict[str, Any], ...] = (
    {"label": "plain", "residual": False},
    {"label": "residual (engine, g=1)", "residual": True, "skip_gain": 1.0},
    {"label": "residual critical (g=3, W=0)", "residual": True, "skip_gain": 3.0, "weight_scale": 0.0, "center": True},
    {"label": "residual near-critical (g=2.9, W x0.05)", "residual": True, "skip_gain": 2.9, "weight_scale": 0.05,
     "center": True},
)


def run_probes(out: str | Path | None = None, *, depths: tuple[int, ...] = (10, 100, 500, 1000), width: int = 32,
               batch: int = 8, seed: int = 0, variants: tuple[dict[str, Any], ...] = DEFAULT_VARIANTS,
               sleep: Any = None) -> dict[str, Any]:
    """Every depth x variant; with `out`, writes probes.json and probes.png (signal vs layer, log scale).
    `sleep` (a SleepSpec) additionally probes each net after the sleep phase (actors.trainer.eqprop.sleep)."""
    rows = []
    for v in variants:
        label = v["label"]
        for d in depths:
            spec = ProbeSpec(depth=d, width=width, batch=batch, seed=seed,
                             **{k: val for k, val in v.items() if k != "label"})
            row = {"label": label, **signal_profile(spec)}
            if sleep is not None:
                from actors.trainer.eqprop.sleep import sleep_phase

                net = probe_net(spec)
                info = sleep_phase(net, sleep)
                after = signal_profile(spec, net=net)
                row["after_sleep"] = {k: after[k] for k in ("signal", "signal_deepest", "layers_above_1pct",
                                                           "newton_free", "saturated_fraction")}
                row["sleep"] = info
            rows.append(row)
    summary = {"depths": list(depths), "width": width, "batch": batch, "seed": seed, "rows": rows}
    if out is not None:
        from actors.common.storage import atomic_write_json

        out = Path(out)
        atomic_write_json(out / "probes.json", summary)
        plot_probes(summary, out / "probes.png")
    return summary


def plot_probes(summary: dict[str, Any], path: Path) -> Path:
    """Signal per layer (distance from the output on x, log signal on y), one panel per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from actors.common.storage import atomic_write_figure

    labels = list(dict.fromkeys(r["label"] for r in summary["rows"]))
    fig, axes = plt.subplots(1, len(labels), figsize=(5 * len(labels), 3.8), squeeze=False, sharey=True)
    for ax, label in zip(axes[0], labels):
        for r in (r for r in summary["rows"] if r["label"] == label):
            sig = np.maximum(np.asarray(r["signal"]), 1e-300)
            dist = np.arange(len(sig))[::-1]   # layer k = 1..L -> distance from the output L - k
            ax.semilogy(dist, sig, label=f"depth {r['depth']}")
            if "after_sleep" in r:
                ax.semilogy(dist, np.maximum(np.asarray(r["after_sleep"]["signal"]), 1e-300), "--",
                            label=f"depth {r['depth']} after sleep")
        ax.axhline(0.01, color="k", lw=0.8, ls=":")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("layers from the output")
        ax.set_ylim(1e-12, 2)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("signal (rms response / rms output nudge)")
    fig.tight_layout()
    atomic_write_figure(path, fig, dpi=110)
    plt.close(fig)
    return path
