"""Typed input errors: each names the offending field and what would have been allowed.

Serve maps them to HTTP 4xx; jobs print them and exit non-zero.
"""
from __future__ import annotations


class InputError(ValueError):
    """A request or config field is out of its allowed range."""

    def __init__(self, field: str, message: str, allowed: str | None = None):
        self.field = field
        self.allowed = allowed
        text = f"{field}: {message}" + (f" (allowed: {allowed})" if allowed else "")
        super().__init__(text)


class UnknownModelError(InputError):
    def __init__(self, name: str, known: list[str]):
        super().__init__("model", f"unknown model {name!r}", ", ".join(sorted(known)))
