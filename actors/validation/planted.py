"""Planted-collapse generator: real/synthetic pairs with a known failure, its severity and the rows.

Reference data ship offline: sklearn's bundled breast_cancer, wine, diabetes and digits (the class
label as a categorical `target`; diabetes' `sex` as a category). Without `n` the data set is split
into two random halves (real, synthetic): a clean control is then exactly exchangeable. With `n`,
a Gaussian copula fitted to the data set (rank-normal scores, their correlation, empirical inverse
marginals) samples real and synthetic tables of n rows each - any size, same distribution.
The case then corrupts `fraction` of the synthetic rows and records their indices.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import norm

from actors.common.config import validated
from actors.validation.config import PlantedSpec

FRACTION = {"low": 0.05, "medium": 0.15, "high": 0.4}
OUTLIER_FRACTION = {"low": 0.01, "medium": 0.03, "high": 0.08}
CATEGORY_FRACTION = {"low": 0.3, "medium": 0.6, "high": 1.0}   # share of the category's rows moved
TAIL_FRACTION = {"low": 0.3, "medium": 0.6, "high": 1.0}       # a clipping generator clips every row
GENERATIONS = {"low": 2, "medium": 5, "high": 10}
SHRINK = {"low": 0.7, "medium": 0.5, "high": 0.2}               # sd multiplier of affected rows
TAIL_Q = {"low": 0.02, "medium": 0.05, "high": 0.1}             # clip beyond these real quantiles
OUTLIER_SD = {"low": 4.0, "medium": 6.0, "high": 8.0}
MODES = {"low": 3, "medium": 2, "high": 1}

# The dimension(s) a case is meant to trip (tests check that at least one of them is flagged).
EXPECTED = {
    "mode_collapse": ("coverage", "marginals", "classifier", "divergence"),
    "variance_shrinkage": ("coverage", "marginals"),
    "recursive_collapse": ("marginals", "coverage", "classifier", "correlation", "divergence"),
    "tail_truncation": ("coverage",),
    "category_dropout": ("marginals", "divergence", "coverage"),
    "category_merge": ("marginals", "divergence", "coverage"),
    "correlation_breakage": ("correlation",),
    "memorised": ("memorisation",),
    "label_noise": ("correlation",),
    "missingness": ("marginals",),
    "outliers": ("marginals", "coverage", "spectral", "memorisation"),   # spectral: total variance
}


@dataclass
class PlantedPair:
    """A real table, a synthetic table with a planted failure, and where it was planted."""

    real: pd.DataFrame
    synth: pd.DataFrame
    rows: np.ndarray                 # synthetic row indices the case changed
    spec: PlantedSpec
    fraction: float
    label: str | None
    expected: tuple[str, ...] = field(default_factory=tuple)


def load_reference(name: str) -> tuple[pd.DataFrame, str | None]:
    """A bundled sklearn data set as a DataFrame and the name of its categorical label (or None)."""
    from sklearn import datasets

    loader = {"breast_cancer": datasets.load_breast_cancer, "wine": datasets.load_wine,
              "diabetes": datasets.load_diabetes, "digits": datasets.load_digits}[name]
    bunch = loader(as_frame=True)
    df = bunch.frame.copy()
    df.columns = [str(c).replace(" ", "_") for c in df.columns]
    if name == "diabetes":
        df["sex"] = np.where(df["sex"] > 0, "a", "b")
        return df, None
    names = getattr(bunch, "target_names", None)
    labels = [str(names[i]) if names is not None else str(i) for i in df["target"]]
    df["target"] = pd.Series(labels, dtype="object")
    return df, "target"


def categorical_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]


class GaussianCopula:
    """Rank-normal Gaussian copula with empirical marginals (categorical columns by their codes)."""

    def __init__(self, df: pd.DataFrame):
        self.columns = list(df.columns)
        self.categorical = set(categorical_columns(df))
        self.values, self.levels = {}, {}
        scores = []
        for c in self.columns:
            col = df[c]
            if c in self.categorical:
                cat = pd.Categorical(col.astype(str))
                self.levels[c] = list(cat.categories)
                x = cat.codes.astype(float)
            else:
                x = col.to_numpy(dtype=float)
            x = x[~np.isnan(x)]
            self.values[c] = np.sort(x)
            r = col.rank(method="average").to_numpy() if c not in self.categorical else \
                pd.Series(pd.Categorical(col.astype(str)).codes).rank(method="average").to_numpy()
            scores.append(norm.ppf(np.nan_to_num(r, nan=len(col) / 2) / (len(col) + 1)))
        self.corr = np.nan_to_num(np.corrcoef(np.array(scores)), nan=0.0)
        np.fill_diagonal(self.corr, 1.0)
        w, v = np.linalg.eigh(self.corr)
        self.chol = v * np.sqrt(np.clip(w, 1e-9, None))   # a square root that tolerates rank deficiency

    def sample(self, n: int, rng: np.random.Generator) -> pd.DataFrame:
        u = norm.cdf(rng.standard_normal((n, len(self.columns))) @ self.chol.T)
        out = {}
        for j, c in enumerate(self.columns):
            if c in self.categorical:
                codes = np.quantile(self.values[c], u[:, j], method="inverted_cdf").astype(int)
                out[c] = np.asarray(self.levels[c], dtype=object)[codes]
            else:
                out[c] = np.quantile(self.values[c], u[:, j])
        return pd.DataFrame(out, columns=self.columns)


def plant(spec: PlantedSpec | dict | None = None, **overrides) -> PlantedPair:
    """Generate a (real, synthetic) pair with the planted case; see PlantedSpec for the knobs."""
    spec = validated(PlantedSpec, spec, **overrides)
    rng = np.random.default_rng(spec.seed)
    df, label = load_reference(spec.dataset)
    if spec.n is None:
        idx = rng.permutation(len(df))
        half = len(df) // 2
        real = df.iloc[idx[:half]].reset_index(drop=True)
        synth = df.iloc[idx[half:2 * half]].reset_index(drop=True)
    else:
        cop = GaussianCopula(df)
        real, synth = cop.sample(spec.n, rng), cop.sample(spec.n, rng)
    case, sev = spec.case, spec.severity
    default = {"outliers": OUTLIER_FRACTION, "category_dropout": CATEGORY_FRACTION, "tail_truncation": TAIL_FRACTION,
               "category_merge": CATEGORY_FRACTION}.get(case, FRACTION)[sev]
    frac = spec.fraction if spec.fraction is not None else default
    if case == "clean":
        return PlantedPair(real, synth, np.zeros(0, np.int64), spec, 0.0, label, ())
    synth, rows = CASES[case](real, synth.copy(), frac, sev, rng, label=label, spec=spec)
    return PlantedPair(real, synth, np.sort(np.asarray(rows, dtype=np.int64)), spec, frac, label, EXPECTED[case])


def _numeric(df: pd.DataFrame, label: str | None) -> list[str]:
    return [c for c in df.columns if c != label and pd.api.types.is_numeric_dtype(df[c])]


def _set_rows(synth: pd.DataFrame, rows: np.ndarray, src: pd.DataFrame) -> None:
    """Replace synthetic rows column by column (keeps each column's dtype)."""
    for c in synth.columns:
        synth.loc[rows, c] = src[c].to_numpy()


def _affected(n: int, frac: float, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(n, size=max(1, int(round(frac * n))), replace=False))


def mode_collapse(real, synth, frac, sev, rng, **_):
    """Affected rows become jittered copies of 1-3 synthetic 'modes' (a generator stuck on few outputs)."""
    rows = _affected(len(synth), frac, rng)
    keep = np.setdiff1d(np.arange(len(synth)), rows)
    modes = rng.choice(keep, size=MODES[sev], replace=False)
    num = _numeric(synth, None)
    src = synth.iloc[rng.choice(modes, size=len(rows))].reset_index(drop=True)
    sd = real[num].std().to_numpy()
    src[num] = src[num].to_numpy() + 0.05 * sd * rng.standard_normal((len(rows), len(num)))
    _set_rows(synth, rows, src)
    return synth, rows


def variance_shrinkage(real, synth, frac, sev, rng, label=None, **_):
    """Affected rows pulled toward the column means: x <- mean + s (x - mean)."""
    rows = _affected(len(synth), frac, rng)
    num = _numeric(synth, label)
    mu = real[num].mean().to_numpy()
    synth.loc[rows, num] = mu + SHRINK[sev] * (synth.loc[rows, num].to_numpy() - mu)
    return synth, rows


def recursive_collapse(real, synth, frac, sev, rng, spec=None, **_):
    """Affected rows come from a copula refit on its own small sample for g generations."""
    rows = _affected(len(synth), frac, rng)
    g = spec.generations if spec is not None and spec.generations else GENERATIONS[sev]
    m = max(20, min(100, len(real) // 4))        # small generations: estimation error compounds
    data = real.sample(n=m, random_state=int(rng.integers(2**31)), replace=len(real) < m)
    for _ in range(g):
        data = GaussianCopula(data).sample(m, rng)
    _set_rows(synth, rows, GaussianCopula(data).sample(len(rows), rng))
    return synth, rows


def tail_truncation(real, synth, frac, sev, rng, label=None, **_):
    """In affected rows, values beyond the real q / 1-q quantiles are clipped to them."""
    rows = _affected(len(synth), frac, rng)
    num = _numeric(synth, label)
    q = TAIL_Q[sev]
    lo, hi = real[num].quantile(q).to_numpy(), real[num].quantile(1 - q).to_numpy()
    block = synth.loc[rows, num].to_numpy(dtype=float, copy=True)
    clipped = np.clip(block, lo, hi)
    synth.loc[rows, num] = clipped
    return synth, rows[(clipped != block).any(axis=1)]


def _category_column(synth: pd.DataFrame, label: str | None) -> str:
    cats = categorical_columns(synth)
    if not cats:
        raise ValueError("this data set has no categorical column")
    return label if label in cats else cats[0]


def category_dropout(real, synth, frac, sev, rng, label=None, **_):
    """The rarest category loses `frac` of its rows to the other categories (at random)."""
    col = _category_column(synth, label)
    counts = synth[col].value_counts()
    rare = counts.index[-1]
    others = [c for c in counts.index if c != rare]
    rows = np.flatnonzero(synth[col].to_numpy() == rare)
    rows = rows[rng.random(len(rows)) < frac] if frac < 1 else rows
    synth.loc[rows, col] = rng.choice(others, size=len(rows))
    return synth, rows


def category_merge(real, synth, frac, sev, rng, label=None, **_):
    """The two rarest categories merge: `frac` of the rarest one's rows take the second rarest's value."""
    col = _category_column(synth, label)
    counts = synth[col].value_counts()
    rare, into = counts.index[-1], counts.index[-2]
    rows = np.flatnonzero(synth[col].to_numpy() == rare)
    rows = rows[rng.random(len(rows)) < frac] if frac < 1 else rows
    synth.loc[rows, col] = into
    return synth, rows


def correlation_breakage(real, synth, frac, sev, rng, label=None, **_):
    """In affected rows every column (label included) is shuffled independently: marginals kept, joint lost."""
    rows = _affected(len(synth), frac, rng)
    for c in synth.columns:
        synth.loc[rows, c] = synth.loc[rows, c].to_numpy()[rng.permutation(len(rows))]
    return synth, rows


def memorised(real, synth, frac, sev, rng, label=None, **_):
    """Affected rows become copies of real rows: half exact, half jittered by 1% of a column sd."""
    rows = _affected(len(synth), frac, rng)
    src = real.iloc[rng.choice(len(real), size=len(rows), replace=len(rows) > len(real))].reset_index(drop=True)
    num = _numeric(real, label)
    jitter = np.arange(len(rows)) % 2 == 1
    sd = real[num].std().to_numpy()
    vals = src[num].to_numpy(dtype=float, copy=True)
    vals[jitter] += 0.01 * sd * rng.standard_normal((int(jitter.sum()), len(num)))
    src[num] = vals
    _set_rows(synth, rows, src)
    return synth, rows


def label_noise(real, synth, frac, sev, rng, label=None, **_):
    """Affected rows get a different, random label."""
    col = _category_column(synth, label)
    rows = _affected(len(synth), frac, rng)
    classes = np.array(sorted(synth[col].unique()))
    old = synth.loc[rows, col].to_numpy()
    new = np.array([rng.choice(classes[classes != o]) for o in old], dtype=object)
    synth.loc[rows, col] = new
    return synth, rows


def missingness(real, synth, frac, sev, rng, label=None, **_):
    """In affected rows each numeric cell goes missing with probability 1/2 (at least one per row)."""
    rows = _affected(len(synth), frac, rng)
    num = _numeric(synth, label)
    drop = rng.random((len(rows), len(num))) < 0.5
    drop[np.arange(len(rows)), rng.integers(len(num), size=len(rows))] = True
    block = synth.loc[rows, num].to_numpy(dtype=float, copy=True)
    block[drop] = np.nan
    synth[num] = synth[num].astype(float)
    synth.loc[rows, num] = block
    return synth, rows


def outliers(real, synth, frac, sev, rng, label=None, **_):
    """Affected rows shifted by +-k real sds in 3 random numeric columns."""
    rows = _affected(len(synth), frac, rng)
    num = _numeric(synth, label)
    sd = real[num].std().to_numpy()
    block = synth.loc[rows, num].to_numpy(dtype=float, copy=True)
    for i in range(len(rows)):
        cols = rng.choice(len(num), size=min(3, len(num)), replace=False)
        block[i, cols] += rng.choice([-1, 1], size=len(cols)) * OUTLIER_SD[sev] * sd[cols]
    synth.loc[rows, num] = block
    return synth, rows


CASES = {"mode_collapse": mode_collapse, "variance_shrinkage": variance_shrinkage,
         "recursive_collapse": recursive_collapse, "tail_truncation": tail_truncation,
         "category_dropout": category_dropout, "category_merge": category_merge,
         "correlation_breakage": correlation_breakage, "memorised": memorised, "label_noise": label_noise,
         "missingness": missingness, "outliers": outliers}
