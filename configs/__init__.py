"""The shipped YAML presets, importable as package data (`importlib.resources.files("configs.models")`).

One subpackage per kind: models (ODE models: actors/sweep/models.py loads them), sweep, bifurcation,
continuation, fit, neuro, router, te, train, validation (job presets: `python -m jobs.X --config configs/X/<name>.yaml`).
Code finds a preset with `preset(kind, name)`, never through a path relative to its own file.
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["KINDS", "preset", "presets"]

KINDS = ("bifurcation", "continuation", "fit", "llm", "models", "neuro", "router", "sweep", "te", "train",
         "validation")


def preset(kind: str, name: str) -> Path:
    """The file of preset `name` (e.g. "gaslit_demo.yaml") of `kind` (e.g. "sweep"), wherever installed."""
    return Path(str(files(f"configs.{kind}") / name))


def presets(kind: str) -> list[Path]:
    """Every YAML preset of `kind`, sorted by name."""
    return sorted(Path(str(p)) for p in files(f"configs.{kind}").iterdir() if p.name.endswith(".yaml"))
