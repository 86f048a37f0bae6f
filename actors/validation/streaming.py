"""Streaming DetectCollapse for large tables: one pass per file, mergeable sketches, then the tests.

`summarize(path)` reads a .parquet / .csv file in record batches into a `TableSketch` (KLL per
numeric column, HyperLogLog + frequent items per categorical column, Chan-merged mean / covariance,
a bottom-k uniform row sample); `actors.validation.raydata.summarize_ray` builds the same summary
with Ray Data (map_batches, then merge; a job passes it in as `summarizer`). `compare(real, synth)`
turns two summaries into full-data statistics with their error bounds:

- numeric columns: KS D from the KLL CDFs (|error| <= 2 eps, eps = the KLL rank error), Wasserstein-1
  from the quantile functions / real sd, mean shift and variance ratio from the exact moments;
- categorical columns: chi-squared, Cramer's V and Jensen-Shannon distance on the heavy hitters of
  either side plus an "other" cell (frequent-items counts: absolute error <= eps_f * n), HLL
  distinct counts with 2-sd bounds;
- correlation: Pearson matrices of both tables from the streaming covariance (max and Frobenius gap);
- spectral: PCA spectrum of both covariances standardised by the real sds (explained-variance gap,
  log total-variance ratio, principal angles).

The calibrated decisions (permutation nulls, max-T, BH) run on the two row samples through
`detector.detect`, exactly as for in-memory tables; the sketch statistics describe every row next
to them. Memory is O(columns x sketch size + sample) whatever the row count. Engine code: no Ray.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from actors.common.errors import InputError
from actors.validation.sketches import SketchConfig, TableSketch


def iter_batches(path: str | Path, batch_rows: int = 100_000) -> Iterator[pd.DataFrame]:
    """Record batches of a .parquet or .csv file as DataFrames."""
    path = Path(path)
    if not path.exists():
        raise InputError("path", f"{path} does not exist", "an existing .parquet or .csv file")
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        # no pre-buffering: the reader then holds one row group's pages, not the whole file
        for batch in pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20).iter_batches(batch_size=batch_rows):
            yield batch.to_pandas()
    elif path.suffix.lower() == ".csv":
        yield from pd.read_csv(path, chunksize=batch_rows)
    else:
        raise InputError("path", f"unsupported file type {path.suffix!r}", ".parquet, .csv")


def summarize(path: str | Path, *, k: int = 200, reservoir: int = 5_000, batch_rows: int = 100_000,
              seed: int = 0, categorical: tuple[str, ...] | None = None) -> TableSketch:
    """One pass over a file in this process: the table's mergeable summary."""
    s = TableSketch(SketchConfig(k=k, reservoir=reservoir, seed=seed), categorical=categorical)
    for batch in iter_batches(path, batch_rows):
        s.update(batch)
    if s.n == 0:
        raise InputError("path", f"{path} has no rows", ">= 10 rows")
    return s


def sketch_ks(a, b) -> float:
    """KS D between two KLL sketches, evaluated at both sketches' quantile points."""
    grid = np.linspace(0, 1, 1001)
    pts = np.unique(np.r_[a.get_quantiles(grid), b.get_quantiles(grid)])
    return float(np.max(np.abs(np.asarray(a.get_cdf(pts))[:-1] - np.asarray(b.get_cdf(pts))[:-1])))


def sketch_wasserstein(a, b, grid: int = 2000) -> float:
    """W1 = integral over u of |Q_a(u) - Q_b(u)|, on a midpoint grid of quantiles."""
    u = (np.arange(grid) + 0.5) / grid
    return float(np.mean(np.abs(np.asarray(a.get_quantiles(u)) - np.asarray(b.get_quantiles(u)))))


