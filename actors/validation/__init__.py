"""validation: calibrated collapse detection of a synthetic table against a real one, row-level blame,
fixes, a cascade of models for utility and label issues, and a library of failure signatures.

    from actors.validation import plant, validate
    pair = plant(case="memorised", severity="high", dataset="breast_cancer")
    res = validate(pair.real, pair.synth, label="target")   # detect -> localize -> recommend
    res.report.collapsed, res.report.flagged(), res.localization.rows[:5], res.recommendations[0].fix

Engine modules (no Ray): config (pydantic specs and Literals), data (load_table, checks, pooled
tables), stats (the dimensions' statistics), detector (nulls, max-T, Benjamini-Hochberg), localize,
ann (nearest-neighbour search), recommend, pipeline (`validate`, the one pipeline the job and the
Serve app run), report (json / png / html), planted (generator), diversity and text, sketches and
streaming (one-pass summaries of large files), signatures (failure-pattern library), the cascade
(cascade_config, rungs, cascade_checkpoints, cascade = the climb) and model_store (trained cascades
by model id, predictions). Ray: actor.py (ValidationWorker), pool.py (dimensions on the worker pool
with on-disk resume, cascade rungs as Ray tasks, `validate_on_cluster`), raydata.py (Ray Data summaries).
"""
from actors.common.errors import InputError
from actors.validation.cascade import (
    CascadeResult,
    cascade_label_issues,
    climb,
    localize_with_cascade,
    train_cascade,
)
from actors.validation.cascade_config import CascadeConfig, RungSpec
from actors.validation.config import (
    DIMENSIONS,
    DetectorConfig,
    LocalizerConfig,
    PlantedSpec,
    RecommenderConfig,
    ValidationSpec,
)
from actors.validation.data import load_table
from actors.validation.detector import CollapseReport, DimensionResult, detect
from actors.validation.localize import Localization, localize
from actors.validation.pipeline import ValidationResult, validate
from actors.validation.planted import PlantedPair, plant
from actors.validation.recommend import Recommendation, recommend

__all__ = [
    "DIMENSIONS", "CascadeConfig", "CascadeResult", "CollapseReport", "DetectorConfig", "DimensionResult",
    "InputError", "Localization", "LocalizerConfig", "PlantedPair", "PlantedSpec", "Recommendation",
    "RecommenderConfig", "RungSpec", "ValidationResult", "ValidationSpec", "cascade_label_issues", "climb",
    "detect", "load_table", "localize", "localize_with_cascade", "plant", "recommend", "train_cascade", "validate",
]
