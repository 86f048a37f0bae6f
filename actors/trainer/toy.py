"""Tiny registered models for tests and the CPU benchmark (the real models live in actors.trainer.models).

- "mlp_regression": x[B, d_in] -> MLP (tanh, optional dropout) -> y[B, d_out], loss = mean squared error.
  With `hidden: []` and `bias: false` it is linear least squares (the engine tests compare it with a
  float64 numpy AdamW and the lstsq solution).
- "gru_regression": x[B, T, d_in] -> GRU -> linear -> y[B, T, d_out], MSE; `fsdp_units()` = its layers.

Both take the batch as {"x": ..., "y": ...} and return {"loss", "mse"} (and "tokens" for throughput).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from actors.trainer.registry import register_model

__all__ = ["GRURegression", "MLPRegression"]


class MLPRegression(nn.Module):
    def __init__(self, d_in: int = 8, d_out: int = 1, hidden: list[int] | tuple[int, ...] = (32,), bias: bool = True,
                 dropout: float = 0.0):
        super().__init__()
        dims = [int(d_in), *[int(h) for h in hidden], int(d_out)]
        layers: list[nn.Module] = []
        for i in range(len(dims) - 1):
            layers.append(nn.Linear(dims[i], dims[i + 1], bias=bias))
            if i < len(dims) - 2:
                layers.append(nn.Tanh())
                if dropout:
                    layers.append(nn.Dropout(dropout))   # draws from the torch RNG: resume must restore it
        self.blocks = nn.ModuleList(layers)

    def fsdp_units(self) -> list[nn.Module]:
        return [m for m in self.blocks if isinstance(m, nn.Linear)]

    def forward(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        h = batch["x"]
        for m in self.blocks:
            h = m(h)
        mse = ((h - batch["y"]) ** 2).mean()
        return {"loss": mse, "mse": mse.detach()}


class GRURegression(nn.Module):
    def __init__(self, d_in: int = 4, d_out: int = 2, hidden: int = 32, layers: int = 1):
        super().__init__()
        self.grus = nn.ModuleList(nn.GRU(d_in if i == 0 else hidden, hidden, batch_first=True) for i in range(layers))
        self.head = nn.Linear(hidden, d_out)

    def fsdp_units(self) -> list[nn.Module]:
        return list(self.grus)

    def forward(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        h = batch["x"]
        for gru in self.grus:
            h, _ = gru(h)
        mse = ((self.head(h) - batch["y"]) ** 2).mean()
        return {"loss": mse, "mse": mse.detach()}


@register_model("mlp_regression")
def _mlp(cfg: dict[str, Any]) -> nn.Module:
    return MLPRegression(**cfg)


@register_model("gru_regression")
def _gru(cfg: dict[str, Any]) -> nn.Module:
    return GRURegression(**cfg)
