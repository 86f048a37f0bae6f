"""Mergeable one-pass summaries of a table: what DetectCollapse needs from rows it never holds at once.

Per numeric column a KLL quantile sketch (datasketches; normalized rank error eps ~1.3 % at k=200,
so a sketch KS statistic is within 2 eps of the exact one); per categorical column a HyperLogLog
sketch (distinct count, relative error ~1.6 % at lg_k=12, 1 sd) and a frequent-items sketch (counts
of the heavy hitters within total / (0.75 * 2**lg_max_k)); over all numeric columns the mean and
co-moment matrix merged with Chan et al.'s pairwise update in float64 (exact up to rounding: the
correlation and PCA spectrum of every row); and a bottom-k uniform row sample (each row gets a
random key, the `reservoir` smallest keys are kept) for the multivariate dimensions.

Every part merges associatively and commutatively, so batches can be summarised anywhere (a Ray
Data map_batches UDF, a thread, a notebook) and combined in any order with the same result; the
sample is identical under any merge order because it is a function of the keys alone. A summary
pickles by serialising its sketches (datasketches objects do not pickle themselves). No Ray.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from actors.common.errors import InputError

MISSING = "<NA>"


@dataclass
class Moments:
    """Count, mean and co-moment sum M2 = sum (x - mean)(x - mean)^T over complete rows, float64."""

    n: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def empty(cls, p: int) -> Moments:
        return cls(0, np.zeros(p), np.zeros((p, p)))

    @classmethod
    def of(cls, X: np.ndarray) -> Moments:
        """Moments of the rows of X without a missing value (the covariance is over complete rows)."""
        X = np.asarray(X, dtype=np.float64)
        X = X[~np.isnan(X).any(axis=1)]
        if len(X) == 0:
            return cls.empty(X.shape[1])
        mean = X.mean(axis=0)
        D = X - mean
        return cls(len(X), mean, D.T @ D)

    def merge(self, other: Moments) -> Moments:
        """Chan, Golub & LeVeque's pairwise update: exact, and stable when the two means differ."""
        if other.n == 0:
            return Moments(self.n, self.mean.copy(), self.m2.copy())
        if self.n == 0:
            return Moments(other.n, other.mean.copy(), other.m2.copy())
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.n / n)
        m2 = self.m2 + other.m2 + np.outer(delta, delta) * (self.n * other.n / n)
        return Moments(n, mean, m2)

    def covariance(self, ddof: int = 1) -> np.ndarray:
        return self.m2 / max(self.n - ddof, 1)

    def correlation(self) -> np.ndarray:
        c = self.covariance()
        sd = np.sqrt(np.diag(c))
        with np.errstate(all="ignore"):
            r = c / np.outer(sd, sd)
        return np.where(np.outer(sd, sd) > 0, r, 0.0)


@dataclass(frozen=True)
class SketchConfig:
    """Sketch sizes: KLL k, HLL lg_k, frequent-items lg_max_k, sample rows, seed of the row keys."""

    k: int = 200
    hll_lg_k: int = 12
    freq_lg_max_k: int = 10
    reservoir: int = 5_000
    seed: int = 0

    def __post_init__(self) -> None:
        for name, lo, hi in (("k", 8, 65_535), ("hll_lg_k", 4, 21), ("freq_lg_max_k", 3, 24),
                             ("reservoir", 1, 10_000_000)):
            v = getattr(self, name)
            if not lo <= v <= hi:
                raise InputError(f"sketch.{name}", f"{v} is out of range", f">= {lo} and <= {hi}")


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def row_keys(batch: pd.DataFrame, seed: int) -> np.ndarray:
    """Uniform(0, 1) keys for the rows of a batch, seeded by the seed and the batch's content.

    Content seeding makes the keys (so the sample) independent of where and in which order batches
    are processed, without a global row index (Ray Data batches carry none).
    """
    h = hashlib.blake2b(digest_size=8)
    h.update(str(len(batch)).encode())
    h.update(pd.util.hash_pandas_object(batch.iloc[[0, -1]] if len(batch) else batch, index=False).to_numpy().tobytes())
    return np.random.default_rng([seed, int.from_bytes(h.digest(), "little")]).random(len(batch))


