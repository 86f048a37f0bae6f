"""Property tests (hypothesis; derandomized with a fixed example budget by the profile in conftest.py) of
what users type: `--set KEY=VALUE` and YAML presets through jobs/cli.py, and the Serve request bodies.

- parse_set: a JSON value after `KEY=` comes back as that value (JSON is YAML 1.2); a float written by
  repr (`1e-08`, `5.0`, `-3.2e+17`) comes back as the same float (YAML 1.1 would read `1e-08` as a string);
  an item without `=`, or with an empty key, is an InputError naming `--set`.
- load_spec: every spec class's preset dumped to YAML loads back equal; a `--set` of any numeric field
  reachable through nested models lands in the spec when inside its bounds, and is an InputError naming
  that dotted field when outside them, non-finite, a boolean or a numeric string.
- Serve request models: generated valid bodies validate and survive a JSON round trip; a number out of
  its bounds, non-finite, a boolean or a numeric string, anywhere (also inside lists and maps), and an
  unknown key raise ValidationError located at that field.
"""
from __future__ import annotations

import functools
import json
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import annotated_types as at
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from actors.common.errors import InputError
from actors.sweep.bifurcation import BifurcationSpec
from actors.sweep.config import SweepSpec
from actors.sweep.continuation import ContinuationSpec
from actors.te.config import TENetworkSpec
from actors.validation.cascade import CascadeConfig
from actors.validation.config import ValidationSpec
from configs import preset
from jobs import cli
from serve.sweep import SimulateRequest
from serve.te import NetworkRequest, TERequest
from serve.validation import DetectRequest, DiversityRequest, PreScreenRequest
from tune.fit_ode import FitSpec

# one preset per spec class (tests/test_presets.py loads all of them)
SPECS: dict[type[BaseModel], Path] = {
    SweepSpec: preset("sweep", "gaslit_demo.yaml"),
    TENetworkSpec: preset("te", "lag_search.yaml"),
    ValidationSpec: preset("validation", "default.yaml"),
    CascadeConfig: preset("validation", "cascade_ci.yaml"),
    ContinuationSpec: preset("continuation", "gaslit_gamma.yaml"),
    BifurcationSpec: preset("bifurcation", "brusselator_ci.yaml"),
    FitSpec: preset("fit", "gaslit_fit.yaml"),
}
FINITE = st.floats(allow_nan=False, allow_infinity=False)
NAME = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)
TEXT = st.text(st.characters(categories=("L", "N", "P", "S", "Zs")), max_size=12)   # what a user types


# ---- numeric fields of a model, found by walking a valid instance -------------------------------------
@dataclass(frozen=True)
class Leaf:
    path: tuple[str, ...]   # attribute path from the root model
    kind: type              # int or float
    lo: float | None        # bound and whether it is exclusive (gt) or inclusive (ge)
    lo_open: bool
    hi: float | None
    hi_open: bool
    cross_checked: bool     # its model also validates fields together (a value in range may still fail)

    @property
    def key(self) -> str:
        return ".".join(self.path)


