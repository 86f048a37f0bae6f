"""Input tables, their checks, and the pooled real+synthetic representation every dimension tests on.

Everything derived from the data here (category vocabulary, quantile bin edges, imputation medians,
standardisation) is computed on the POOLED rows, so it is invariant under relabelling real <->
synthetic: a permutation test on top of it is exact at the actual sample sizes.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
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


MAX_ABS = 1e150   # largest |value| accepted in a numeric column (see check_values)


def check_values(df: pd.DataFrame, field: str, *, nested: bool = True) -> None:
    """Cells every engine can compute with; InputError naming `field.column` otherwise.

    Numeric columns: finite and |x| <= 1e150 (NaN is a missing value). A bound, not a rescale: the
    statistics square and sum values (variances, covariances, distances of up to 10^6 rows), which
    overflows float64 (max ~1.8e308) from |x| ~ 1e154 on, and a column of 1e308 and 1 cannot be
    standardised without losing every small value anyway. Other columns (categories), with `nested`:
    scalars only (no nested lists / objects from JSON records; a Python loop over the cells, so the
    engines' own checks skip it).
    """
    for c in df.columns:
        col = df[c]
        if _is_numeric(col):
            with np.errstate(invalid="ignore"):
                x = col.to_numpy(dtype=np.float64, na_value=np.nan)
                bad = np.flatnonzero(np.isinf(x) | (np.abs(x) > MAX_ABS))
            if len(bad):
                raise InputError(f"{field}.{c}", f"row {int(bad[0])}: {float(x[bad[0]])!r} is not a finite number "
                                 f"of magnitude <= {MAX_ABS:g}", f"finite numbers with |x| <= {MAX_ABS:g}; "
                                 "missing values as null / empty")
        elif nested and col.dtype == object:
            inner = col.map(lambda v: isinstance(v, (list, dict, tuple, set))).to_numpy(dtype=bool)
            if inner.any():
                i = int(np.flatnonzero(inner)[0])
                raise InputError(f"{field}.{c}", f"row {i}: a {type(col.iloc[i]).__name__} is not a table cell",
                                 "numbers, strings, booleans or null")


def load_table_under(root: str | Path, path: str, field: str) -> pd.DataFrame:
    """A .parquet / .csv table at `path` (absolute, or relative to `root`) that lies inside `root`.

    The path is resolved (symlinks followed, `..` collapsed) and must stay inside the resolved root;
    the file is then opened without following a final symlink and, where /proc exists, the opened
    file's own path is checked again (a symlink swapped in between is refused). Outside the root,
    missing, not a regular file, or not openable: one error text, so a caller learns nothing about
    what exists outside the root (and no file outside it is ever parsed, so no column name leaks).
    """
    import os
    import stat

    allowed = f"a {', '.join(TABLE_SUFFIXES)} file inside the server's data_root (relative paths start there)"
    denied = InputError(field, "no readable table at this path inside data_root", allowed)
    if Path(str(path)).suffix.lower() not in TABLE_SUFFIXES:   # from the string alone: no oracle
        raise InputError(field, f"unsupported file type {Path(str(path)).suffix.lower()!r}", allowed)
    try:
        base = Path(root).resolve(strict=False)
        given = Path(path)
        target = (given if given.is_absolute() else base / given).resolve(strict=False)
    except (OSError, ValueError, RuntimeError):
        raise denied from None
    if not target.is_relative_to(base) or target.suffix.lower() not in TABLE_SUFFIXES:
        raise denied
    try:
        fd = os.open(target, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except (OSError, ValueError):
        raise denied from None
    try:
        proc = Path(f"/proc/self/fd/{fd}")
        if not stat.S_ISREG(os.fstat(fd).st_mode) or (proc.exists() and not
                                                      Path(os.readlink(proc)).is_relative_to(base)):
            raise denied
    except OSError:
        os.close(fd)
        raise denied from None
    except InputError:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as fh:
        try:
            return pd.read_parquet(fh) if target.suffix.lower() in (".parquet", ".pq") else pd.read_csv(fh)
        except Exception as exc:   # a file inside the root that is not a table of its type
            raise InputError(field, f"unreadable {target.suffix.lower()} table ({type(exc).__name__})",
                             allowed) from None


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
    # the rows the memorisation dimension searches when a side was subsampled to max_rows: every row
    # up to dcr_rows a side, pooled the same way (None: these rows). A copy can only be found next to
    # the real row it copies, which a 5 000-row sample of each side mostly leaves out.
    dcr: Pooled | None = None

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
        check_values(df, name, nested=False)
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
        is_cat = (c in cats or not r_num) if cats is not None else not r_num   # text is never numeric
        if not is_cat and r_num != s_num:
            raise InputError(f"synthetic.{c}", f"type conflict: real is {real[c].dtype}, synthetic is "
                             f"{synth[c].dtype}", "the same kind (numeric or categorical) in both tables")
        (cat if is_cat else numeric).append(str(c))
    return numeric, cat


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def pool(real: pd.DataFrame, synth: pd.DataFrame, *, categorical: tuple[str, ...] | list[str] | None = None,
         n_bins: int = 10, max_rows: int | None = None, seed: int = 0, dcr_rows: int | None = None) -> Pooled:
    """Checked, pooled and pre-binned tables; each side is subsampled to `max_rows` (seeded) if larger.

    dcr_rows: when a side is over `max_rows`, also pool up to `dcr_rows` rows a side into `.dcr` (a
    differently seeded subsample, only when larger than `max_rows`) for the distance-to-closest-record
    test; the permutation tests keep the `max_rows` rows."""
    numeric, cat = check_tables(real, synth, categorical)
    rng = np.random.default_rng(seed)
    ri, si = _subsample(len(real), max_rows, rng), _subsample(len(synth), max_rows, rng)
    out = _pooled(real, synth, ri, si, numeric, cat, n_bins)
    if (dcr_rows is not None and max_rows is not None and dcr_rows > max_rows
            and max(len(real), len(synth)) > max_rows):
        drng = np.random.default_rng([seed, 1])
        di, ds = _subsample(len(real), dcr_rows, drng), _subsample(len(synth), dcr_rows, drng)
        out = replace(out, dcr=_pooled(real, synth, di, ds, numeric, cat, n_bins))
    return out


def _pooled(real: pd.DataFrame, synth: pd.DataFrame, ri: np.ndarray, si: np.ndarray, numeric: list[str],
            cat: list[str], n_bins: int) -> Pooled:
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
