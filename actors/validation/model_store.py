"""The cascade model store: trained cascades kept on disk under a model id, and predictions of their
best rung for new rows (the Serve app's TrainCascade / GetPredictions route here). No Ray.

The cascade's features are built from the pooled real+synthetic table (standardised with pooled
statistics, one-hot over pooled categories), so new rows must be encoded with those frozen
statistics, not re-pooled: `FrozenEncoder` reproduces `cascade.prepare`'s features exactly for the
training rows (tested) and applies the same transform to new ones. A model directory holds the
cascade's own checkpoints (rung_XX.*, cascade.json) plus serve_model.json written last, atomically:
its presence means the model is complete.
"""
from __future__ import annotations

import json
import re
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from actors.common.errors import InputError, NotFound
from actors.common.storage import atomic_write_json
from actors.validation.cascade_checkpoints import load_model
from actors.validation.cascade_config import CascadeConfig
from actors.validation.data import MISSING, check_tables
from actors.validation.rungs import probabilities

if TYPE_CHECKING:
    from actors.validation.cascade import CascadeResult

__all__ = ["MODEL_FILE", "MODEL_ID", "FrozenEncoder", "model_dir", "new_model_id", "predict", "save_model"]

MODEL_ID = re.compile(r"^[0-9a-f]{12}$")
MODEL_FILE = "serve_model.json"   # written last: a model directory without it is not (yet) a model


@dataclass
class FrozenEncoder:
    """The cascade's feature map with the pooled statistics of its training tables frozen."""

    numeric: list[str]
    categorical: list[str]
    median: list[float]
    mean: list[float]
    sd: list[float]
    missing_flags: list[str]      # numeric columns with a missing-value indicator
    levels: list[list[str]]       # per categorical feature column, the one-hot levels

    @classmethod
    def fit(cls, real: pd.DataFrame, synth: pd.DataFrame, label: str) -> FrozenEncoder:
        """Statistics of the pooled tables (as data.pool computes them), the label left out."""
        numeric, cats = check_tables(real, synth)
        frame = pd.concat([real[numeric + cats], synth[numeric + cats]], ignore_index=True)
        X = frame[numeric].to_numpy(dtype=np.float64) if numeric else np.empty((len(frame), 0))
        with np.errstate(all="ignore"):
            med = np.nanmedian(X, axis=0) if numeric else np.empty(0)
        med = np.where(np.isnan(med), 0.0, med)
        Xi = np.where(np.isnan(X), med, X)
        flags = [c for j, c in enumerate(numeric) if np.isnan(X[:, j]).any() and c != label]
        keep = [j for j, c in enumerate(numeric) if c != label]
        levels = [sorted(frame[c].astype("string").fillna(MISSING).unique().tolist()) for c in cats if c != label]
        return cls([numeric[j] for j in keep], [c for c in cats if c != label], med[keep].tolist(),
                   Xi.mean(axis=0)[keep].tolist(), Xi.std(axis=0)[keep].tolist(), flags, levels)

    def transform(self, rows: pd.DataFrame, field: str = "rows") -> np.ndarray:
        """Features of new rows; InputError naming the column when one is missing or mistyped.
        A category never seen in training gets an all-zero one-hot block."""
        missing = [c for c in self.numeric + self.categorical if c not in rows.columns]
        if missing:
            raise InputError(field, f"columns {missing} are missing", ", ".join(self.numeric + self.categorical))
        for c in self.numeric:
            if not pd.api.types.is_numeric_dtype(rows[c]) or pd.api.types.is_bool_dtype(rows[c]):
                raise InputError(f"{field}.{c}", f"type conflict: {rows[c].dtype} for a numeric column", "numbers")
        for c in self.numeric + self.categorical:
            if rows[c].isna().all():
                raise InputError(f"{field}.{c}", "column is all missing", "at least one non-missing value")
        X = rows[self.numeric].to_numpy(dtype=np.float64) if self.numeric else np.empty((len(rows), 0))
        med, mean, sd = np.array(self.median), np.array(self.mean), np.array(self.sd)
        Z = (np.where(np.isnan(X), med, X) - mean) / np.where(sd > 0, sd, 1.0)
        parts = [Z]
        if self.missing_flags:
            parts.append(np.stack([rows[c].isna().to_numpy(float) for c in self.missing_flags], axis=1))
        for c, lv in zip(self.categorical, self.levels):
            s = rows[c].astype("string").fillna(MISSING).to_numpy(dtype=object)
            parts.append((s[:, None] == np.array(lv, dtype=object)[None, :]).astype(float))
        return np.hstack(parts)


def new_model_id() -> str:
    """A fresh model id (12 hex digits): the name of the model's directory under the store root."""
    return uuid.uuid4().hex[:12]


def model_dir(root: str | Path, model_id: str) -> Path:
    """The directory of a model id; 404 for ids that are malformed or not (yet) trained."""
    if not MODEL_ID.match(model_id or ""):
        raise NotFound("model_id", f"{model_id!r} is not a model id", "12 hex digits from TrainCascade")
    path = Path(root) / model_id
    if not (path / MODEL_FILE).exists():
        raise NotFound("model_id", f"no trained cascade {model_id!r}", "an id from a finished TrainCascade")
    return path


def save_model(out: Path, *, label: str, result: CascadeResult, config: CascadeConfig, encoder: FrozenEncoder) -> None:
    """serve_model.json: what `predict` needs next to the cascade's own rung checkpoints."""
    atomic_write_json(Path(out) / MODEL_FILE, {
        "label": label, "task": result.task, "classes": result.classes, "best": result.best,
        "config": config.model_dump(mode="json"), "encoder": asdict(encoder),
        "rung": asdict(result.rungs[result.best])})


def predict(root: str | Path, model_id: str, rows: pd.DataFrame) -> dict:
    """Predictions (and class probabilities) of the model's best rung for `rows`."""
    path = model_dir(root, model_id)
    meta = json.loads((path / MODEL_FILE).read_text())
    cfg = CascadeConfig.model_validate({**meta["config"], "device": "cpu"})
    enc = FrozenEncoder(**meta["encoder"])
    F = enc.transform(rows)
    classes = meta["classes"]
    model = load_model(path, meta["best"], cfg.rungs[meta["best"]], cfg, F.shape[1], len(classes))
    out = {"model_id": model_id, "label": meta["label"], "task": meta["task"], "rung": meta["rung"]}
    if classes:
        probs = probabilities(model, F, len(classes))
        out.update(classes=classes, probabilities=probs.tolist(),
                   predictions=[classes[k] for k in probs.argmax(axis=1)])
    else:
        out["predictions"] = np.asarray(model.predict(F), dtype=float).tolist()
    return out