def category_table(real: TableSketch, synth: TableSketch, column: str) -> tuple[list[str], np.ndarray]:
    """(cells, [2, m] counts): the heavy hitters of either side (by frequent-items estimates) + "other"."""
    items = sorted(set(real.heavy_hitters(column)) | set(synth.heavy_hitters(column)))
    rows = []
    for s in (real, synth):
        counts = np.array([s.freq[column].get_estimate(v) for v in items], dtype=np.float64)
        rows.append(np.r_[counts, max(s.n - counts.sum(), 0.0)])
    return items + ["<other>"], np.vstack(rows)


def _categorical_stats(real: TableSketch, synth: TableSketch, c: str) -> dict[str, Any]:
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import chi2_contingency

    cells, T = category_table(real, synth, c)
    T = T[:, T.sum(axis=0) > 0]
    if T.shape[1] > 1:
        chi2 = float(chi2_contingency(T, correction=False).statistic)
        v = float(np.sqrt(chi2 / (T.sum() * (min(T.shape) - 1))))
    else:
        chi2, v = 0.0, 0.0
    dr, ds = real.distinct(c), synth.distinct(c)
    return {"chi2": chi2, "cramers_v": v, "js": float(jensenshannon(T[0], T[1], base=2)), "cells": len(cells),
            "distinct_real": dr["estimate"], "distinct_synth": ds["estimate"],
            "distinct_ratio": ds["estimate"] / max(dr["estimate"], 1.0),
            "count_error_bound": real.freq[c].epsilon * max(real.n, synth.n)}


def _spectral(cr: np.ndarray, cs: np.ndarray, sd: np.ndarray, n_pcs: int) -> dict[str, float]:
    """Explained-variance gap, log total-variance ratio and principal angles of two covariances,
    both standardised by the real table's sds (so shrinkage shows in the total variance)."""
    from scipy.linalg import subspace_angles

    s = np.where(sd > 0, sd, 1.0)
    out = {}
    spectra, bases = [], []
    for c in (cr, cs):
        w, V = np.linalg.eigh(c / np.outer(s, s))
        order = np.argsort(w)[::-1]
        w, V = np.maximum(w[order], 0.0), V[:, order]
        spectra.append(w)
        bases.append(V[:, :n_pcs])
    k = min(n_pcs, len(sd))
    ev_r, ev_s = spectra[0][:k] / max(spectra[0].sum(), 1e-300), spectra[1][:k] / max(spectra[1].sum(), 1e-300)
    out["explained_variance_gap"] = float(np.abs(ev_r - ev_s).sum())
    out["log_total_variance_ratio"] = float(np.log(max(spectra[1].sum(), 1e-300) / max(spectra[0].sum(), 1e-300)))
    out["subspace_sin2"] = float(np.sum(np.sin(subspace_angles(bases[0], bases[1])) ** 2))
    out["explained_variance_real"] = [float(x) for x in ev_r]
    out["explained_variance_synth"] = [float(x) for x in ev_s]
    return out


def compare(real: TableSketch, synth: TableSketch, *, n_pcs: int = 5) -> dict[str, Any]:
    """Full-data statistics of synthetic vs real from two summaries, with their error bounds."""
    if (real.numeric, real.categories) != (synth.numeric, synth.categories):
        raise InputError("synthetic", f"columns differ: real numeric {real.numeric} categorical {real.categories}, "
                         f"synthetic numeric {synth.numeric} categorical {synth.categories}",
                         "the same columns of the same kind in both tables")
    eps = real.rank_error()
    out: dict[str, Any] = {"n_real": real.n, "n_synth": synth.n, "rank_error": eps, "ks_error_bound": 2 * eps,
                           "columns": {}}
    mr, ms = real.moments, synth.moments
    var_r = np.diag(mr.covariance()) if mr is not None else None
    var_s = np.diag(ms.covariance()) if ms is not None else None
    for j, c in enumerate(real.numeric):
        a, b = real.kll[c], synth.kll[c]
        if a.is_empty() or b.is_empty():
            out["columns"][c] = {"ks": float("nan"), "skipped": "a side has no non-missing value"}
            continue
        sd = float(np.sqrt(var_r[j])) or 1.0
        w = sketch_wasserstein(a, b)
        out["columns"][c] = {"ks": sketch_ks(a, b), "wasserstein_raw": w, "wasserstein": w / sd,
                             "mean_shift_sd": float((ms.mean[j] - mr.mean[j]) / sd),
                             "variance_ratio": float(var_s[j] / var_r[j]) if var_r[j] > 0 else float("nan"),
                             "missing_rate_real": real.missing.get(c, 0) / real.n,
                             "missing_rate_synth": synth.missing.get(c, 0) / synth.n}
    for c in real.categories:
        out["columns"][c] = _categorical_stats(real, synth, c)
    if len(real.numeric) >= 2 and mr.n > 2 and ms.n > 2:
        d = np.abs(mr.correlation() - ms.correlation())
        out["correlation"] = {"max_abs_gap": float(d.max()), "frobenius_gap": float(np.linalg.norm(d)),
                              "worst_pair": [real.numeric[i] for i in np.unravel_index(d.argmax(), d.shape)]}
        out["spectral"] = _spectral(mr.covariance(), ms.covariance(), np.sqrt(var_r), n_pcs)
    return out


