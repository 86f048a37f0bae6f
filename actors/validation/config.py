"""Pydantic models for the validation subsystem's YAML (configs/validation/*.yaml) and calls.

Every decision is calibrated at the actual sample sizes: a permutation null (random relabelling of
the pooled real+synthetic rows) for the two-sample statistics, a real-vs-real leave-one-out null for
memorisation. `n_null` sets the resampling count; the smallest attainable p-value is 1/(n_null+1).
Each Literal is defined once here and reused (the job's choices, the planted generator, the ANN index).
"""
from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field, field_validator

from actors.common.config import Strict, WorkerConfig

__all__ = [
    "DIMENSIONS", "DatasetName", "DetectorConfig", "Dimension", "Fix", "LocalizerConfig", "NeighbourSearch",
    "PlantedCase", "PlantedSpec", "RecommenderConfig", "SEED_MAX", "Severity", "ValidationSpec", "WorkerConfig",
]

Dimension = Literal["marginals", "divergence", "correlation", "coverage", "spectral", "dependence",
                    "classifier", "memorisation"]
DIMENSIONS: tuple[str, ...] = get_args(Dimension)
NeighbourSearch = Literal["auto", "exact", "ivf", "hnsw"]   # actors/validation/ann.py
Fix = Literal["deduplicate", "drop_outliers", "relabel", "reweight", "resample_tails", "regenerate"]
PlantedCase = Literal["clean", "mode_collapse", "variance_shrinkage", "recursive_collapse", "tail_truncation",
                      "category_dropout", "category_merge", "correlation_breakage", "memorised", "label_noise",
                      "missingness", "outliers"]
Severity = Literal["low", "medium", "high"]
DatasetName = Literal["breast_cancer", "wine", "diabetes", "digits"]
SEED_MAX = 2**31 - 1   # seeds go to scikit-learn / torch as random_state (plus small offsets): 32-bit


class DetectorConfig(Strict):
    """Collapse detector: which dimensions, how many null resamples, the FDR level, row caps."""

    dimensions: tuple[Dimension, ...] = DIMENSIONS  # type: ignore[assignment]
    alpha: float = Field(0.05, gt=0, lt=1)             # Benjamini-Hochberg level across dimensions
    n_null: int = Field(199, ge=19, le=100_000)        # permutations / resamples per dimension
    seed: int = Field(0, ge=0, le=SEED_MAX)
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

    @field_validator("mi_k")
    @classmethod
    def _fewer_neighbours_than_rows(cls, k: int, info) -> int:
        rows = info.data.get("mi_rows")
        if rows is not None and k >= rows:
            raise ValueError(f"mi_k = {k} neighbours need more than mi_rows = {rows} rows")
        return k


class LocalizerConfig(Strict):
    """Row-level scores: memorised (DCR), outliers (kNN distance), label issues (confident learning)."""

    alpha: float = Field(0.05, gt=0, lt=1)      # Benjamini-Hochberg level over rows, per reason
    k_outlier: int = Field(5, ge=1, le=100)     # neighbours for the outlier distance
    cv_folds: int = Field(5, ge=2, le=20)       # folds for out-of-sample label probabilities
    max_rows: int = Field(1_000, ge=1)          # most rows reported
    seed: int = Field(0, ge=0, le=SEED_MAX)
    ann: NeighbourSearch = "auto"               # nearest-neighbour search (actors/validation/ann.py)
    ann_exact_below: int = Field(50_000, ge=1)   # auto: exact FAISS below this many real rows, IVF-Flat above
    null_rows: int = Field(20_000, ge=100)      # real rows whose leave-one-out distances form the conformal null


class RecommenderConfig(Strict):
    """Fixes tried on the data; each re-runs the failing dimensions with `n_null` resamples."""

    fixes: tuple[Fix, ...] = get_args(Fix)  # type: ignore[assignment]
    n_null: int = Field(99, ge=19, le=100_000)
    seed: int = Field(0, ge=0, le=SEED_MAX)


class PlantedSpec(Strict):
    """A planted-collapse pair: a reference data set, the case, its severity, the size."""

    case: PlantedCase = "clean"
    severity: Severity = "high"
    dataset: DatasetName = "breast_cancer"
    n: int | None = Field(None, ge=20, le=10_000_000)  # rows per side; None -> split the data set in halves
    fraction: float | None = Field(None, gt=0, le=1)   # rows affected; None -> the severity's default
    generations: int | None = Field(None, ge=1, le=100)  # recursive collapse; None -> the severity's
    seed: int = Field(0, ge=0, le=SEED_MAX)


class ValidationSpec(Strict):
    """The validate job: detector, localizer, recommender and worker settings."""

    name: str = "validation"
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    localizer: LocalizerConfig = Field(default_factory=LocalizerConfig)
    recommender: RecommenderConfig = Field(default_factory=RecommenderConfig)
    # CPU workers unless a preset asks for GPUs: every dimension is numpy / scikit-learn / FAISS-CPU
    # work, so `auto` (a GPU per worker on a GPU cluster) would hold GPUs that sit idle and cap the
    # pool at one worker per GPU instead of one per CPU.
    workers: WorkerConfig = Field(default_factory=lambda: WorkerConfig(num_gpus=0))
