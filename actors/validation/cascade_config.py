"""The cascade's settings: the ladder of rungs (models of growing capacity) and how it is climbed.

configs/validation/cascade*.yaml are CascadeConfig documents. `parallel`, `num_cpus` and `num_gpus`
only matter when the rungs run as Ray tasks (actors/validation/pool.py); in process they are ignored.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from actors.common.config import Strict
from actors.validation.config import SEED_MAX

__all__ = ["CascadeConfig", "CascadeTask", "DeviceName", "RungKind", "RungSpec", "default_ladder"]

RungKind = Literal["linear", "hgb", "mlp"]
CascadeTask = Literal["auto", "classification", "regression"]
DeviceName = Literal["cpu", "cuda", "auto"]


class RungSpec(Strict):
    """One model of the ladder. linear: `c` = inverse regularisation; hgb: `depth` (None = unlimited),
    `iterations`; mlp: `width` of each of `layers` hidden layers."""

    kind: RungKind
    c: float = Field(1.0, gt=0, le=1e6)
    depth: int | None = Field(None, ge=1, le=64)
    iterations: int = Field(100, ge=1, le=10_000)
    width: int = Field(32, ge=1, le=8_192)
    layers: int = Field(2, ge=1, le=8)

    @property
    def name(self) -> str:
        if self.kind == "linear":
            return f"linear(C={self.c:g})"
        if self.kind == "hgb":
            return f"hgb(depth={self.depth if self.depth else 'inf'},iter={self.iterations})"
        return f"mlp({self.layers}x{self.width})"


def default_ladder() -> tuple[RungSpec, ...]:
    """18 rungs: 3 linear (less and less regularised), 7 gradient boosting, 8 MLPs (width 8 .. 1024)."""
    lin = [RungSpec(kind="linear", c=c) for c in (0.01, 0.1, 1.0)]
    hgb = [RungSpec(kind="hgb", depth=d, iterations=i)
           for d, i in ((1, 25), (2, 50), (2, 100), (3, 100), (4, 200), (6, 200), (None, 300))]
    mlp = [RungSpec(kind="mlp", width=w) for w in (8, 16, 32, 64, 128, 256, 512, 1024)]
    return tuple(lin + hgb + mlp)


class CascadeConfig(Strict):
    """The ladder, the early stopping of the climb and of each MLP, splits and seeds."""

    rungs: tuple[RungSpec, ...] = Field(default_factory=default_ladder, min_length=1, max_length=200)
    task: CascadeTask = "auto"                         # auto: categorical label -> classes
    patience: int = Field(4, ge=1, le=200)             # rungs without utility gain before the climb stops
    min_improvement: float = Field(0.0, ge=0, le=1)    # a gain must exceed this to count
    holdout: float = Field(0.25, gt=0, lt=0.9)         # synthetic rows held out (learnability)
    cv_folds: int = Field(5, ge=2, le=20)              # folds for the out-of-sample probabilities
    oof_with_real: bool = True                         # out-of-fold models also fit on the real rows
    mlp_epochs: int = Field(200, ge=1, le=100_000)
    mlp_patience: int = Field(10, ge=1, le=10_000)     # epochs without validation-loss gain
    mlp_batch: int = Field(128, ge=1, le=1_000_000)
    mlp_lr: float = Field(1e-3, gt=0, le=1)
    mlp_validation: float = Field(0.15, gt=0, lt=0.9)  # share of the training rows for MLP early stopping
    parallel: int = Field(2, ge=1, le=1_024)           # rungs in flight as Ray tasks
    num_cpus: float = Field(1.0, gt=0)                 # per Ray task
    num_gpus: float = Field(0, ge=0)                   # per Ray task of an MLP rung (or its folds)
    device: DeviceName = "cpu"                         # where MLPs train; auto = cuda when visible
    seed: int = Field(0, ge=0, le=SEED_MAX - 10_000)   # + rung / fold offsets
