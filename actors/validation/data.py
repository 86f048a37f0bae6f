"""Input tables, their checks, and the pooled real+synthetic representation every dimension tests on.

Everything derived from the data here (category vocabulary, quantile bin edges, imputation medians,
standardisation) is computed on the POOLED rows, so it is invariant under relabelling real <->
synthetic: a permutation test on top of it is exact at the actual sample sizes.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from actors.common.errors import InputError

MISSING = "<NA>"
TABLE_SUFFIXES = (".parquet", ".pq", ".csv")


def load_table(path: str | Path, field: str) -> pd.DataFrame:
    """A .parquet or .csv table; InputError naming `field` (the job argument or request field) when the
    file is missing or of another type, so a bad path is a 4xx / exit 2, not a traceback."""
    path = Path(path)
    if not path.exists():
        raise InputError(field, f"{path} does not exist", "an existing .parquet or .csv file")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if suffix == ".csv":
        return pd.read_csv(path)
    raise InputError(field, f"unsupported file type {suffix!r}", ".parquet, .csv")


def check_label(label: str | None, real: pd.DataFrame, synth: pd.DataFrame) -> None:
    """A label column (when given) must be a column of both tables: InputError on `label` otherwise."""
    if label is not None and (label not in real.columns or label not in synth.columns):
        raise InputError("label", f"{label!r} is not a column of both tables", ", ".join(map(str, real.columns)))


def fingerprint(*tables: pd.DataFrame) -> str:
    """A hash of the tables' columns, dtypes, index and values: resumed work is only reused for the
    same data (sha256 over pandas' row hashes, 16 hex digits)."""
    h = hashlib.sha256()
    for df in tables:
        h.update(repr([(str(c), str(t)) for c, t in df.dtypes.items()]).encode())
        h.update(pd.util.hash_pandas_object(df, index=True).to_numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Pooled:
    """Real rows first, then synthetic rows; `is_synth` marks the synthetic ones."""

    numeric: list[str]
    categorical: list[str]
    X: np.ndarray            # [N, p] float64 numeric columns, NaN = missing
    C: np.ndarray            # [N, q] int category codes (missing is its own code)
    levels: list[list[str]]  # per categorical column, the code -> category name
    bins: np.ndarray         # [N, p] int quantile-bin codes of X (pooled edges); NaN -> n_bins
    n_bins: int
    Z: np.ndarray            # [N, p] X standardised with pooled mean / sd, NaN -> 0 (the pooled median)
    is_synth: np.ndarray     # [N] bool
    index: np.ndarray        # [N] the row's index in its own input table

    @property
    def n_real(self) -> int:
        return int((~self.is_synth).sum())

    @property
    def n_synth(self) -> int:
        return int(self.is_synth.sum())

    @property
    def columns(self) -> list[str]:
        return self.numeric + self.categorical


def check_tables(real: pd.DataFrame, synth: pd.DataFrame,
                 categorical: tuple[str, ...] | list[str] | None = None) -> tuple[list[str], list[str]]:
    """(numeric, categorical) column names; InputError for empty tables, missing columns, type conflicts."""
    for name, df in (("real", real), ("synthetic", synth)):
        if not isinstance(df, pd.DataFrame):
            raise InputError(name, f"expected a table (pandas DataFrame), got {type(df).__name__}")
        if len(df) < 10 or df.shape[1] == 0:
            raise InputError(name, f"table has {len(df)} rows and {df.shape[1]} columns",
                             ">= 10 rows and >= 1 column")
    missing = [c for c in real.columns if c not in synth.columns]
    if missing:
        raise InputError("synthetic", f"columns {missing} of the real table are missing",
                         ", ".join(map(str, real.columns)))
    cats = set(categorical) if categorical is not None else None
    if cats is not None and (unknown := sorted(cats - set(real.columns))):
        raise InputError("categorical", f"{unknown} are not columns of the real table",
                         ", ".join(map(str, real.columns)))
    numeric, cat = [], []
    for c in real.columns:
        r_num, s_num = _is_numeric(real[c]), _is_numeric(synth[c])
        if real[c].isna().all():
            raise InputError(f"real.{c}", "column is all missing", "at least one non-missing value")
        is_cat = (c in cats) if cats is not None else not r_num
        if not is_cat and r_num != s_num:
            raise InputError(f"synthetic.{c}", f"type conflict: real is {real[c].dtype}, synthetic is "
                             f"{synth[c].dtype}", "the same kind (numeric or categorical) in both tables")
        (cat if is_cat else numeric).append(str(c))
    return numeric, cat


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def pool(real: pd.DataFrame, synth: pd.DataFrame, *, categorical: tuple[str, ...] | list[str] | None = None,
         n_bins: int = 10, max_rows: int | None = None, seed: int = 0) -> Pooled:
    """Checked, pooled and pre-binned tables; each side is subsampled to `max_rows` (seeded) if larger."""
    numeric, cat = check_tables(real, synth, categorical)
    rng = np.random.default_rng(seed)
    ri, si = _subsample(len(real), max_rows, rng), _subsample(len(synth), max_rows, rng)
    frame = pd.concat([real.iloc[ri][numeric + cat], synth.iloc[si][numeric + cat]], ignore_index=True)
    X = frame[numeric].to_numpy(dtype=np.float64) if numeric else np.empty((len(frame), 0))
    C, levels = _codes(frame[cat]) if cat else (np.empty((len(frame), 0), dtype=np.int64), [])
    bins = quantile_bins(X, n_bins)
    Z = standardise(X)
    is_synth = np.r_[np.zeros(len(ri), bool), np.ones(len(si), bool)]
    return Pooled(numeric, cat, X, C, levels, bins, n_bins, Z, is_synth, np.r_[ri, si])


def _subsample(n: int, max_rows: int | None, rng: np.random.Generator) -> np.ndarray:
    if max_rows is None or n <= max_rows:
        return np.arange(n)
    return np.sort(rng.choice(n, size=max_rows, replace=False))


def _codes(frame: pd.DataFrame) -> tuple[np.ndarray, list[list[str]]]:
    codes, levels = [], []
    for c in frame.columns:
        s = frame[c].astype("string").fillna(MISSING)
        cat = pd.Categorical(s)
        codes.append(cat.codes.astype(np.int64))
        levels.append([str(v) for v in cat.categories])
    return np.stack(codes, axis=1), levels


def quantile_bins(X: np.ndarray, n_bins: int) -> np.ndarray:
    """Per column, codes 0..n_bins-1 of pooled quantile bins (ties share a bin); NaN -> n_bins."""
    out = np.full(X.shape, n_bins, dtype=np.int64)
    for j in range(X.shape[1]):
        col = X[:, j]
        ok = ~np.isnan(col)
        if not ok.any():
            continue
        edges = np.unique(np.quantile(col[ok], np.linspace(0, 1, n_bins + 1)[1:-1]))
        out[ok, j] = np.searchsorted(edges, col[ok], side="right")
    return out


def standardise(X: np.ndarray) -> np.ndarray:
    """Columns to zero mean / unit sd (pooled), missing values imputed by the column median (then 0-ish)."""
    if X.shape[1] == 0:
        return X.copy()
    with np.errstate(all="ignore"):
        med = np.nanmedian(X, axis=0)
    med = np.where(np.isnan(med), 0.0, med)
    Xi = np.where(np.isnan(X), med, X)
    sd = Xi.std(axis=0)
    return (Xi - Xi.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
