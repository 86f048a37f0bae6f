"""Pydantic models for the validation subsystem's YAML (configs/validation/*.yaml) and calls.

Every decision is calibrated at the actual sample sizes: a permutation null (random relabelling of
the pooled real+synthetic rows) for the two-sample statistics, a real-vs-real leave-one-out null for
memorisation. `n_null` sets the resampling count; the smallest attainable p-value is 1/(n_null+1).
"""
from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from actors.common.errors import InputError

M = TypeVar("M", bound=BaseModel)

DIMENSIONS = ("marginals", "divergence", "correlation", "coverage", "spectral", "dependence",
              "classifier", "memorisation")
Dimension = Literal["marginals", "divergence", "correlation", "coverage", "spectral", "dependence",
                    "classifier", "memorisation"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DetectorConfig(_Strict):
    """Collapse detector: which dimensions, how many null resamples, the FDR level, row caps."""

    dimensions: tuple[Dimension, ...] = DIMENSIONS
    alpha: float = Field(0.05, gt=0, lt=1)             # Benjamini-Hochberg level across dimensions
    n_null: int = Field(199, ge=19, le=100_000)        # permutations / resamples per dimension
    seed: int = Field(0, ge=0)
    bins: int = Field(10, ge=2, le=1_000)              # quantile bins of the real column (JS/KL, Cramér's V)
    tail_quantile: float = Field(0.05, gt=0, lt=0.5)   # tail mass beyond the real q and 1-q quantiles
    n_pcs: int = Field(5, ge=1, le=1_000)              # principal components compared (spectral)
    mi_pairs: int = Field(5, ge=1, le=1_000)           # most dependent pooled column pairs (kNN MI)
    mi_rows: int = Field(200, ge=20, le=2_000)         # rows per side for kNN MI (dense n x n blocks)
    mi_k: int = Field(4, ge=1, le=100)
    max_rows: int = Field(5_000, ge=50)                # rows per side for the permutation tests
    multivariate_rows: int = Field(2_000, ge=50)       # rows per side for the classifier test
    classifier: Literal["hgb", "logistic"] = "hgb"
    cv_folds: int = Field(3, ge=2, le=20)
    dcr_rows: int = Field(50_000, ge=50)               # rows per side for distance to closest record
    categorical: tuple[str, ...] | None = None         # None -> every non-numeric column
    label: str | None = None                           # the label column (confident learning)


class LocalizerConfig(_Strict):
    """Row-level scores: memorised (DCR), outliers (kNN distance), label issues (confident learning)."""

    alpha: float = Field(0.05, gt=0, lt=1)      # Benjamini-Hochberg level over rows, per reason
    k_outlier: int = Field(5, ge=1, le=100)     # neighbours for the outlier distance
    cv_folds: int = Field(5, ge=2, le=20)       # folds for out-of-sample label probabilities
    max_rows: int = Field(1_000, ge=1)          # most rows reported
    seed: int = Field(0, ge=0)
    ann: Literal["auto", "exact", "ivf", "hnsw"] = "auto"   # nearest-neighbour search (actors/validation/ann.py)
    ann_exact_below: int = Field(50_000, ge=1)   # auto: exact FAISS below this many real rows, IVF-Flat above
    null_rows: int = Field(20_000, ge=100)      # real rows whose leave-one-out distances form the conformal null


class RecommenderConfig(_Strict):
    """Fixes tried on the data; each re-runs the failing dimensions with `n_null` resamples."""

    fixes: tuple[Literal["deduplicate", "drop_outliers", "relabel", "reweight", "resample_tails",
                         "regenerate"], ...] = ("deduplicate", "drop_outliers", "relabel", "reweight",
                                                "resample_tails", "regenerate")
    n_null: int = Field(99, ge=19, le=100_000)
    seed: int = Field(0, ge=0)


class PlantedSpec(_Strict):
    """A planted-collapse pair: a reference data set, the case, its severity, the size."""

    case: Literal["clean", "mode_collapse", "variance_shrinkage", "recursive_collapse", "tail_truncation",
                  "category_dropout", "category_merge", "correlation_breakage", "memorised", "label_noise",
                  "missingness", "outliers"] = "clean"
    severity: Literal["low", "medium", "high"] = "high"
    dataset: Literal["breast_cancer", "wine", "diabetes", "digits"] = "breast_cancer"
    n: int | None = Field(None, ge=20, le=10_000_000)  # rows per side; None -> split the data set in halves
    fraction: float | None = Field(None, gt=0, le=1)   # rows affected; None -> the severity's default
    generations: int | None = Field(None, ge=1, le=100)  # recursive collapse; None -> the severity's
    seed: int = Field(0, ge=0)


class WorkerConfig(_Strict):
    """ValidationWorker actor resources: CPU actors on a laptop, GPU-pinned ones on a cluster."""

    num_workers: int | Literal["auto"] = "auto"
    num_gpus: float = Field(0, ge=0)
    num_cpus: float = Field(1.0, gt=0)
    max_restarts: int = -1
    max_task_retries: int = 2


class ValidationSpec(_Strict):
    """The validate job: detector, localizer, recommender and worker settings."""

    name: str = "validation"
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    localizer: LocalizerConfig = Field(default_factory=LocalizerConfig)
    recommender: RecommenderConfig = Field(default_factory=RecommenderConfig)
    workers: WorkerConfig = Field(default_factory=WorkerConfig)


_BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def validated(cls: type[M], value: M | dict[str, Any] | None = None, /, *, prefix: str = "",
              **overrides: Any) -> M:
    """`cls` from a model or dict plus keyword overrides; bad fields raise InputError, not pydantic's."""
    if isinstance(value, cls) and not overrides:
        return value
    data = value.model_dump() if isinstance(value, BaseModel) else dict(value or {})
    data.update(overrides)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err.get("loc", ())) or exc.title
        ctx = err.get("ctx") or {}
        bounds = [f"{_BOUNDS[k]} {ctx[k]}" for k in ("gt", "ge", "lt", "le") if k in ctx]
        allowed = " and ".join(bounds) or (str(ctx["expected"]) if "expected" in ctx else None)
        raise InputError(prefix + field, err.get("msg", "invalid value"), allowed) from None
