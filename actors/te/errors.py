"""Typed input errors for the TE subsystem.

The class is the sweep subsystem's `InputError` (field, message, allowed range), re-exported so one
`except InputError` in a job or a Serve app catches both subsystems. `from_validation` turns a
pydantic ValidationError into the same shape, so engine entry points raise only InputError.
"""
from __future__ import annotations

from pydantic import ValidationError

from actors.sweep.errors import InputError

__all__ = ["InputError", "from_validation"]

_BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def from_validation(exc: ValidationError, prefix: str = "") -> InputError:
    """The first pydantic error as an InputError naming the field and its allowed range."""
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err.get("loc", ())) or exc.title  # model-level check: the model
    ctx = err.get("ctx") or {}
    bounds = [f"{_BOUNDS[key]} {ctx[key]}" for key in ("gt", "ge", "lt", "le") if key in ctx]
    allowed = " and ".join(bounds) or (str(ctx["expected"]) if "expected" in ctx else None)
    return InputError(prefix + field, err.get("msg", "invalid value"), allowed)
