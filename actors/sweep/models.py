"""Models as data: a model is its equations plus parameter defaults and state names.

Equations are expression strings kept in YAML (configs/models/*.yaml), in a user's file
(`--model FILE.yaml`), inline in a spec (`model: {...}`) or in a request. They are parsed by
actors/sweep/modelspec.parse_expression — a whitelist on the syntax tree, then SymPy's parse_expr in a
namespace of the model's names and a few functions, never `sympify`'s eval of arbitrary text — and
lowered here to vectorised numpy and torch right-hand sides with `sympy.lambdify`; kernels/ode/
compiles the same expressions to GPU kernels. Every state and parameter name is a plain Symbol, so
names such as `gamma`, `beta` or `Lambda` mean variables, not SymPy functions.

Where models come from: the shipped presets (package data of configs/models/), models added with
`register_model` (which shadow presets of the same name) and models given inline. `ship_model` turns
a registered name into its ModelSpec, so a spec sent to a Ray worker carries the model itself (the
worker process never saw the driver's `register_model`).
"""
from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import sympy as sp
import yaml
from pydantic import ValidationError

from actors.common.config import load_yaml
from actors.common.errors import InputError, UnknownName, from_validation
from actors.sweep.modelspec import (
    CONSTANTS,
    FUNCTIONS,
    FixedPointLabel,
    ModelRef,
    ModelSpec,
    ReferencePoint,
    model_label,
    parse_expression,
)

__all__ = ["CONSTANTS", "FUNCTIONS", "CompiledModel", "FixedPointLabel", "ModelRef", "ModelSpec", "ReferencePoint",
           "compile_model", "get_model", "load_model_file", "model_label", "model_names", "register_model",
           "register_model_file", "resolve_model", "ship_model"]

MODELS_PACKAGE = "configs.models"   # the YAML presets ship as package data of configs/models/
SIMPLIFY_MAX_OPS = 64               # sp.simplify only equations this small (it can take minutes on big ones)


_TORCH_FUNCS = ("exp", "log", "sin", "cos", "tan", "tanh", "sqrt", "abs", "sinh", "cosh", "atan")


def _torch_module() -> dict[str, Any]:
    import torch

    def fold(op: Callable) -> Callable:   # Max(a, b, c) and Max(x, 0): any arity, numbers or tensors
        return lambda *args: functools.reduce(lambda a, b: op(torch.as_tensor(a), torch.as_tensor(b)), args)

    def either(name: str) -> Callable:   # log(2) after log(y, 2) -> log(y)/log(2): numbers stay numbers
        fn, num = getattr(torch, name), getattr(np, {"abs": "abs", "atan": "arctan"}.get(name, name))
        return lambda x: fn(x) if torch.is_tensor(x) else float(num(x))

    def heaviside(x: Any, h0: float = 0.5) -> Any:   # SymPy prints Heaviside(x, 1/2): H(0) = h0, as numpy
        x = torch.as_tensor(x)
        return torch.where(x > 0, 1.0, torch.where(x == 0, h0, 0.0)).to(x.dtype if x.is_floating_point() else torch.float64)

    mod = {name: either(name) for name in _TORCH_FUNCS}
    mod.update({"Abs": either("abs"), "pi": np.pi, "E": np.e, "Max": fold(torch.maximum), "Min": fold(torch.minimum),
                "Heaviside": heaviside})
    return mod


