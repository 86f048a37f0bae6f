"""Input checks, delay embedding and per-column preprocessing for TE, as JIDT does it.

For TE(X -> Y) every observation is one destination time t+1 with
    y_next = Y[t+1],  y_past = (Y[t], Y[t - k_tau], ..., Y[t - (k_hist-1) k_tau]),
    x_past = (X[t+1-u], X[t+1-u - l_tau], ..., X[t+1-u - (l_hist-1) l_tau]),
for t from max((k_hist-1) k_tau, (l_hist-1) l_tau + u - 1) to T-2 (JIDT's
startTimeForFirstDestEmbedding). Each embedded column is then z-scored on its own (ddof=1, as
JIDT's MatrixUtils.normalise) and gets seeded Gaussian noise of `noise` standard deviations.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from actors.common.errors import InputError
from actors.te.config import TEParams


@dataclass(frozen=True)
class Embedded:
    """Raw embedded blocks (one row per observation) and the destination time of each row."""

    x: np.ndarray       # [n, l_hist]                       source past
    y: np.ndarray       # [n, 1]                            destination next value
    z: np.ndarray       # [n, k_hist + n_cond * cond_hist]  destination past, then conditionals
    times: np.ndarray   # [n] index t+1 of the predicted destination sample

    @property
    def n(self) -> int:
        return int(self.y.shape[0])


def as_series(values, field: str, *, length: int | None = None, allow_2d: bool = False) -> np.ndarray:
    """A finite, non-constant float64 series (1-D, or [T, d] when allow_2d) or an InputError."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(field, f"not a numeric array ({exc})", "a 1-D array of real numbers") from None
    if arr.ndim == 2 and allow_2d:
        pass
    elif arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    elif arr.ndim != 1:
        shape = "a 1-D array or [T, d] matrix" if allow_2d else "a 1-D array"
        raise InputError(field, f"has shape {arr.shape}", shape)
    if arr.shape[0] < 2:
        raise InputError(field, f"has {arr.shape[0]} samples", ">= 2 samples")
    if arr.ndim == 2 and arr.shape[1] == 0:
        raise InputError(field, "has samples with no columns", "[T, d] samples with d >= 1")
    if length is not None and arr.shape[0] != length:
        raise InputError(field, f"has length {arr.shape[0]} but the source has length {length}",
                         f"exactly {length} samples (the same length as the source)")
    if not np.isfinite(arr).all():
        bad = int(np.size(arr) - np.isfinite(arr).sum())
        raise InputError(field, f"contains {bad} NaN or infinite values", "finite real numbers")
    if np.any(arr.max(axis=0) == arr.min(axis=0)):   # not np.ptp: max - min overflows for |x| ~ 1e308
        raise InputError(field, "is constant (zero variance), so no neighbour structure exists",
                         "a series with nonzero variance")
    return arr


def start_time(params: TEParams, n_cond: int = 0, delay: int | None = None) -> int:
    """Index t of the first destination past (JIDT startTimeForFirstDestEmbedding)."""
    u = params.delay if delay is None else delay
    start = max((params.k_hist - 1) * params.k_tau, (params.l_hist - 1) * params.l_tau + u - 1)
    if n_cond:
        start = max(start, (params.cond_hist - 1) * params.cond_tau + params.cond_delay - 1)
    return start


def delay_embed(series: np.ndarray, last: np.ndarray, hist: int, tau: int) -> np.ndarray:
    """Rows (s[last], s[last - tau], ..., s[last - (hist-1) tau]) for every index in `last`."""
    offsets = np.arange(hist) * tau
    return series[last[:, None] - offsets[None, :]]


def check_observations(n_obs: int, params: TEParams, length: int, start: int) -> None:
    """Enough embedded points for k neighbours outside the Theiler window (JIDT: n > k + 2 theiler)."""
    needed = params.k + 2 * params.theiler + 1
    if n_obs < 2:
        raise InputError("source", f"length {length} is too short for the embedding (first usable "
                         f"destination sample is {start + 1})", f">= {start + 1 + needed} samples")
    if params.k >= n_obs - 2 * params.theiler:
        window = f" minus the Theiler exclusion 2*{params.theiler}" if params.theiler else ""
        raise InputError("k", f"k={params.k} needs more than k embedded points{window}; there are {n_obs}",
                         f"1 <= k <= {max(n_obs - 2 * params.theiler - 1, 0)}, or a series of "
                         f">= {start + 1 + needed} samples")


