"""Array checks shared by the router engines: every bad input is an InputError naming its field."""
from __future__ import annotations

import numpy as np

from actors.common.errors import InputError

__all__ = ["finite_array", "positive_int", "temperature"]


def finite_array(value, field: str, *, ndim: int | None = None, shape: tuple[int | None, ...] | None = None,
                 nonnegative: bool = False, dtype=np.float64) -> np.ndarray:
    """`value` as a float64 array of `ndim` / `shape` (None = any size) with only finite entries."""
    try:
        arr = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise InputError(field, f"not a numeric array ({exc})") from None
    if ndim is not None and arr.ndim != ndim:
        raise InputError(field, f"expected a {ndim}-d array, got shape {arr.shape}", f"{ndim} dimensions")
    if shape is not None:
        for axis, (got, want) in enumerate(zip(arr.shape, shape)):
            if want is not None and got != want:
                raise InputError(field, f"axis {axis} has size {got}, expected {want}", f"shape {shape}")
    if arr.size and not np.all(np.isfinite(arr)):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise InputError(field, f"non-finite value at index {bad}", "finite numbers")
    if nonnegative and arr.size and np.any(arr < 0):
        bad = tuple(int(i) for i in np.argwhere(arr < 0)[0])
        raise InputError(field, f"negative value at index {bad}", ">= 0")
    return arr


def positive_int(value, field: str, *, minimum: int = 1, maximum: int | None = None) -> int:
    """`value` as an int in [minimum, maximum] (bools and non-integers refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(field, f"expected an integer, got {type(value).__name__}", f">= {minimum}")
    if value < minimum or (maximum is not None and value > maximum):
        allowed = f">= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
        raise InputError(field, f"{int(value)} is out of range", allowed)
    return int(value)


def temperature(T, field: str = "T", n: int | None = None) -> np.ndarray:
    """A temperature (scalar, or one per row when `n` is given) as a float64 array, finite and >= 0."""
    arr = finite_array(T, field, nonnegative=True)
    if arr.ndim > 1 or (arr.ndim == 1 and n is not None and arr.shape[0] != n):
        raise InputError(field, f"expected a scalar or {n} values, got shape {arr.shape}", "scalar or one per row")
    return arr