class CompiledModel:
    """Symbolic model plus its numpy and torch lowerings.

    rhs_numpy(u[..., n], p[..., m]) and rhs_torch(u[B, n], p[B, m]) return du/dt of u's shape.
    """

    def __init__(self, spec: ModelSpec, *, simplify: bool = True):
        self.spec = spec
        self.name = spec.name
        self.simplify = simplify   # fold constants with sp.simplify in specialized_rhs_torch (small equations)
        self.state_names = list(spec.states)
        self.param_names = list(spec.params)
        self.state_symbols = [sp.Symbol(s) for s in self.state_names]
        self.param_symbols = [sp.Symbol(p) for p in self.param_names]
        self._locals = {s.name: s for s in self.state_symbols + self.param_symbols}
        self._names: dict[str, sp.Expr] = dict(self._locals)
        for name, definition in spec.definitions.items():  # definitions may use earlier ones
            self._names[name] = parse_expression(definition, f"definitions.{name}", self._names)
        self.equations = [self._parse(spec.equations[s], f"equations.{s}") for s in self.state_names]
        self.jacobian = sp.Matrix(self.equations).jacobian(self.state_symbols)
        args = (self.state_symbols, self.param_symbols)
        self._np = sp.lambdify(args, self.equations, modules="numpy", cse=True)
        self._torch = sp.lambdify(args, self.equations, modules=[_torch_module()], cse=True)
        self._labels = [(lab.name, sp.lambdify(args, self._parse(lab.when, f"fixed_point_labels.{lab.name}",
                                                                 relational=True), modules="numpy"))
                        for lab in spec.fixed_point_labels]
        self._special: dict[tuple, tuple] = {}
        self.hash = hashlib.sha256(repr((self.state_names, self.param_names,
                                         [sp.srepr(e) for e in self.equations])).encode()).hexdigest()[:16]

    def _parse(self, text: str, field: str, *, relational: bool = False) -> sp.Expr:
        """`text` over the states, parameters and definitions (the safe parser: modelspec.py)."""
        expr = parse_expression(text, field, self._names, relational=relational)
        unknown = {s.name for s in expr.free_symbols} - set(self._locals)
        if unknown:   # cannot happen through the parser's whitelist; kept as the invariant's check
            raise InputError(field, f"unknown names {sorted(unknown)}",
                             f"states {self.state_names} and parameters {self.param_names}")
        return expr

    # ---- parameter handling -------------------------------------------------------------------
    @property
    def default_params(self) -> np.ndarray:
        return np.array([self.spec.params[p] for p in self.param_names], dtype=np.float64)

    @property
    def default_state(self) -> np.ndarray:
        return np.array([self.spec.initial_state[s] for s in self.state_names], dtype=np.float64)

    def param_vector(self, overrides: dict[str, float] | None = None, field: str = "params") -> np.ndarray:
        """Defaults with `overrides` applied; unknown names raise InputError."""
        return self._vector(self.default_params, self.param_names, overrides, field)

    def state_vector(self, overrides: dict[str, float] | None = None, field: str = "initial_state") -> np.ndarray:
        return self._vector(self.default_state, self.state_names, overrides, field)

    @staticmethod
    def _vector(base: np.ndarray, names: list[str], overrides: dict[str, float] | None, field: str) -> np.ndarray:
        out = base.copy()
        for key, value in (overrides or {}).items():
            if key not in names:
                raise InputError(f"{field}.{key}", "unknown name", ", ".join(names))
            if not np.isfinite(value):
                raise InputError(f"{field}.{key}", f"must be finite, got {value}", "finite real numbers")
            out[names.index(key)] = float(value)
        return out

    # ---- lowered right-hand sides -------------------------------------------------------------
    def rhs_numpy(self, u: np.ndarray, p: np.ndarray) -> np.ndarray:
        u = np.asarray(u, dtype=np.float64)
        p = np.asarray(p, dtype=np.float64)
        cols = self._np([u[..., i] for i in range(u.shape[-1])], [p[..., j] for j in range(p.shape[-1])])
        return np.stack([np.broadcast_to(c, u.shape[:-1]) for c in cols], axis=-1)

    def rhs_torch(self, u, p):
        import torch

        cols = self._torch([u[:, i] for i in range(u.shape[1])], [p[:, j] for j in range(p.shape[1])])
        return torch.stack([c if torch.is_tensor(c) and c.shape == u.shape[:1]
                            else torch.as_tensor(c, dtype=u.dtype, device=u.device).expand(u.shape[0])
                            for c in cols], dim=1)

    def specialized_rhs_torch(self, fixed: dict[str, float]) -> Callable:
        """A torch rhs(u[B, n], p_free[B, k]) with the `fixed` parameters folded in as constants.

        Sweeps vary two or three parameters; substituting the rest lets SymPy fold constants
        (e.g. K**n with both fixed becomes one number), which cuts the per-step op count — on the
        CPU the op count, not the arithmetic, is what costs. Free columns keep the model's order.
        """
        key = tuple(sorted(fixed.items()))
        if key not in self._special:
            free = [s for s in self.param_symbols if s.name not in fixed]
            subs = {sp.Symbol(k): sp.Float(v) if float(v) != int(v) else sp.Integer(int(v)) for k, v in fixed.items()}
            exprs = [sp.simplify(e.subs(subs)) if self._small(e) else e.subs(subs) for e in self.equations]
            fn = sp.lambdify((self.state_symbols, free), exprs, modules=[_torch_module()], cse=True)
            self._special[key] = (fn, [self.param_names.index(s.name) for s in free])
        fn, _ = self._special[key]

        def rhs(u, p_free):
            import torch

            cols = fn([u[:, i] for i in range(u.shape[1])], [p_free[:, j] for j in range(p_free.shape[1])])
            return torch.stack([c if torch.is_tensor(c) and c.shape == u.shape[:1]
                                else torch.as_tensor(c, dtype=u.dtype, device=u.device).expand(u.shape[0])
                                for c in cols], dim=1)

        return rhs

    def _small(self, e: sp.Expr) -> bool:
        """Whether sp.simplify is worth it (and bounded) for `e`: few symbols and few operations."""
        return self.simplify and len(e.free_symbols) < 12 and sp.count_ops(e) <= SIMPLIFY_MAX_OPS

    def free_param_columns(self, fixed: dict[str, float]) -> list[int]:
        return [j for j, name in enumerate(self.param_names) if name not in fixed]

    def fixed_point_label(self, u_final: np.ndarray, p: np.ndarray) -> np.ndarray:
        """Per-row name of a fixed point from the model's labels (first match wins)."""
        u_final = np.atleast_2d(u_final)
        p = np.broadcast_to(np.atleast_2d(p), (u_final.shape[0], p.shape[-1]))
        out = np.full(u_final.shape[0], self.spec.default_fixed_point_label, dtype=object)
        taken = np.zeros(u_final.shape[0], dtype=bool)
        for name, fn in self._labels:
            hit = np.broadcast_to(np.asarray(fn(list(u_final.T), list(p.T)), dtype=bool), taken.shape)
            out[hit & ~taken] = name
            taken |= hit
        return out


