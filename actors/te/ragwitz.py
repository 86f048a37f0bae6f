"""Auto embedding by the Ragwitz criterion (Ragwitz & Kantz 2002), as JIDT's AUTO_EMBED_METHOD_RAGWITZ.

For each candidate (history h, delay tau) the series' next value is forecast as the mean next value
of the K nearest neighbours of its embedded past (max-norm, Theiler window excluded); the candidate
with the smallest mean squared forecast error wins (ties: shorter history, then shorter delay). All
candidates forecast the same samples (those the largest embedding allows), so errors compare.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from actors.common.budget import checkpoint
from actors.common.errors import InputError
from actors.te.config import RagwitzConfig
from actors.te.embedding import as_series, delay_embed, zscore
from actors.te.ksg import knn


@dataclass(frozen=True)
class Embedding:
    """The chosen history length and delay, with every candidate's forecast error."""

    hist: int
    tau: int
    errors: dict[tuple[int, int], float]


def forecast_error(series: np.ndarray, hist: int, tau: int, start: int, *, n_neighbours: int = 4,
                   theiler: int = 0) -> float:
    """Mean squared error of the nearest-neighbour forecast of series[t+1] from its (hist, tau) past."""
    t = np.arange(start, series.shape[0] - 1)
    past = delay_embed(series, t, hist, tau)
    nxt = series[t + 1]
    _, nbr = knn(past, n_neighbours, theiler, 1)
    return float(np.mean((nxt[nbr].mean(axis=1) - nxt) ** 2))


def ragwitz(series, cfg: RagwitzConfig | None = None, *, k: int = 4, theiler: int = 0) -> Embedding:
    """The (history, delay) in cfg's ranges that best forecasts `series` one step ahead."""
    cfg = cfg or RagwitzConfig()
    x = as_series(series, "series")
    x = zscore(x[:, None], "series")[:, 0]   # overflow-safe: any finite values
    n_nb = cfg.n_neighbours or k
    (h_lo, h_hi), (t_lo, t_hi) = cfg.k_range, cfg.tau_range
    start = (h_hi - 1) * t_hi
    n_obs = x.shape[0] - 1 - start
    if n_nb >= n_obs - 2 * theiler:
        raise InputError("series", f"length {x.shape[0]} is too short for the Ragwitz search up to history "
                         f"{h_hi} and delay {t_hi} with {n_nb} neighbours",
                         f">= {start + 2 + n_nb + 2 * theiler} samples")
    errors: dict[tuple[int, int], float] = {}
    for h in range(h_lo, h_hi + 1):
        for tau in (range(t_lo, t_hi + 1) if h > 1 else [t_lo]):  # the delay is moot for one sample
            checkpoint()   # the request's budget / cancellation (actors.common.budget)
            errors[(h, tau)] = forecast_error(x, h, tau, start, n_neighbours=n_nb, theiler=theiler)
    hist, tau = min(errors, key=lambda key: (errors[key], key))
    return Embedding(hist=hist, tau=tau, errors=errors)