def te_embedding(source: np.ndarray, target: np.ndarray, conditionals: Sequence[np.ndarray] = (),
                 params: TEParams | None = None, *, delay: int | None = None,
                 start: int | None = None) -> Embedded:
    """Embed checked series; `start` (>= the natural start) aligns several delays on the same rows."""
    params = params or TEParams()
    u = params.delay if delay is None else delay
    natural = start_time(params, len(conditionals), u)
    t0 = natural if start is None else max(start, natural)
    length = target.shape[0]
    n_obs = length - 1 - t0
    check_observations(n_obs, params, length, t0)
    t = np.arange(t0, length - 1)
    x = delay_embed(source, t + 1 - u, params.l_hist, params.l_tau)
    y = target[t + 1][:, None]
    blocks = [delay_embed(target, t, params.k_hist, params.k_tau)]
    for c in conditionals:
        blocks.append(delay_embed(c, t + 1 - params.cond_delay, params.cond_hist, params.cond_tau))
    return Embedded(x=x, y=y, z=np.hstack(blocks), times=t + 1)


# Largest |value| an un-normalised block may hold: every max-norm distance |a - b| stays finite.
MAX_RAW = 2.0 ** 1022


def unit_scale(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each column divided by a power of two 2**e so that max|column| lies in [0.5, 1), and the e's.

    Scaling by a power of two is exact, so the mean, std and z-scores computed on the scaled block are
    bit-identical to those of the original wherever the original's arithmetic did not overflow; where it
    did (|values| near 1e308, or squares past 1e154 inside the std) the scaled arithmetic still works,
    and squares of values like 1e-300 no longer underflow to a zero variance.
    """
    _, exp = np.frexp(np.abs(block).max(axis=0))   # peak = m * 2**exp, m in [0.5, 1); 0 for a zero column
    return np.ldexp(block, -exp), exp


def zscore(block: np.ndarray, field: str = "series") -> np.ndarray:
    """Each column of a [n, d] block minus its mean, over its std (ddof=1), overflow-safe (unit_scale)."""
    scaled, _ = unit_scale(np.asarray(block, dtype=np.float64))
    std = scaled.std(axis=0, ddof=1) if scaled.shape[0] > 1 else np.zeros(scaled.shape[1])
    if np.any(std == 0):
        raise InputError(field, "is constant over the embedded samples (zero variance)",
                         "a series with nonzero variance over the samples used")
    return (scaled - scaled.mean(axis=0)) / std


def prepare(block: np.ndarray, *, normalise: bool, noise: float, rng: np.random.Generator,
            field: str = "series") -> np.ndarray:
    """Z-score each column (ddof=1) and add noise * std(column) Gaussian noise, in a new array.

    KSG on z-scored columns is invariant to rescaling a variable, so the z-score is computed on the
    power-of-two rescaled block (unit_scale): any finite input works, 1e308 included. Without
    normalise the raw values enter the max-norm distances, which must stay finite: |values| < 2**1022.
    """
    out = np.array(block, dtype=np.float64, copy=True)
    if out.shape[1] == 0:
        return out
    if normalise:
        out = zscore(out, field)
        std = np.ones(out.shape[1])
    else:
        scaled, exp = unit_scale(out)
        std_scaled = scaled.std(axis=0, ddof=1) if out.shape[0] > 1 else np.zeros(out.shape[1])
        if np.any(std_scaled == 0):
            raise InputError(field, "is constant over the embedded samples (zero variance)",
                             "a series with nonzero variance over the samples used")
        peak = float(np.abs(out).max())
        if peak >= MAX_RAW:
            raise InputError(field, f"holds |values| up to {peak:.3g}: without normalise the distances between "
                             "samples overflow", f"|values| < {MAX_RAW:.3g}, or normalise = true (any finite values)")
        std = np.ldexp(std_scaled, exp)   # the raw std, exactly
    if noise > 0:
        out += rng.standard_normal(out.shape) * (noise * std)
    return out
