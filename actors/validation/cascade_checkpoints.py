"""The cascade's checkpoints: per-rung model files and metrics, the out-of-fold outputs. No Ray.

Every file is written atomically (actors/common/storage.py). A rung's model file is written first and
its JSON record last, so the record's presence means "finished"; the record carries a key of the data
and every setting the rung depends on, so a checkpoint of other data or settings is never reused.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from actors.common.storage import atomic_write_json, atomic_write_via
from actors.validation.cascade_config import CascadeConfig, RungSpec
from actors.validation.rungs import CascadeData, MLPModel, Rung, mlp_net

__all__ = ["load_model", "load_oof", "load_rung", "oof_tag", "run_key", "save_oof", "save_rung"]

# settings that change which rungs run or where, never what a finished rung computed
_NOT_IN_KEY = {"rungs", "patience", "min_improvement", "parallel", "num_cpus", "num_gpus"}


def run_key(data: CascadeData, cfg: CascadeConfig, task: str) -> str:
    """Hash of the data and every setting a rung depends on (the ladder itself is keyed per rung)."""
    h = hashlib.sha256()
    for a in (data.F_syn, data.y_syn, data.F_real, data.y_real, data.fit):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(cfg.model_dump_json(exclude=_NOT_IN_KEY).encode())
    h.update(task.encode())
    return h.hexdigest()[:16]


def save_rung(out_dir: Path, key: str, spec: RungSpec, rung: Rung, model: Any) -> None:
    """Model file first (torch.save / joblib), the JSON record last: its presence means 'finished'."""
    import joblib
    import torch

    stem = Path(out_dir) / f"rung_{rung.rung:02d}"
    if isinstance(model, MLPModel):
        state = {"state_dict": model.net.state_dict(), "y_mean": model.y_mean, "y_sd": model.y_sd}
        atomic_write_via(stem.with_suffix(".pt"), lambda tmp: torch.save(state, tmp))
    else:
        atomic_write_via(stem.with_suffix(".joblib"), lambda tmp: joblib.dump(model, tmp))
    atomic_write_json(stem.with_suffix(".json"), {"key": key, "spec": spec.model_dump(), **asdict(rung)})


def load_rung(out_dir: Path, key: str, i: int, spec: RungSpec) -> Rung | None:
    """The finished rung's metrics if its checkpoint matches this data, settings and spec."""
    path = Path(out_dir) / f"rung_{i:02d}.json"
    if not path.exists():
        return None
    rec = json.loads(path.read_text())
    if rec.pop("key") != key or rec.pop("spec") != spec.model_dump():
        return None
    return Rung(**rec)


def load_model(out_dir: str | Path, i: int, spec: RungSpec, cfg: CascadeConfig, d_in: int, n_classes: int) -> Any:
    """A checkpointed rung's model, ready to predict (sklearn via joblib, MLPs via torch.load)."""
    import joblib
    import torch

    stem = Path(out_dir) / f"rung_{i:02d}"
    if spec.kind != "mlp":
        return joblib.load(stem.with_suffix(".joblib"))
    state = torch.load(stem.with_suffix(".pt"), map_location="cpu")
    model = MLPModel(spec, cfg, n_classes, cfg.seed + i)
    model.net = mlp_net(d_in, n_classes if n_classes else 1, spec)
    model.net.load_state_dict(state["state_dict"])
    model.y_mean, model.y_sd = state["y_mean"], state["y_sd"]
    return model


def oof_tag(key: str, best: int, spec: RungSpec) -> str:
    """What the out-of-fold outputs depend on: the run key and the best rung (index and spec)."""
    return f"{key}:{best}:{spec.model_dump_json()}"


def load_oof(out_dir: Path, tag: str) -> np.ndarray | None:
    """The checkpointed out-of-fold outputs (DIR/oof.npz) when they were computed for `tag`."""
    path = Path(out_dir) / "oof.npz"
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as z:
        return z["oof"].copy() if str(z["tag"]) == tag else None


def save_oof(out_dir: Path, tag: str, oof: np.ndarray) -> None:
    """DIR/oof.npz with its tag, atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:   # a file object: np.savez would append '.npz' to a bare name
            np.savez(f, oof=oof, tag=np.array(tag))

    atomic_write_via(Path(out_dir) / "oof.npz", write)
