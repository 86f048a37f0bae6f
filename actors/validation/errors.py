"""Typed input errors for the validation subsystem.

The same `InputError` (field, message, allowed range) as the sweep and TE subsystems, so one
`except InputError` in a job or a Serve app catches all of them.
"""
from __future__ import annotations

from actors.sweep.errors import InputError

__all__ = ["InputError"]