@functools.cache
def _presets() -> dict[str, ModelSpec]:
    """The model YAMLs of the installed `configs.models` package, by model name."""
    specs = {}
    for entry in sorted(files(MODELS_PACKAGE).iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            spec = ModelSpec.model_validate(load_yaml(entry.read_text()))
            specs[spec.name] = spec
    return specs


_REGISTERED: dict[str, ModelSpec] = {}


def _as_spec(spec: ModelSpec | dict, prefix: str = "") -> ModelSpec:
    if isinstance(spec, ModelSpec):
        return spec
    try:
        return ModelSpec.model_validate(spec)
    except ValidationError as exc:
        raise from_validation(exc, prefix) from None


def register_model(spec: ModelSpec | dict) -> CompiledModel:
    """Add a user model (a ModelSpec or its dict form) to this process's registry and compile it.

    The model is compiled (its equations checked) before it is registered. Specs sent to Ray workers
    carry registered models inline (`ship_model`), so workers need no registration of their own.
    """
    spec = _as_spec(spec)
    compiled = compile_model(spec)
    _REGISTERED[spec.name] = spec
    get_model.cache_clear()
    return compiled


def load_model_file(path: str | Path, field: str = "--model") -> ModelSpec:
    """A model YAML file (YAML 1.2 numbers) as a ModelSpec; errors name `field` and the model key."""
    p = Path(path)
    if not p.is_file():
        raise InputError(field, f"no such file {str(p)!r}", "a readable model YAML file")
    try:
        raw = load_yaml(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(field, f"{p} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise InputError(field, f"{p} holds a {type(raw).__name__}, not a model mapping",
                         "a mapping with states, params, initial_state, equations")
    return _as_spec(raw, f"{field} {p}: ")


def register_model_file(path: str | Path, field: str = "--model") -> CompiledModel:
    """`register_model` of a YAML file (the jobs' `--model FILE.yaml`); errors name `field`."""
    spec = load_model_file(path, field)
    try:
        return register_model(spec)
    except InputError as exc:
        raise InputError(f"{field} {path}: {exc.field}", exc.message, exc.allowed) from None


def model_names() -> list[str]:
    return sorted(set(_presets()) | set(_REGISTERED))


@functools.lru_cache(maxsize=64)
def get_model(name: str) -> CompiledModel:
    """The compiled model called `name` (registered ones shadow the YAML presets)."""
    specs = {**_presets(), **_REGISTERED}
    if name not in specs:
        raise UnknownName("model", name, list(specs))
    return compile_model(specs[name])


@functools.lru_cache(maxsize=32)
def _compiled(spec_json: str, simplify: bool) -> CompiledModel:
    return CompiledModel(ModelSpec.model_validate_json(spec_json), simplify=simplify)


def compile_model(spec: ModelSpec | dict, *, prefix: str = "", simplify: bool = True) -> CompiledModel:
    """The compiled model of a spec (cached by its content); errors name `prefix` + the spec's field.

    simplify=False skips sp.simplify when constants are folded (requests: bounded compile time).
    """
    spec = _as_spec(spec, prefix)
    try:
        return _compiled(spec.model_dump_json(), simplify)
    except InputError as exc:
        raise InputError(prefix + exc.field, exc.message, exc.allowed) from None


def resolve_model(ref: str | ModelSpec | CompiledModel, *, field: str = "model") -> CompiledModel:
    """A model reference — a name, an inline ModelSpec or a compiled model — compiled."""
    if isinstance(ref, CompiledModel):
        return ref
    if isinstance(ref, ModelSpec):
        return compile_model(ref, prefix=f"{field}.")
    return get_model(ref)


def ship_model(ref: str | ModelSpec) -> str | ModelSpec:
    """What a spec sent to another process must carry: a registered model as its ModelSpec (the other
    process has no registration), a shipped preset or an inline model as it is."""
    if isinstance(ref, str) and ref in _REGISTERED:
        return _REGISTERED[ref]
    return ref


RhsFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