def _number_kind(annotation: Any) -> type | None:
    """int / float for a plain (or optional) number annotation; None for anything else (Literal unions...)."""
    if typing.get_origin(annotation) is typing.Annotated:
        return _number_kind(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        arms = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _number_kind(arms[0]) if len(arms) == 1 else None
    return annotation if annotation in (int, float) else None


def leaves(model: BaseModel, prefix: tuple[str, ...] = ()) -> list[Leaf]:
    """Every numeric field reachable from `model` through nested model fields (not lists or maps: `--set`
    addresses mappings only), with its bounds."""
    cls = type(model)
    cross = bool(cls.__pydantic_decorators__.model_validators) and any(
        d.info.mode == "after" for d in cls.__pydantic_decorators__.model_validators.values())
    out = []
    for name, info in cls.model_fields.items():
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            out += leaves(value, (*prefix, name))
            continue
        kind = _number_kind(info.annotation)
        if kind is None:
            continue
        lo = hi = None
        lo_open = hi_open = False
        for m in info.metadata:
            if isinstance(m, at.Gt | at.Ge):
                lo, lo_open = float(m.gt if isinstance(m, at.Gt) else m.ge), isinstance(m, at.Gt)
            if isinstance(m, at.Lt | at.Le):
                hi, hi_open = float(m.lt if isinstance(m, at.Lt) else m.le), isinstance(m, at.Lt)
        out.append(Leaf((*prefix, name), kind, lo, lo_open, hi, hi_open, cross))
    return out


@functools.cache
def spec_leaves() -> list[tuple[type[BaseModel], Path, Leaf]]:
    return [(cls, path, leaf) for cls, path in SPECS.items() for leaf in leaves(cli.load_spec(cls, path))]


def in_range(leaf: Leaf) -> st.SearchStrategy:
    """A value the field's bounds allow (unbounded sides capped at 1e6, far from any overflow)."""
    lo = -1e6 if leaf.lo is None else leaf.lo
    hi = 1e6 if leaf.hi is None else leaf.hi
    if leaf.kind is int:
        return st.integers(math.floor(lo) + (leaf.lo_open and float(lo).is_integer()), math.ceil(hi) - (
            leaf.hi_open and float(hi).is_integer()))
    return st.floats(lo, hi, exclude_min=leaf.lo_open, exclude_max=leaf.hi_open, allow_nan=False,
                     allow_infinity=False)


def not_a_number(leaf: Leaf) -> st.SearchStrategy:
    """A value the field must refuse: beyond a bound, non-finite, a boolean or a numeric string."""
    bad = [st.sampled_from([math.nan, math.inf, -math.inf, True, False]), st.integers(-99, 99).map(str)]
    if leaf.lo is not None:
        below = (st.integers(max_value=math.ceil(leaf.lo) - (not leaf.lo_open or not float(leaf.lo).is_integer()))
                 if leaf.kind is int else st.floats(max_value=leaf.lo, exclude_max=not leaf.lo_open, allow_nan=False,
                                                    allow_infinity=False))
        bad.append(below)
    if leaf.hi is not None:
        above = (st.integers(min_value=math.floor(leaf.hi) + (not leaf.hi_open or not float(leaf.hi).is_integer()))
                 if leaf.kind is int else st.floats(min_value=leaf.hi, exclude_min=not leaf.hi_open, allow_nan=False,
                                                    allow_infinity=False))
        bad.append(above)
    return st.one_of(bad)


def yaml_text(value: Any) -> str:
    """How a user writes `value` after `KEY=` (YAML 1.2: .nan, .inf, true, a quoted string)."""
    if isinstance(value, bool) or isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
    return repr(value)


def _get(model: BaseModel, path: tuple[str, ...]) -> Any:
    for name in path:
        model = getattr(model, name)
    return model


# ---- parse_set ------------------------------------------------------------------------------------
JSON = st.recursive(st.none() | st.booleans() | st.integers(-10**12, 10**12) | FINITE | TEXT,
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(NAME, inner, max_size=4),
                    max_leaves=12)


@given(key=st.lists(NAME, min_size=1, max_size=4).map(".".join), value=JSON)
def test_parse_set_reads_json_values_back(key, value):
    assert cli.parse_set([f"{key}={json.dumps(value, ensure_ascii=False)}"]) == {key: value}


@given(x=FINITE)
def test_parse_set_reads_repr_floats_as_floats(x):
    (got,) = cli.parse_set([f"solver.rtol={x!r}"]).values()
    assert type(got) is float and got == x


@given(item=st.text(max_size=20).filter(lambda s: "=" not in s) | st.text(max_size=10).map(lambda s: "=" + s))
def test_parse_set_refuses_items_without_a_key(item):
    with pytest.raises(InputError) as err:
        cli.parse_set([item])
    assert err.value.field == "--set"


# ---- load_spec ------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", list(SPECS), ids=lambda c: c.__name__)
def test_preset_dumped_to_yaml_loads_back_equal(cls, tmp_path):
    spec = cli.load_spec(cls, SPECS[cls])
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    assert cli.load_spec(cls, path) == spec


def test_every_spec_class_has_numeric_fields_to_test():
    """The walk finds the fields (a refactor that hides them behind unions or lists shows up here)."""
    found = {cls for cls, _, _ in spec_leaves()}
    assert found == set(SPECS), set(SPECS) - found
    assert {"solver.rtol", "solver.atol", "chunk_size"} <= {leaf.key for c, _, leaf in spec_leaves() if c is SweepSpec}


@given(data=st.data())
def test_set_inside_the_bounds_lands_in_the_spec(data):
    cls, path, leaf = data.draw(st.sampled_from([c for c in spec_leaves() if not c[2].cross_checked]),
                                label="field")
    value = data.draw(in_range(leaf), label="value")
    spec = cli.load_spec(cls, path, cli.parse_set([f"{leaf.key}={yaml_text(value)}"]))
    assert _get(spec, leaf.path) == value


@given(data=st.data())
def test_set_outside_the_bounds_names_the_field(data):
    cls, path, leaf = data.draw(st.sampled_from(spec_leaves()), label="field")
    value = data.draw(not_a_number(leaf), label="value")
    with pytest.raises(InputError) as err:
        cli.load_spec(cls, path, cli.parse_set([f"{leaf.key}={yaml_text(value)}"]))
    assert err.value.field == leaf.key, (err.value.field, err.value.message)


# ---- Serve request models --------------------------------------------------------------------------
SERIES = st.lists(st.floats(-1e12, 1e12), min_size=1, max_size=30)
TABLE = st.fixed_dictionaries({"records": st.lists(st.dictionaries(NAME, FINITE | st.text(max_size=5), max_size=3),
                                                   max_size=3)})
# minimal valid bodies: the fields without defaults
BASE: dict[type[BaseModel], dict] = {
    SimulateRequest: {},
    TERequest: {"source": [0.1, 0.2], "target": [0.3, 0.4]},
    NetworkRequest: {"data": {"a": [0.1, 0.2], "b": [0.3, 0.4]}},
    DetectRequest: {"real": {"records": []}, "synthetic": {"records": []}},
    DiversityRequest: {"table": {"records": []}},
    PreScreenRequest: {"real": {"records": []}, "synthetic": {"records": []}},
}


@functools.cache
def request_leaves() -> list[tuple[type[BaseModel], Leaf]]:
    return [(cls, leaf) for cls, body in BASE.items() for leaf in leaves(cls.model_validate(body))]


def _set(cls: type[BaseModel], path: tuple[str, ...], value: Any) -> dict:
    """The minimal body of `cls` with the field at `path` set to `value`."""
    body = json.loads(json.dumps(BASE[cls]))
    node = body
    for name in path[:-1]:
        node = node.setdefault(name, {})
    node[path[-1]] = value
    return body


def _point() -> st.SearchStrategy:
    return st.fixed_dictionaries({}, optional={"params": st.dictionaries(NAME, FINITE, max_size=3),
                                               "initial_state": st.dictionaries(NAME, FINITE, max_size=3)})


SIMULATE = st.fixed_dictionaries({}, optional={
    "model": NAME,
    "params": st.dictionaries(NAME, FINITE, max_size=4),
    "initial_state": st.dictionaries(NAME, FINITE, max_size=4),
    "t_span": st.tuples(FINITE, FINITE),
    "save_points": st.lists(FINITE, max_size=5),
    "n_save": st.integers(2, 10_000),
    "batch": st.lists(_point(), min_size=1, max_size=3),
    "solver": st.fixed_dictionaries({}, optional={
        "rtol": st.floats(1e-14, 1e-2, exclude_min=True), "atol": st.floats(1e-16, 1e-2, exclude_min=True),
        "lyapunov": st.booleans()}),
})
ESTIMATOR = {"k": st.integers(1, 1000), "history": st.integers(1, 256), "source_history": st.integers(1, 256),
             "algorithm": st.sampled_from([1, 2]), "noise": st.floats(0, 1), "normalise": st.booleans(),
             "theiler": st.integers(0, 100_000), "surrogate_method": st.sampled_from(["permutation", "circular"]),
             "seed": st.integers(0, 2**32)}
TE = st.fixed_dictionaries({"source": SERIES, "target": SERIES},
                           optional={**ESTIMATOR, "delay": st.integers(1, 10_000), "surrogates": st.integers(0, 10**6)})
NETWORK = st.fixed_dictionaries({"data": st.dictionaries(NAME, SERIES, min_size=1, max_size=4)}, optional={
    **ESTIMATOR, "lags": st.tuples(st.integers(1, 50), st.integers(1, 50)), "surrogates": st.integers(1, 10**6),
    "alpha": st.floats(0, 1, exclude_min=True, exclude_max=True), "correction": st.sampled_from(["max", "fdr", "none"]),
    "mode": st.sampled_from(["bivariate", "multivariate"]), "background": st.none() | st.booleans()})
DETECT = st.fixed_dictionaries({"real": TABLE, "synthetic": TABLE},
                               optional={"detector": st.dictionaries(NAME, FINITE | st.booleans(), max_size=3)})


@pytest.mark.parametrize(("cls", "bodies"), [(SimulateRequest, SIMULATE), (TERequest, TE), (NetworkRequest, NETWORK),
                                             (DetectRequest, DETECT)],
                         ids=["SimulateRequest", "TERequest", "NetworkRequest", "DetectRequest"])
@given(data=st.data())
def test_valid_requests_validate_and_round_trip(cls, bodies, data):
    body = data.draw(bodies, label="body")
    req = cls.model_validate_json(json.dumps(body))
    assert cls.model_validate_json(req.model_dump_json()) == req
    for key, value in body.items():
        if not isinstance(value, dict | list):
            assert getattr(req, key) == (tuple(value) if isinstance(value, tuple) else value), key


@given(data=st.data())
def test_request_number_out_of_bounds_is_refused_at_its_field(data):
    cls, leaf = data.draw(st.sampled_from(request_leaves()), label="field")
    value = data.draw(not_a_number(leaf), label="value")
    with pytest.raises(ValidationError) as err:
        cls.model_validate(_set(cls, leaf.path, value))   # python input: NaN and inf arrive as floats, as from a lenient JSON parser
    assert tuple(err.value.errors()[0]["loc"]) == leaf.path


@given(data=st.data())
def test_request_number_inside_the_bounds_is_kept(data):
    cls, leaf = data.draw(st.sampled_from([c for c in request_leaves() if not c[1].cross_checked]), label="field")
    value = data.draw(in_range(leaf), label="value")
    assert _get(cls.model_validate(_set(cls, leaf.path, value)), leaf.path) == value


@given(series=SERIES, at=st.integers(0, 29), bad=st.sampled_from([math.nan, math.inf, -math.inf]),
       field=st.sampled_from(["source", "target"]))
def test_te_series_with_a_non_finite_value_is_refused_at_the_series(series, at, bad, field):
    body = {**BASE[TERequest], field: series[:at] + [bad] + series[at:]}
    with pytest.raises(ValidationError) as err:
        TERequest.model_validate(body)
    assert err.value.errors()[0]["loc"][0] == field


@given(params=st.dictionaries(NAME, FINITE, min_size=1, max_size=4), bad=st.sampled_from([math.nan, math.inf]),
       where=st.sampled_from(["params", "initial_state"]))
def test_simulate_map_with_a_non_finite_value_is_refused_at_its_entry(params, bad, where):
    name = sorted(params)[0]
    with pytest.raises(ValidationError) as err:
        SimulateRequest.model_validate({where: {**params, name: bad}})
    assert tuple(err.value.errors()[0]["loc"])[:2] == (where, name)


@pytest.mark.parametrize("cls", list(BASE), ids=lambda c: c.__name__)
@given(key=NAME)
def test_unknown_request_key_is_refused_by_name(cls, key):
    if key in cls.model_fields:
        return
    with pytest.raises(ValidationError) as err:
        cls.model_validate({**BASE[cls], key: 1})
    assert [(e["type"], tuple(e["loc"])) for e in err.value.errors()] == [("extra_forbidden", (key,))]
