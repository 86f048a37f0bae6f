"""EqProp as a trainer model: `eqprop_mlp` (trained by Equilibrium Propagation) and `eqprop_bp` (its
backprop twin: the same network trained by backpropagation through the settling loop).

    model:
      name: eqprop_mlp          # or eqprop_bp
      cfg: {sizes: [64, 128, 10], beta: 0.5, mode: symmetric, cost: ce, steps_free: 30, steps_nudged: 10}

The trainer (optimizer, schedule, grad clip, checkpoints, exact resume, DDP / FSDP2) stays unchanged:
`forward(batch, step)` settles and estimates the gradient under no_grad (actors.trainer.eqprop
`ep_gradients`, or `bptt_gradients` for the twin), then returns a surrogate loss

    loss = cost.detach() + S - S.detach(),   S = sum_p (p * g_p.detach()).sum()

whose value is the mean cost at the free fixed point (what metrics.jsonl and loss.png show) and whose
autograd gradient is exactly g (dS/dp = g_p), so `loss.backward()` hands the trainer EP's gradient and
every strategy (DDP's all-reduce, FSDP2's reduce-scatter) averages it over ranks like any gradient.
The batch is the shards of actors.trainer.eqprop.data: {"x": float [B, D], "y": int64 [B]}. Metrics:
loss (= cost), accuracy (of the free phase's output on the batch), residual_free / residual_nudged.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from actors.common.errors import InputError
from actors.trainer.registry import register_model

__all__ = ["EqPropModel", "accuracy", "surrogate_loss"]

_KEYS = ("sizes", "activation", "residual", "seed", "beta", "mode", "cost", "steps_free", "steps_nudged", "n_points",
         "backend", "update", "trainer")


def surrogate_loss(params: list[tuple[str, nn.Parameter]], grads: dict[str, Tensor], value: Tensor) -> Tensor:
    """A scalar equal to `value` whose gradient w.r.t. each parameter p is grads[name] (exactly)."""
    s = sum((p * grads[name].detach().to(p.dtype)).sum() for name, p in params)
    return value.detach().to(s.dtype) + (s - s.detach())


class EqPropModel(nn.Module):
    """The trainer's wrapper of an EqPropNet: `trainer="ep"` (EqProp) or `"bptt"` (backprop through the
    `steps_free` settling sweeps, the comparison's twin with the same architecture and free phase)."""

    def __init__(self, sizes: list[int] | tuple[int, ...] = (64, 128, 10), activation: str = "hardsigmoid",
                 residual: bool = False, seed: int = 0, beta: float = 0.5, mode: str = "symmetric",
                 cost: str = "ce", steps_free: int = 30, steps_nudged: int = 10, n_points: int = 4,
                 backend: str = "auto", update: str = "sync", trainer: str = "ep"):
        super().__init__()
        from actors.trainer.eqprop.energy import EqPropNet

        if trainer not in ("ep", "bptt"):
            raise InputError("model.cfg.trainer", f"{trainer!r}", "ep or bptt")
        self.net = EqPropNet(list(sizes), activation=activation, residual=residual, seed=int(seed))
        self.beta, self.mode, self.cost = float(beta), str(mode), str(cost)
        self.steps_free, self.steps_nudged, self.n_points = int(steps_free), int(steps_nudged), int(n_points)
        self.backend, self.update, self.trainer = str(backend), str(update), str(trainer)

    def _xy(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        if "x" not in batch or "y" not in batch:
            raise InputError("data", f"the batch has fields {sorted(batch)}", "x (float [D]) and y (int64 label)")
        x = batch["x"].reshape(batch["x"].shape[0], -1)
        if x.shape[1] != self.net.sizes[0]:
            raise InputError("model.cfg.sizes", f"the data has {x.shape[1]} features, sizes[0] is {self.net.sizes[0]}",
                             f"sizes[0] = {x.shape[1]}")
        return x, batch["y"].reshape(-1).long()

    def forward(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        from actors.trainer.eqprop import bptt_gradients, ep_gradients, settle

        x, y = self._xy(batch)
        x = self.net.check_input(x)
        params = list(self.net.named_parameters())
        if self.trainer == "ep":
            grads, st = ep_gradients(self.net, x, y, beta=self.beta, mode=self.mode, cost=self.cost,
                                     steps_free=self.steps_free, steps_nudged=self.steps_nudged,
                                     n_points=self.n_points, backend=self.backend, update=self.update)
            cost, acc = st["cost"], st["accuracy"]
            extra = {"residual_free": st["residual_free"], "residual_nudged": st["residual_nudged"]}
        else:
            grads = bptt_gradients(self.net, x, y, cost=self.cost, steps=self.steps_free, update=self.update)
            with torch.no_grad():   # the same unrolled free phase (zero start, torch sweeps) for the metrics
                out = settle(self.net, x, steps=self.steps_free, backend="torch", update=self.update)[-1]
                from actors.trainer.eqprop.energy import cost_value, targets

                cost = float(cost_value(self.cost, out, targets(y, self.net.sizes[-1], self.cost, x.shape[0], x.dtype)))
                acc = float((out.argmax(dim=1) == y).float().mean())
            extra = {}
        dev = x.device
        loss = surrogate_loss(params, grads, torch.tensor(cost, device=dev))
        out = {"loss": loss, "accuracy": torch.tensor(acc, device=dev)}
        out.update({k: torch.tensor(float(v), device=dev) for k, v in extra.items()})
        return out

    @torch.no_grad()
    def predict(self, x: Tensor, *, steps: int | None = None, backend: str | None = None) -> Tensor:
        """Class predictions: argmax of the output layer after a free phase."""
        from actors.trainer.eqprop import predict

        x = self.net.check_input(x.reshape(x.shape[0], -1))
        out = predict(self.net, x, steps=steps or self.steps_free, backend=backend or self.backend, update=self.update)
        return out.argmax(dim=1)


def accuracy(model: EqPropModel, X: np.ndarray | Tensor, y: np.ndarray | Tensor, *, batch: int = 1024,
             steps: int | None = None) -> float:
    """Test accuracy of `model` on (X, y), in batches of `batch`."""
    X = torch.as_tensor(np.asarray(X, np.float32)) if not isinstance(X, Tensor) else X.float()
    y = torch.as_tensor(np.asarray(y)).long() if not isinstance(y, Tensor) else y.long()
    p = next(model.parameters())
    hits = 0
    for i in range(0, len(y), batch):
        pred = model.predict(X[i:i + batch].to(p.device), steps=steps)
        hits += int((pred.cpu() == y[i:i + batch]).sum())
    return hits / max(1, len(y))


def _build(cfg: dict[str, Any], trainer: str) -> EqPropModel:
    unknown = sorted(set(cfg) - set(_KEYS))
    if unknown:
        raise InputError(f"model.cfg.{unknown[0]}", "is not a field of the EqProp model", ", ".join(_KEYS))
    cfg = dict(cfg)
    cfg.setdefault("trainer", trainer)
    return EqPropModel(**cfg)


@register_model("eqprop_mlp")
def _eqprop_mlp(cfg: dict[str, Any]) -> nn.Module:
    return _build(cfg, "ep")


@register_model("eqprop_bp")
def _eqprop_bp(cfg: dict[str, Any]) -> nn.Module:
    return _build(cfg, "bptt")
