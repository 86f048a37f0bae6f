"""The validation pipeline, written once: detect -> localize -> recommend on a (real, synthetic) pair.
No Ray.

`validate(real, synth, spec)` is what the validate job and the Serve app's GenerateRecommendations
run. The detector step is pluggable: in this process by default, or each dimension as a task on the
worker pool (`actors.validation.pool.validate_on_cluster` passes `detect_on_cluster`), with the same
result either way (dimensions are seeded independently).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from actors.common.config import validated
from actors.validation.config import DetectorConfig, ValidationSpec
from actors.validation.data import check_label
from actors.validation.detector import CollapseReport, detect
from actors.validation.localize import Localization, localize
from actors.validation.recommend import Recommendation, recommend

__all__ = ["Detector", "ValidationResult", "detect_in_process", "validate"]

# detector(real, synth, config) -> (report, stats merged into the timing, e.g. {"workers": 2})
Detector = Callable[[pd.DataFrame, pd.DataFrame, DetectorConfig], tuple[CollapseReport, dict]]


@dataclass
class ValidationResult:
    """The decision per dimension, the blamed rows, the ranked fixes, and where the time went."""

    report: CollapseReport
    localization: Localization
    recommendations: list[Recommendation]
    label: str | None
    timing: dict[str, Any] = field(default_factory=dict)

    def write(self, out_dir: str | Path, *, name: str, extra: dict | None = None) -> dict:
        """DIR/report.json, DIR/plots/<dimension>.png, DIR/report.html; returns the report.json document."""
        from actors.validation.report import write_report

        return write_report(Path(out_dir), self.report, self.localization, self.recommendations,
                            {"name": name, "label": self.label, "timing": self.timing, **(extra or {})})


def detect_in_process(real: pd.DataFrame, synth: pd.DataFrame, config: DetectorConfig) -> tuple[CollapseReport, dict]:
    """The default detector step: every dimension in this process."""
    return detect(real, synth, config), {"workers": 0}


def validate(real: pd.DataFrame, synth: pd.DataFrame, spec: ValidationSpec | dict | None = None, *,
             label: str | None = None, detector: Detector | None = None) -> ValidationResult:
    """Detect collapse, blame rows, rank fixes. `label` (else spec.detector.label) is the label column
    for confident learning and relabelling; it must be a column of both tables (InputError on `label`)."""
    spec = validated(ValidationSpec, spec)
    det = spec.detector if label is None else validated(DetectorConfig, spec.detector, prefix="detector.", label=label)
    check_label(det.label, real, synth)
    t0 = time.perf_counter()
    report, stats = (detector or detect_in_process)(real, synth, det)
    t1 = time.perf_counter()
    loc = localize(real, synth, spec.localizer, label=det.label, categorical=det.categorical)
    t2 = time.perf_counter()
    recs = recommend(real, synth, report, loc, detector=det, config=spec.recommender, label=det.label)
    t3 = time.perf_counter()
    timing = {"detect_seconds": round(t1 - t0, 3), "localize_seconds": round(t2 - t1, 3),
              "recommend_seconds": round(t3 - t2, 3), **stats}
    return ValidationResult(report, loc, recs, det.label, timing)
