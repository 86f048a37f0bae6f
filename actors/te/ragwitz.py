"""Auto embedding by the Ragwitz criterion (Ragwitz & Kantz 2002), with JIDT's conventions.

JIDT (v1.6.1, ActiveInfoStorageCalculatorKraskov.preFinaliseAddObservations with
AUTO_EMBED_METHOD_RAGWITZ, called by TransferEntropyCalculatorKraskov for RAGWITZ_DEST_ONLY on the
destination and, for RAGWITZ, on the source too, each series on its own) scores a candidate
(history h, delay tau) on *its own* samples:

* the samples are t = (h-1) tau .. T-2: past (x[t], x[t-tau], ..., x[t-(h-1) tau]) and next x[t+1],
  so n(h, tau) = T - (h-1) tau - 1 of them;
* each embedded column (every past coordinate and the next value) is z-scored over those n samples
  (MutualInfoCalculatorMultiVariate normalises its observations; ddof = 1);
* the forecast of next[t] is the mean next value of the K nearest pasts (max norm, the Theiler window
  |t - t'| <= theiler excluded, the sample itself always excluded), the score is the summed squared
  forecast error divided by n (computePredictionErrorsFromObservations / getNumObservations);
* candidates are visited h = h_lo..h_hi, tau = tau_lo..tau_hi (only tau_lo when h = 1: the delay is
  moot), and a candidate replaces the best only when its score is strictly smaller, so exact ties keep
  the shorter history, then the shorter delay.

JIDT adds 1e-8 std Gaussian noise to the normalised columns by default; it only breaks exact ties in
the neighbour search and its Java draws cannot be reproduced, so the search here runs on the noiseless
z-scored columns. An older version scored every candidate on one shared sample set after z-scoring
the whole series once; it chose a different history than JIDT on near ties and was removed (no use
needs it: a paired comparison on common samples is not what any reference tool reports).
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
    """The chosen history length and delay, with every candidate's forecast error (JIDT's score)."""

    hist: int
    tau: int
    errors: dict[tuple[int, int], float]


def candidates(cfg: RagwitzConfig) -> list[tuple[int, int]]:
    """(history, delay) in JIDT's search order: history ascending, delay ascending, one delay at h = 1."""
    (h_lo, h_hi), (t_lo, t_hi) = cfg.k_range, cfg.tau_range
    return [(h, tau) for h in range(h_lo, h_hi + 1) for tau in (range(t_lo, t_hi + 1) if h > 1 else [t_lo])]


def forecast_error(series: np.ndarray, hist: int, tau: int, *, n_neighbours: int = 4, theiler: int = 0,
                   workers: int = 1) -> float:
    """JIDT's Ragwitz score of (hist, tau): the mean squared K-NN forecast error of the z-scored next value.

    `series` is the raw (checked) series; the candidate's own samples are embedded and z-scored here.
    """
    t = np.arange((hist - 1) * tau, series.shape[0] - 1)
    past = zscore(delay_embed(series, t, hist, tau), "series")
    nxt = zscore(series[t + 1][:, None], "series")[:, 0]
    _, nbr = knn(past, n_neighbours, theiler, workers)
    err = nxt[nbr].mean(axis=1) - nxt
    return float(np.sum(err * err) / t.size)


def ragwitz(series, cfg: RagwitzConfig | dict | None = None, *, k: int = 4, theiler: int = 0,
            workers: int = 1) -> Embedding:
    """The (history, delay) in cfg's ranges that best forecasts `series` one step ahead (JIDT's choice)."""
    if not isinstance(cfg, RagwitzConfig):
        from actors.common.config import validated

        cfg = validated(RagwitzConfig, cfg or {})
    x = as_series(series, "series")
    n_nb = cfg.n_neighbours or k
    (_, h_hi), (_, t_hi) = cfg.k_range, cfg.tau_range
    longest = (h_hi - 1) * t_hi if h_hi > 1 else 0
    n_min = x.shape[0] - 1 - longest    # samples of the candidate with the fewest
    if n_nb >= n_min - 2 * theiler:
        raise InputError("series", f"length {x.shape[0]} is too short for the Ragwitz search up to history "
                         f"{h_hi} and delay {t_hi} with {n_nb} neighbours",
                         f">= {longest + 2 + n_nb + 2 * theiler} samples")
    errors: dict[tuple[int, int], float] = {}
    best, best_err = None, np.inf
    for h, tau in candidates(cfg):
        checkpoint()   # the request's budget / cancellation (actors.common.budget)
        err = forecast_error(x, h, tau, n_neighbours=n_nb, theiler=theiler, workers=workers)
        errors[(h, tau)] = err
        if err < best_err:   # strictly smaller: ties keep the earlier candidate (JIDT)
            best, best_err = (h, tau), err
    if best is None:   # every score NaN cannot happen on checked input; keep JIDT's default (1, 1)
        best = candidates(cfg)[0]
    return Embedding(hist=best[0], tau=best[1], errors=errors)
