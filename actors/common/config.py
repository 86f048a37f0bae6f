"""Config building blocks shared by every subsystem: strict frozen models, worker resources, `validated`.

`WorkerConfig` means the same everywhere: `num_gpus: auto` is one GPU per worker when the cluster has
GPUs and a CPU worker otherwise; `num_workers: auto` is one worker per GPU (GPU workers) or per
`num_cpus` CPUs (CPU workers). A subsystem may change the defaults (`Field(default_factory=...)`),
never the meaning.
"""
from __future__ import annotations

import re
import types
import typing
from typing import Any, Literal, TypeVar, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from actors.common.errors import InputError, from_validation

__all__ = ["Auto", "Strict", "WorkerConfig", "apply_overrides", "load_yaml", "validated"]

M = TypeVar("M", bound=BaseModel)
Auto = Literal["auto"]


def _numeric(tp: Any) -> bool:
    return tp in (int, float)


def _accepts(tp: Any, value: Any) -> bool:
    """Whether `tp` itself takes a bool / str value (str, bool, a Literal listing it, Any)."""
    if tp is Any or tp is object:
        return True
    if typing.get_origin(tp) is Literal:
        return value in typing.get_args(tp)
    return tp is (bool if isinstance(value, bool) else str)


def _number_problem(tp: Any, value: Any) -> tuple[tuple[Any, ...], str] | None:
    """(path inside the value, reason) when `value` stands for a number where `tp` wants one
    (a boolean or a string), else None; the path names the element, e.g. ("source", 5)."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _number_problem(typing.get_args(tp)[0], value)
    if origin in (Union, types.UnionType):
        arms = typing.get_args(tp)
        if isinstance(value, (bool, str)) and not any(_accepts(a, value) for a in arms):
            if any(_numeric(a) for a in arms):
                return (), f"a {type(value).__name__} is not a number"
        for a in arms:   # containers inside a union (e.g. list[float] | None)
            if typing.get_origin(a) in (list, tuple, dict, set, frozenset) and isinstance(value, (list, tuple, dict)):
                return _number_problem(a, value)
        return None
    if _numeric(tp):
        return ((), f"a {type(value).__name__} is not a number") if isinstance(value, (bool, str)) else None
    if origin in (list, tuple, set, frozenset) and isinstance(value, (list, tuple, set, frozenset)):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        if origin is not tuple and len(args) == 1 and _numeric(args[0]):   # list[float]: one pass, no recursion
            if set(map(type, value)) <= {float, int}:   # in C: ~5 us for a 384-float embedding
                return None
            bad = next(((i, item) for i, item in enumerate(value) if isinstance(item, (bool, str))), None)
            return None if bad is None else ((bad[0],), f"a {type(bad[1]).__name__} is not a number")
        for i, item in enumerate(value):
            if args:
                found = _number_problem(args[min(i, len(args) - 1)] if origin is tuple else args[0], item)
                if found:
                    return (i, *found[0]), found[1]
        return None
    if origin is dict and isinstance(value, dict):
        vt = typing.get_args(tp)[1] if typing.get_args(tp) else Any
        for k, item in value.items():
            found = _number_problem(vt, item)
            if found:
                return (k, *found[0]), found[1]
    return None


class Strict(BaseModel):
    """Unknown keys are errors (a typo in a YAML preset fails loudly), instances are immutable, and
    numbers are numbers: finite (no NaN / Infinity), never a boolean or a numeric string
    (`true` or `"4"` where a number is expected is an error naming the field, not a silent 1 or 4)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _numbers_are_numbers(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        errors = []
        for name, field in cls.model_fields.items():
            key = name if name in data else field.alias
            if key not in data or not isinstance(data[key], (bool, str, list, tuple, dict, set, frozenset)):
                continue
            found = _number_problem(field.annotation, data[key])
            if found:
                path, problem = found
                errors.append(InitErrorDetails(type=PydanticCustomError("number_type", problem, {"expected": "a finite number"}),
                                               loc=(key, *path), input=data[key]))
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return data


class WorkerConfig(Strict):
    """Actor resources: CPU actors on a laptop, one GPU-pinned actor per GPU on a cluster."""

    num_workers: int | Auto = Field("auto", union_mode="left_to_right")
    num_gpus: float | Auto = Field("auto", union_mode="left_to_right")
    num_cpus: float = Field(1.0, gt=0, le=1024)
    max_restarts: int = Field(-1, ge=-1)
    max_task_retries: int = Field(3, ge=-1)


# YAML 1.1 (PyYAML's default) reads 1e-8 as a string; YAML 1.2 and every user read it as a float
_FLOAT_12 = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 floats (`1e-8` is a number)."""


_Loader.yaml_implicit_resolvers = {k: [r for r in v if r[0] != "tag:yaml.org,2002:float"]
                                   for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))


def load_yaml(text: str) -> Any:
    """Parse YAML safely (no object construction) with YAML 1.2 number rules."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


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


def apply_overrides(raw: dict, overrides: dict | None) -> dict:
    """Set dotted keys like {"solver.backend": "scipy"}, creating the nested mappings they need."""
    for key, value in (overrides or {}).items():
        node = raw
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise InputError(key, f"{p!r} is not a mapping in the config", "a dotted path of mappings")
        node[leaf] = value
    return raw
