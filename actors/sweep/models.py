"""Models as data: a model is its equations plus parameter defaults and state names.

Equations are SymPy-parsable strings kept in YAML (configs/models/*.yaml). They are lowered here
to vectorised numpy and torch right-hand sides with `sympy.lambdify`; a later stage compiles the
same expressions to GPU kernels. Every state and parameter name is forced to a plain Symbol, so
names such as `gamma`, `beta` or `Lambda` mean variables, not SymPy functions.
"""
from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from importlib.resources import files
from typing import Any

import numpy as np
import sympy as sp
import yaml
from pydantic import BaseModel, Field, model_validator

from actors.common.errors import InputError, UnknownName

MODELS_PACKAGE = "configs.models"   # the YAML presets ship as package data of configs/models/


class FixedPointLabel(BaseModel):
    """Names a class of fixed points by a condition on the final state (e.g. `Lambda > 5`)."""

    name: str
    when: str


class ReferencePoint(BaseModel):
    """A documented parameter point and the attractor it must show (checked by tests and the demo)."""

    name: str
    params: dict[str, float] = Field(default_factory=dict)
    initial_state: dict[str, float] = Field(default_factory=dict)
    expect: str


class ModelSpec(BaseModel):
    """A dynamical system u' = F(u; p) as data."""

    name: str
    description: str = ""
    states: list[str] = Field(min_length=1)
    params: dict[str, float]
    initial_state: dict[str, float]
    definitions: dict[str, str] = Field(default_factory=dict)  # helper expressions, in order
    equations: dict[str, str]
    fixed_point_labels: list[FixedPointLabel] = Field(default_factory=list)
    default_fixed_point_label: str = "fixed_point"
    time_span: tuple[float, float] = (0.0, 100.0)
    reference_points: list[ReferencePoint] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        if set(self.equations) != set(self.states):
            raise ValueError(f"equations must have one entry per state {self.states}; got {list(self.equations)}")
        if set(self.initial_state) != set(self.states):
            raise ValueError(f"initial_state must name every state {self.states}")
        clash = set(self.states) & set(self.params)
        if clash:
            raise ValueError(f"names used as both state and parameter: {sorted(clash)}")
        return self


_TORCH_FUNCS = ("exp", "log", "sin", "cos", "tan", "tanh", "sqrt", "abs", "sinh", "cosh", "atan")


def _torch_module() -> dict[str, Any]:
    import torch

    mod = {name: getattr(torch, name) for name in _TORCH_FUNCS}
    mod.update({"Abs": torch.abs, "pi": np.pi, "E": np.e,
                "Max": torch.maximum, "Min": torch.minimum, "Heaviside": lambda x: (x > 0).to(x.dtype)})
    return mod


class CompiledModel:
    """Symbolic model plus its numpy and torch lowerings.

    rhs_numpy(u[..., n], p[..., m]) and rhs_torch(u[B, n], p[B, m]) return du/dt of u's shape.
    """

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self.name = spec.name
        self.state_names = list(spec.states)
        self.param_names = list(spec.params)
        self.state_symbols = [sp.Symbol(s) for s in self.state_names]
        self.param_symbols = [sp.Symbol(p) for p in self.param_names]
        self._locals = {s.name: s for s in self.state_symbols + self.param_symbols}
        self.equations = [self._parse(spec.equations[s], f"equations.{s}") for s in self.state_names]
        self.jacobian = sp.Matrix(self.equations).jacobian(self.state_symbols)
        args = (self.state_symbols, self.param_symbols)
        self._np = sp.lambdify(args, self.equations, modules="numpy", cse=True)
        self._torch = sp.lambdify(args, self.equations, modules=[_torch_module()], cse=True)
        self._labels = [(lab.name, sp.lambdify(args, self._parse(lab.when, f"fixed_point_labels.{lab.name}"),
                                              modules="numpy")) for lab in spec.fixed_point_labels]
        self._special: dict[tuple, tuple] = {}
        self.hash = hashlib.sha256(repr((self.state_names, self.param_names,
                                         [sp.srepr(e) for e in self.equations])).encode()).hexdigest()[:16]

    def _parse(self, text: str, field: str) -> sp.Expr:
        local = dict(self._locals)
        for name, definition in self.spec.definitions.items():  # definitions may use earlier ones
            local[name] = sp.sympify(definition, locals=dict(local))
        try:
            expr = sp.sympify(text, locals=local)
        except (sp.SympifyError, SyntaxError, TypeError) as exc:
            raise InputError(field, f"cannot parse {text!r}: {exc}") from exc
        unknown = {s.name for s in expr.free_symbols} - set(self._locals)
        if unknown:
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
            exprs = [sp.simplify(e.subs(subs)) if len(e.free_symbols) < 12 else e.subs(subs) for e in self.equations]
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
            spec = ModelSpec.model_validate(yaml.safe_load(entry.read_text()))
            specs[spec.name] = spec
    return specs


_REGISTERED: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec | dict) -> CompiledModel:
    """Add a user model (a ModelSpec or its dict form) to the registry and compile it."""
    spec = spec if isinstance(spec, ModelSpec) else ModelSpec.model_validate(spec)
    _REGISTERED[spec.name] = spec
    get_model.cache_clear()
    return get_model(spec.name)


def model_names() -> list[str]:
    return sorted(set(_presets()) | set(_REGISTERED))


@functools.lru_cache(maxsize=64)
def get_model(name: str) -> CompiledModel:
    """The compiled model called `name` (registered ones shadow the YAML presets)."""
    specs = {**_presets(), **_REGISTERED}
    if name not in specs:
        raise UnknownName("model", name, list(specs))
    return CompiledModel(specs[name])


RhsFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
