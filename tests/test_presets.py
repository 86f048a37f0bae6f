"""Every shipped YAML preset under configs/ loads with the spec class its job parses it with.

The class per preset is the one its consumer validates it with: jobs.sweep / te_network / validate /
continuation / bifurcation read theirs through jobs.cli.load_spec (YAML 1.2 numbers), jobs.cascade
validates configs/validation/cascade*.yaml as a CascadeConfig, tune.fit_ode.load_spec reads the fit
preset, and the model registry (actors.sweep.models) reads configs/models/*.yaml as ModelSpecs and
compiles them. Each loaded spec must also survive a JSON round trip without a serializer warning
(a value of the wrong type left in a field, e.g. an int default in a `float | "auto"` field, warns
there), and models must compile to their declared states and parameters.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from actors.llm.config import EngineSpec
from actors.neuro.config import NeuroDataSpec
from actors.sweep.bifurcation import BifurcationSpec
from actors.sweep.config import SweepSpec
from actors.sweep.continuation import ContinuationSpec
from actors.sweep.models import ModelSpec, get_model, model_names
from actors.te.config import TENetworkSpec
from actors.validation.cascade import CascadeConfig
from actors.validation.config import ValidationSpec
from configs import KINDS, presets
from jobs import cli


def _fit(path: Path) -> BaseModel:
    from tune.fit_ode import load_spec

    return load_spec(path)


def _model(path: Path) -> BaseModel:
    return ModelSpec.model_validate(yaml.safe_load(path.read_text()))   # as actors.sweep.models reads them


def _job(cls: type[BaseModel]) -> Callable[[Path], BaseModel]:
    return lambda path: cli.load_spec(cls, path)


def loader(kind: str, path: Path) -> tuple[type[BaseModel], Callable[[Path], BaseModel]]:
    """(spec class, how its consumer reads it) for a preset of configs/<kind>/."""
    if kind == "validation":
        return (CascadeConfig, _job(CascadeConfig)) if path.name.startswith("cascade") else \
            (ValidationSpec, _job(ValidationSpec))
    from actors.router.config import RouteEvalSpec
    from tune.fit_ode import FitSpec
    from tune.router import RouterSearchSpec

    if kind == "router" and path.name.startswith("search"):
        return RouterSearchSpec, _job(RouterSearchSpec)
    if kind == "train":
        from actors.trainer.config import TrainSpec
        from tune.trainer import TrainSearchSpec, load_search_spec

        return (TrainSearchSpec, load_search_spec) if path.name.startswith("search") else (TrainSpec, _job(TrainSpec))

    return {"router": (RouteEvalSpec, _job(RouteEvalSpec)), "sweep": (SweepSpec, _job(SweepSpec)), "te": (TENetworkSpec, _job(TENetworkSpec)),
            "continuation": (ContinuationSpec, _job(ContinuationSpec)),
            "bifurcation": (BifurcationSpec, _job(BifurcationSpec)), "fit": (FitSpec, _fit),
            "models": (ModelSpec, _model), "neuro": (NeuroDataSpec, _job(NeuroDataSpec)),
            "llm": (EngineSpec, _job(EngineSpec))}[kind]


PRESETS = [(kind, path) for kind in KINDS for path in presets(kind)]


def test_every_preset_directory_is_covered():
    """A new configs/<kind>/ (or a kind without presets) fails here, not silently."""
    dirs = {p.name for p in (Path(__file__).resolve().parents[1] / "configs").iterdir()
            if p.is_dir() and not p.name.startswith("__")}
    assert dirs == set(KINDS)
    assert all(presets(kind) for kind in KINDS)
    assert len(PRESETS) >= 25


@pytest.mark.parametrize(("kind", "path"), PRESETS, ids=[f"{k}/{p.name}" for k, p in PRESETS])
def test_preset_loads_with_its_spec_class(kind, path):
    cls, load = loader(kind, path)
    spec = load(path)
    assert type(spec) is cls
    with warnings.catch_warnings():
        warnings.simplefilter("error")    # pydantic's serializer warnings become failures
        text = spec.model_dump_json()
    assert cls.model_validate_json(text) == spec
    if kind == "models":
        assert spec.name in model_names()
        model = get_model(spec.name)
        assert list(model.state_names) == list(spec.states)
        assert list(model.param_names) == list(spec.params)
