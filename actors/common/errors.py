"""The one error contract of every subsystem: a bad field is named with what would have been allowed.

Serve apps answer an `InputError` with its `status_code` (422, `TooLarge` 413, `NotFound` 404) and the
body {field, message, allowed}; jobs print it and exit 2. The classes pickle by value (`__reduce__`),
so an error raised inside a Ray task or actor reaches the caller as the same class with its field —
Ray re-raises it as a subclass of the original, and `except InputError` still catches it.
"""
from __future__ import annotations

from typing import Any

from pydantic import ValidationError

__all__ = ["Forbidden", "InputError", "NotFound", "TooLarge", "UnknownName", "allowed_range", "from_validation"]

_BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def _rebuild(cls: type[InputError], field: str, message: str, allowed: str | None) -> InputError:
    """Unpickle any InputError subclass whatever its own __init__ signature."""
    err = cls.__new__(cls)
    InputError.__init__(err, field, message, allowed)
    return err


class InputError(ValueError):
    """A request or config field is out of its allowed range (HTTP 422)."""

    status_code = 422

    def __init__(self, field: str, message: str, allowed: str | None = None):
        self.field = field
        self.message = message
        self.allowed = allowed
        super().__init__(f"{field}: {message}" + (f" (allowed: {allowed})" if allowed else ""))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.field, self.message, self.allowed))

    def to_dict(self) -> dict[str, Any]:
        """The error body every app returns: {field, message, allowed}."""
        return {"field": self.field, "message": str(self), "allowed": self.allowed}


class TooLarge(InputError):
    """A request is over a size limit (HTTP 413)."""

    status_code = 413


class NotFound(InputError):
    """A named thing (model, job, result) does not exist (HTTP 404)."""

    status_code = 404


class Forbidden(InputError):
    """The caller may not do this (HTTP 403 / gRPC PERMISSION_DENIED), e.g. a non-loopback peer."""

    status_code = 403


class UnknownName(InputError):
    """`field` names something that is not registered; `known` lists what is (a bad value: 422)."""

    def __init__(self, field: str, name: str, known: list[str] | str):
        allowed = known if isinstance(known, str) else ", ".join(sorted(known))
        super().__init__(field, f"unknown {field} {name!r}", allowed)


def from_validation(exc: ValidationError, prefix: str = "") -> InputError:
    """The first pydantic error as an InputError naming the dotted field and its allowed range.

    A model validator that checks several fields should raise `InputError(field, ...)` (a ValueError):
    its field, under the model's own path, is the one named.
    """
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()))
    ctx = err.get("ctx") or {}
    inner = ctx.get("error")
    if isinstance(inner, InputError):   # a cross-field check that raised InputError names its own field
        return type(inner)(prefix + ".".join(p for p in (loc, inner.field) if p), inner.message, inner.allowed)
    field = loc or exc.title  # a model-level check that raised a plain ValueError: the model
    return InputError(prefix + field, err.get("msg", "invalid value"), allowed_range(ctx))


def allowed_range(ctx: dict[str, Any]) -> str | None:
    """The allowed range of a pydantic error's context (">= 1 and <= 10", or what it expected)."""
    bounds = [f"{_BOUNDS[key]} {ctx[key]}" for key in ("gt", "ge", "lt", "le") if key in ctx]
    return " and ".join(bounds) or (str(ctx["expected"]) if "expected" in ctx else None)
