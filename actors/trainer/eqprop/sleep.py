"""A sleep phase for EqProp networks: free phases on noise input and an anti-Hebbian update.

    from actors.trainer.eqprop.sleep import SleepSpec, sleep_phase
    info = sleep_phase(net, SleepSpec(steps=100, lr=0.01))   # changes net's weights in place

Each of `steps` steps draws a batch of noise inputs (uniform in [0, 1], the range of the data; seeded),
settles the free phase (the engine's settle), and applies the anti-Hebbian update

    W_j -= lr * mean_b  s_{j+1} s_j^T          (s_0 = the noise input, s_k the settled states)

to every weight matrix (biases unchanged) — the negative of EqProp's Hebbian term dF/dW_j = -mean s_{j+1}
s_j^T, i.e. a step up the energy of the states the network falls into on its own ("unlearning" of
spurious attractors, Crick & Mitchison 1983; Hopfield, Feinstein & Palmer 1983). Its measured effect on
the deep probes and on accuracy is in `sleep_study` and docs/eqprop.md.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from pydantic import Field
from torch import Tensor

from actors.common.config import Strict

__all__ = ["SleepSpec", "anti_hebbian_update", "sleep_phase", "sleep_study"]


class SleepSpec(Strict):
    steps: int = Field(100, ge=1, le=100_000)
    lr: float = Field(0.01, gt=0, le=10.0)
    batch: int = Field(64, ge=1, le=65_536)
    settle_steps: int = Field(30, ge=1, le=100_000)
    seed: int = Field(0, ge=0, le=2**31 - 1)


@torch.no_grad()
def anti_hebbian_update(net, x: Tensor, states: list[Tensor], lr: float) -> list[Tensor]:
    """W_j -= lr * mean_b s_{j+1} s_j^T for every layer of `net` (s_0 = x); returns the applied changes."""
    s = [x.to(states[0].dtype), *states]
    n = x.shape[0]
    deltas = []
    for j, lin in enumerate(net.layers):
        d = -lr * (s[j + 1].transpose(0, 1) @ s[j]) / n
        lin.weight.add_(d.to(lin.weight.dtype))
        deltas.append(d)
    return deltas


def sleep_phase(net, spec: SleepSpec | None = None, *, backend: str = "torch") -> dict[str, Any]:
    """Run the sleep phase on `net` in place; returns the relative weight change and the free phases'
    last-sweep residuals (first and last step)."""
    from actors.trainer.eqprop import settle_residual

    spec = spec or SleepSpec()
    p = net.layers[0].weight
    gen = torch.Generator().manual_seed(spec.seed)
    before = [lin.weight.detach().clone() for lin in net.layers]
    residuals = []
    t0 = time.perf_counter()
    for _ in range(spec.steps):
        x = torch.rand(spec.batch, net.sizes[0], generator=gen, dtype=p.dtype).to(p.device)
        states, res = settle_residual(net, x, steps=spec.settle_steps, backend=backend)
        residuals.append(float(res))
        anti_hebbian_update(net, x, states, spec.lr)
    change = float(sum((lin.weight.detach() - b).pow(2).sum() for lin, b in zip(net.layers, before)).sqrt()
                   / sum(b.pow(2).sum() for b in before).sqrt())
    return {"steps": spec.steps, "lr": spec.lr, "relative_weight_change": change, "residual_first": residuals[0],
            "residual_last": residuals[-1], "wall_s": time.perf_counter() - t0}


def _settle_residual(net, x: Tensor, steps: int) -> float:
    from actors.trainer.eqprop import settle_residual

    return float(settle_residual(net, x, steps=steps, backend="torch")[1])


def sleep_study(out: str | Path | None = None, *, train_config: str | Path | None = None, data_dir: str | Path,
                probe_depths: tuple[int, ...] = (10, 100), spec: SleepSpec | None = None,
                log=print) -> dict[str, Any]:
    """The sleep phase's measured effect: (1) accuracy of an EqProp model trained by the trainer on
    `data_dir` (train/ and test/ shards) before and after sleep; (2) the deep probes (signal profile,
    free-phase residual after 30 sweeps, Newton iterations) of the plain and engine-residual probe nets
    before and after sleep. Writes sleep.json when `out` is given."""
    import copy

    from actors.common.storage import atomic_write_json
    from actors.trainer.eqprop.compare import train_and_evaluate
    from actors.trainer.eqprop.model import accuracy
    from actors.trainer.eqprop.probes import ProbeSpec, probe_net, signal_profile
    from actors.trainer.shards import ShardDataset

    spec = spec or SleepSpec()
    data_dir = Path(data_dir)
    run = train_and_evaluate(train_config or _default_config(data_dir), data_dir,
                             Path(out or "/tmp") / "sleep-train", name="eqprop_mlp", keep_model=True)
    model = run.pop("module")
    test = ShardDataset(data_dir / "test").load_all()
    asleep = copy.deepcopy(model)
    info = sleep_phase(asleep.net, spec)
    acc_after = accuracy(asleep, test["x"], test["y"])
    gen = torch.Generator().manual_seed(spec.seed + 7)
    xp = torch.rand(256, model.net.sizes[0], generator=gen)
    result: dict[str, Any] = {
        "accuracy": {"before": run["accuracy"], "after": acc_after, "sleep": info,
                     "free_residual_30_before": _settle_residual(model.net, xp, 30),
                     "free_residual_30_after": _settle_residual(asleep.net, xp, 30)},
        "probes": []}
    if log:
        log(f"sleep: accuracy {run['accuracy']:.4f} -> {acc_after:.4f}")
    for residual in (False, True):
        for d in probe_depths:
            ps = ProbeSpec(depth=d, residual=residual)
            net = probe_net(ps)
            xr = torch.rand(ps.batch, ps.width, generator=torch.Generator().manual_seed(ps.seed + 1), dtype=torch.float64)
            before = signal_profile(ps, net=net)
            res_b = _settle_residual(net, xr, 30)
            sinfo = sleep_phase(net, spec)
            after = signal_profile(ps, net=net)
            row = {"depth": d, "residual": residual, "sleep": sinfo,
                   "before": {"signal_deepest": before["signal_deepest"], "layers_above_1pct": before["layers_above_1pct"],
                              "signal_top5": before["signal"][-6:-1], "newton_iterations": before["newton_free"]["iterations"],
                              "saturated_fraction": before["saturated_fraction"], "free_residual_30": res_b},
                   "after": {"signal_deepest": after["signal_deepest"], "layers_above_1pct": after["layers_above_1pct"],
                             "signal_top5": after["signal"][-6:-1], "newton_iterations": after["newton_free"]["iterations"],
                             "saturated_fraction": after["saturated_fraction"],
                             "free_residual_30": _settle_residual(net, xr, 30)}}
            result["probes"].append(row)
            if log:
                log(f"sleep probe depth {d} residual={residual}: above 1% {row['before']['layers_above_1pct']} -> "
                    f"{row['after']['layers_above_1pct']}, free residual {res_b:.2e} -> {row['after']['free_residual_30']:.2e}")
    if out is not None:
        atomic_write_json(Path(out) / "sleep.json", result)
    return result


def _default_config(data_dir: Path) -> Path:
    import json

    from configs import preset

    meta = json.loads((data_dir / "train" / "index.json").read_text()).get("meta", {})
    return preset("train", "eqprop_mnist.yaml" if meta.get("dataset") == "mnist5k" else "eqprop_digits.yaml")
