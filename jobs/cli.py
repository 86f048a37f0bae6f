"""Shared command-line plumbing of the jobs: YAML presets with dotted `--set key=value` overrides."""
from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel

Spec = TypeVar("Spec", bound=BaseModel)


def parse_set(values: list[str]) -> dict:
    """`["a.b=3", "c=[1,2]"]` -> {"a.b": 3, "c": [1, 2]}: each value is parsed as YAML."""
    out = {}
    for item in values:
        key, _, value = item.partition("=")
        out[key] = yaml.safe_load(value)
    return out


def load_spec(spec_cls: type[Spec], path: str | Path | None, overrides: dict | None = None) -> Spec:
    """Read a YAML preset (or defaults when `path` is None), apply dotted overrides, validate.

    Overrides like {"solver.backend": "scipy"} create the nested mappings they need, so any field of
    the pydantic spec can be set from the command line.
    """
    raw = (yaml.safe_load(Path(path).read_text()) if path else None) or {}
    for key, value in (overrides or {}).items():
        node = raw
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return spec_cls.model_validate(raw)
