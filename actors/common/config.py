"""Config building blocks shared by every subsystem: strict frozen models, worker resources, `validated`.

`WorkerConfig` means the same everywhere: `num_gpus: auto` is one GPU per worker when the cluster has
GPUs and a CPU worker otherwise; `num_workers: auto` is one worker per GPU (GPU workers) or per
`num_cpus` CPUs (CPU workers). A subsystem may change the defaults (`Field(default_factory=...)`),
never the meaning.
"""
from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from actors.common.errors import from_validation

__all__ = ["Auto", "Strict", "WorkerConfig", "validated"]

M = TypeVar("M", bound=BaseModel)
Auto = Literal["auto"]


class Strict(BaseModel):
    """Unknown keys are errors (a typo in a YAML preset fails loudly) and instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class WorkerConfig(Strict):
    """Actor resources: CPU actors on a laptop, one GPU-pinned actor per GPU on a cluster."""

    num_workers: int | Auto = Field("auto", union_mode="left_to_right")
    num_gpus: float | Auto = Field("auto", union_mode="left_to_right")
    num_cpus: float = Field(1.0, gt=0, le=1024)
    max_restarts: int = Field(-1, ge=-1)
    max_task_retries: int = Field(3, ge=-1)


def validated(cls: type[M], value: M | dict[str, Any] | None = None, /, *, prefix: str = "",
              **overrides: Any) -> M:
    """`cls` from a model or dict plus keyword overrides; bad fields raise InputError, not pydantic's."""
    if isinstance(value, cls) and not overrides:
        return value
    data = value.model_dump() if isinstance(value, BaseModel) else dict(value or {})
    data.update(overrides)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise from_validation(exc, prefix) from None