@dataclass
class TableSketch:
    """One table's mergeable summary (see the module docstring). Build with `update`, combine with `merge`."""

    config: SketchConfig = field(default_factory=SketchConfig)
    categorical: tuple[str, ...] | None = None      # None -> every non-numeric column
    n: int = 0
    numeric: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    kll: dict[str, Any] = field(default_factory=dict)
    hll: dict[str, Any] = field(default_factory=dict)
    freq: dict[str, Any] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)
    moments: Moments | None = None
    sample: pd.DataFrame | None = None
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0))

    # -- building -------------------------------------------------------------------------------
    def _kinds(self, batch: pd.DataFrame) -> None:
        if self.numeric or self.categories:
            return
        cats = set(self.categorical) if self.categorical is not None else None
        for c in batch.columns:
            is_cat = (c in cats) if cats is not None else not _is_numeric(batch[c])
            (self.categories if is_cat else self.numeric).append(str(c))

    def update(self, batch: pd.DataFrame) -> TableSketch:
        """Add a batch of rows (a DataFrame with this table's columns)."""
        import datasketches as ds

        if len(batch) == 0:
            return self
        batch = batch.reset_index(drop=True)
        batch.columns = [str(c) for c in batch.columns]
        self._kinds(batch)
        if missing := [c for c in self.numeric + self.categories if c not in batch.columns]:
            raise InputError("batch", f"columns {missing} are missing from a batch", ", ".join(batch.columns))
        cfg = self.config
        if self.numeric:
            try:
                X = batch[self.numeric].to_numpy(dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise InputError("batch", f"a numeric column has non-numeric values ({exc})",
                                 "numbers in " + ", ".join(self.numeric)) from None
            for j, c in enumerate(self.numeric):
                col = X[:, j]
                ok = ~np.isnan(col)
                self.kll.setdefault(c, ds.kll_doubles_sketch(cfg.k)).update(col[ok])
                self.missing[c] = self.missing.get(c, 0) + int((~ok).sum())
            m = Moments.of(X)
            self.moments = m if self.moments is None else self.moments.merge(m)
        for c in self.categories:
            counts = batch[c].astype("string").fillna(MISSING).value_counts(sort=False)
            hll = self.hll.setdefault(c, ds.hll_sketch(cfg.hll_lg_k))
            freq = self.freq.setdefault(c, ds.frequent_strings_sketch(cfg.freq_lg_max_k))
            for value, count in counts.items():   # one update per distinct value: HLL is idempotent
                hll.update(value)
                freq.update(value, int(count))
            self.missing[c] = self.missing.get(c, 0) + int(counts.get(MISSING, 0))
        self._sample(batch, row_keys(batch, cfg.seed))
        self.n += len(batch)
        return self

    def _sample(self, rows: pd.DataFrame, keys: np.ndarray) -> None:
        """Keep the rows with the `reservoir` smallest keys (bottom-k: a uniform sample without replacement)."""
        cap = self.config.reservoir
        if self.sample is not None and len(self.keys) >= cap:
            new = keys < self.keys.max()
            rows, keys = rows[new], keys[new]
            if len(keys) == 0:
                return
        rows = rows.reset_index(drop=True)
        if self.sample is not None:
            rows = pd.concat([self.sample, rows], ignore_index=True)
            keys = np.r_[self.keys, keys]
        keep = np.argsort(keys, kind="stable")[:cap]   # ordered by key: the same frame under any merge order
        self.sample, self.keys = rows.iloc[keep].reset_index(drop=True), keys[keep]

    # -- combining ------------------------------------------------------------------------------
    def merge(self, other: TableSketch) -> TableSketch:
        """A new summary of both inputs' rows (neither input is changed)."""
        import datasketches as ds

        if other.n == 0:
            return _copy(self)
        if self.n == 0:
            return _copy(other)
        if (self.numeric, self.categories) != (other.numeric, other.categories):
            raise InputError("batch", f"column kinds differ between parts: numeric {self.numeric} vs "
                             f"{other.numeric}, categorical {self.categories} vs {other.categories}",
                             "the same columns of the same kind in every batch")
        out = _copy(self)
        for c in self.numeric:
            out.kll[c].merge(other.kll[c])
        for c in self.categories:
            u = ds.hll_union(self.config.hll_lg_k)
            u.update(self.hll[c])
            u.update(other.hll[c])
            out.hll[c] = u.get_result(ds.tgt_hll_type.HLL_8)
            out.freq[c].merge(other.freq[c])
        out.missing = {c: self.missing.get(c, 0) + other.missing.get(c, 0) for c in self.missing}
        if self.moments is not None and other.moments is not None:
            out.moments = self.moments.merge(other.moments)
        out.n = self.n + other.n
        out._sample(other.sample, other.keys)
        return out

    # -- reading --------------------------------------------------------------------------------
    def distinct(self, column: str) -> dict[str, float]:
        """HLL distinct-count estimate with its 2-sd bounds."""
        h = self.hll[column]
        return {"estimate": h.get_estimate(), "lower": h.get_lower_bound(2), "upper": h.get_upper_bound(2)}

    def heavy_hitters(self, column: str) -> dict[str, int]:
        """{value: estimated count} of every value the sketch may hold above its error threshold."""
        import datasketches as ds

        items = self.freq[column].get_frequent_items(ds.frequent_items_error_type.NO_FALSE_NEGATIVES)
        return {str(v): int(est) for v, est, *_ in items}

    def rank_error(self) -> float:
        """The KLL normalized rank error (single-sided) of this configuration."""
        import datasketches as ds

        return float(ds.kll_doubles_sketch.get_normalized_rank_error(self.config.k, False))

    # -- pickling (Ray object store, files) ----------------------------------------------------
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["kll"] = {c: s.serialize() for c, s in self.kll.items()}
        state["hll"] = {c: s.serialize_compact() for c, s in self.hll.items()}
        state["freq"] = {c: s.serialize() for c, s in self.freq.items()}
        return state

    def __setstate__(self, state: dict) -> None:
        import datasketches as ds

        state = dict(state)
        state["kll"] = {c: ds.kll_doubles_sketch.deserialize(b) for c, b in state["kll"].items()}
        state["hll"] = {c: ds.hll_sketch.deserialize(b) for c, b in state["hll"].items()}
        state["freq"] = {c: ds.frequent_strings_sketch.deserialize(b) for c, b in state["freq"].items()}
        self.__dict__.update(state)


def _copy(s: TableSketch) -> TableSketch:
    """A deep copy through the pickling state (sketch objects are copied via their bytes)."""
    out = TableSketch.__new__(TableSketch)
    out.__setstate__(s.__getstate__())
    out.missing = dict(s.missing)
    out.numeric, out.categories = list(s.numeric), list(s.categories)
    return out


def merge_all(parts: list[TableSketch]) -> TableSketch:
    """Merge any number of summaries (order does not matter)."""
    if not parts:
        raise InputError("parts", "no summaries to merge", "at least one")
    out = parts[0]
    for p in parts[1:]:
        out = out.merge(p)
    return out
