"""The trainer's config (configs/train/*.yaml): model, optimizer, schedule, strategy, checkpoints.

Batch sizes are global: `batch_size` samples per step over all ranks (each of W ranks takes
batch_size / W), so a run's data order and loss curve do not depend on how many workers run it.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from actors.common.config import Strict, WorkerConfig
from actors.common.errors import InputError

__all__ = ["CheckpointSpec", "FailureInjection", "ModelSpec", "OptimizerSpec", "Precision", "SchedulerSpec",
           "Strategy", "TrainSpec"]

Strategy = Literal["ddp", "fsdp2", "deepspeed_zero3"]   # ddp: plain model on one process
Precision = Literal["auto", "bf16", "fp32"]              # auto: bf16 on CUDA, fp32 on the CPU
STRATEGIES: tuple[str, ...] = Strategy.__args__


class ModelSpec(Strict):
    """A registered model (actors.trainer.register_model) and the dict its factory takes."""

    name: str = Field(min_length=1, max_length=200)
    cfg: dict[str, Any] = Field(default_factory=dict)


class OptimizerSpec(Strict):
    name: Literal["adamw"] = "adamw"
    lr: float = Field(1e-3, gt=0, le=10)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0, le=1)
    weight_decay: float = Field(0.0, ge=0, le=1)
    grad_clip: float | None = Field(1.0, gt=0, le=1e6)   # max global grad norm; None = off

    @model_validator(mode="after")
    def _betas(self) -> OptimizerSpec:
        if not all(0 <= b < 1 for b in self.betas):
            raise InputError("betas", f"{list(self.betas)} are not both in [0, 1)", "0 <= beta < 1")
        return self


class SchedulerSpec(Strict):
    """Linear warmup to `optimizer.lr` over `warmup_steps`, then cosine decay to lr * min_lr_ratio at
    the last step (`constant`: warmup, then flat)."""

    name: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = Field(0, ge=0, le=100_000_000)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)


class CheckpointSpec(Strict):
    every: int = Field(100, ge=1, le=100_000_000)   # save every N global steps (and at the last step)
    keep: int = Field(3, ge=1, le=10_000)           # newest N complete checkpoints are kept


class FailureInjection(Strict):
    """Test hook: rank `rank` dies at global step `step` (before its update), once per run directory
    (a marker file makes the restarted run go on). `kill` = SIGKILL of the worker's own process (what
    `kill -9 <worker pid>` does), `raise` = a Python exception."""

    step: int = Field(ge=1)
    rank: int = Field(0, ge=0)
    mode: Literal["kill", "raise"] = "raise"


class TrainSpec(Strict):
    model: ModelSpec
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    steps: int = Field(ge=1, le=100_000_000)
    batch_size: int = Field(ge=1, le=1_000_000)           # global: samples per step over all ranks
    strategy: Strategy = "ddp"
    precision: Precision = "auto"
    activation_checkpointing: bool = False               # recompute each model.fsdp_units() block in backward
    seed: int = Field(0, ge=0, le=2**31 - 1)
    shuffle: bool = True                                  # shard + within-shard permutation per epoch
    log_every: int = Field(1, ge=1, le=1_000_000)         # metrics.jsonl + progress line every N steps
    report_every: int = Field(10, ge=1, le=1_000_000)     # ray.train.report every N steps (and at checkpoints)
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    workers: WorkerConfig = Field(default_factory=lambda: WorkerConfig(num_workers=1, max_restarts=0))
    max_failures: int = Field(0, ge=-1, le=1000)           # Ray Train FailureConfig: restarts from the latest checkpoint
    inject_failure: FailureInjection | None = None       # tests only (see FailureInjection)

    @model_validator(mode="after")
    def _cross(self) -> TrainSpec:
        if self.scheduler.warmup_steps > self.steps:
            raise InputError("scheduler.warmup_steps", f"{self.scheduler.warmup_steps} is more than steps={self.steps}",
                             f"<= {self.steps}")
        if isinstance(self.workers.num_workers, int) and self.workers.num_workers >= 1:
            w = self.workers.num_workers
            if self.batch_size % w:
                raise InputError("batch_size", f"{self.batch_size} is not divisible by workers.num_workers={w}",
                                 f"a multiple of {w}")
        if self.inject_failure is not None and self.inject_failure.step > self.steps:
            raise InputError("inject_failure.step", f"{self.inject_failure.step} is after the last step {self.steps}",
                             f"<= {self.steps}")
        return self

    def identity(self) -> dict[str, Any]:
        """What makes two runs the same training (a resumed run must match): model, optimizer, schedule,
        global batch, seed and data order. Strategy, precision, workers, checkpointing, logging and
        the failure hook may change on resume."""
        d = self.model_dump(mode="json")
        return {k: d[k] for k in ("model", "optimizer", "scheduler", "steps", "batch_size", "seed", "shuffle")}
