"""validation: calibrated collapse detection of a synthetic table against a real one, row-level blame
and fixes.

    from actors.validation import detect, localize, recommend, plant
    pair = plant(case="memorised", severity="high", dataset="breast_cancer")
    rep = detect(pair.real, pair.synth)                 # rep.collapsed, rep.dimensions[name]
    loc = localize(pair.real, pair.synth, label="target")
    fixes = recommend(pair.real, pair.synth, rep, loc, label="target")

Modules: config (pydantic), data (checks, pooled tables), stats (the statistics), detector (nulls,
max-T, Benjamini-Hochberg), localize, recommend, planted (generator), diversity, streaming (KLL
sketches, reservoirs), report (json / png / html); actor.py and pool.py run dimensions on Ray.
"""
from actors.common.errors import InputError
from actors.validation.config import (
    DetectorConfig,
    LocalizerConfig,
    PlantedSpec,
    RecommenderConfig,
    ValidationSpec,
)
from actors.validation.detector import CollapseReport, DimensionResult, detect
from actors.validation.localize import Localization, localize
from actors.validation.planted import PlantedPair, plant
from actors.validation.recommend import Recommendation, recommend

__all__ = [
    "CollapseReport", "DetectorConfig", "DimensionResult", "InputError", "Localization", "LocalizerConfig",
    "PlantedPair", "PlantedSpec", "Recommendation", "RecommenderConfig", "ValidationSpec", "detect", "localize",
    "plant", "recommend",
]