# summarize(path, *, k, reservoir, batch_rows, seed, categorical) -> TableSketch: `summarize` here, or
# actors.validation.raydata.summarize_ray (the same summary built by Ray Data) passed in by a job
Summarizer = Callable[..., TableSketch]


def detect_streaming(real_path: str | Path, synth_path: str | Path, config: Any = None, *, k: int = 200,
                     batch_rows: int = 100_000, summarizer: Summarizer | None = None) -> tuple[Any, dict]:
    """(CollapseReport on the row samples, full-data sketch statistics `compare` returns)."""
    from actors.common.config import validated
    from actors.validation.config import DetectorConfig
    from actors.validation.detector import detect

    cfg = validated(DetectorConfig, config)
    real, synth = summarize_pair(real_path, synth_path, cfg, k=k, batch_rows=batch_rows, summarizer=summarizer)
    full = compare(real, synth, n_pcs=cfg.n_pcs)
    return detect(real.sample, synth.sample, cfg), full


def sample_pair(real_path: str | Path, synth_path: str | Path, cfg: Any, *, summarizer: Summarizer | None = None,
                engine: str = "in_process") -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """One pass over each file (in process, or with `summarizer`, e.g. Ray Data map_batches + merge): row
    samples of cfg.max_rows rows to run the detector on, and the full-data sketch statistics (`compare`,
    plus the sample size, the pass's seconds and the `engine` name)."""
    import time

    t0 = time.perf_counter()
    real, synth = summarize_pair(real_path, synth_path, cfg, summarizer=summarizer)
    full = compare(real, synth, n_pcs=cfg.n_pcs)
    full.update(sample_rows=cfg.max_rows, summarize_seconds=round(time.perf_counter() - t0, 3),
                engine=engine)
    return real.sample, synth.sample, full


def summarize_pair(real_path: str | Path, synth_path: str | Path, cfg: Any, *, k: int = 200,
                   batch_rows: int = 100_000, summarizer: Summarizer | None = None) -> tuple[TableSketch, TableSketch]:
    """Both tables' summaries (samples of cfg.max_rows rows, differently seeded): in process, two threads,
    or one table after the other through `summarizer` (Ray Data parallelises inside each table)."""
    kw = {"k": k, "reservoir": cfg.max_rows, "batch_rows": batch_rows, "categorical": cfg.categorical}
    if summarizer is not None:
        return summarizer(real_path, seed=cfg.seed, **kw), summarizer(synth_path, seed=cfg.seed + 1, **kw)
    from concurrent.futures import ThreadPoolExecutor

    # two threads: Parquet decoding and the numpy / sketch updates release the GIL for much of the pass
    with ThreadPoolExecutor(2) as ex:
        a = ex.submit(summarize, real_path, seed=cfg.seed, **kw)
        b = ex.submit(summarize, synth_path, seed=cfg.seed + 1, **kw)
        return a.result(), b.result()
