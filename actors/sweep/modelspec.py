"""A model as data (`ModelSpec`) and the one safe parser of its expressions.

Light on purpose (pydantic only; SymPy is imported when an expression is parsed), so
actors/sweep/config.py can accept a model inline (`model: {states: ..., equations: ...}`) without
importing SymPy.

Why a parser of our own: `sympy.sympify` evaluates its input with Python's `eval`, so a model text
could run arbitrary code (`__import__('os').system(...)`). A model may come from a user's YAML file,
a sweep config or an HTTP request, so every expression is first checked against a whitelist on its
Python syntax tree — numbers, the model's own names, + - * / ** (or ^), and calls of the functions in
`FUNCTIONS` (no attribute access, subscripts, lambdas, strings, keyword arguments or any other name)
— and only then handed to `sympy.parsing.sympy_parser.parse_expr` with a namespace that holds those
names alone (no builtins). Constant sub-expressions must be finite reals with exponents of at most
`MAX_CONSTANT_EXPONENT`, so `10**10**10` cannot make SymPy compute a ten-billion-digit integer.
"""
from __future__ import annotations

import ast
import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, Union

from pydantic import BeforeValidator, Field, model_validator

from actors.common.config import Strict
from actors.common.errors import InputError

__all__ = ["CONSTANTS", "FUNCTIONS", "MAX_CONSTANT_EXPONENT", "MAX_EXPRESSION_CHARS", "FixedPointLabel", "ModelRef",
           "ModelSpec", "ReferencePoint", "check_expression", "model_label", "parse_expression"]

# functions every backend lowers (numpy and torch through lambdify, Triton through kernels/ode/symbolic.py)
FUNCTIONS: dict[str, tuple[int, int | None]] = {   # name -> (least, most) arguments
    "exp": (1, 1), "log": (1, 2), "sin": (1, 1), "cos": (1, 1), "tan": (1, 1), "tanh": (1, 1),
    "sinh": (1, 1), "cosh": (1, 1), "sqrt": (1, 1), "Abs": (1, 1), "Min": (2, None), "Max": (2, None),
    "Heaviside": (1, 1)}
CONSTANTS: dict[str, float] = {"pi": math.pi, "E": math.e}
MAX_EXPRESSION_CHARS = 20_000      # any expression (the Serve app takes less: SweepServeArgs)
MAX_CONSTANT_EXPONENT = 1000.0     # |e| of a constant exponent in x**e
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}\Z")   # a state, parameter or definition name

_ARITH = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**", ast.BitXor: "^"}
_LOGIC = {ast.BitAnd: "&", ast.BitOr: "|"}
_COMPARE = (ast.Lt, ast.LtE, ast.Gt, ast.GtE)


def _refuse(field: str, text: str, why: str, names: set[str] | None = None) -> InputError:
    allowed = "numbers, + - * / ** ^, the functions " + ", ".join(FUNCTIONS) + ", the constants pi, E"
    if names is not None:
        allowed += " and the model's names " + ", ".join(sorted(names)) if names else ""
    shown = text if len(text) <= 80 else text[:77] + "..."
    return InputError(field, f"cannot parse {shown!r}: {why}", allowed)


class _Checker:
    """Walks an expression's syntax tree; returns the value of constant sub-trees (None otherwise)."""

    def __init__(self, text: str, field: str, names: set[str], relational: bool):
        self.text, self.field, self.names, self.relational = text, field, names, relational

    def fail(self, why: str) -> InputError:
        return _refuse(self.field, self.text, why, self.names)

    def __call__(self, node: ast.AST) -> float | None:  # noqa: C901 - one branch per node type
        if isinstance(node, ast.Expression):
            return self(node.body)
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, int | float):
                raise self.fail(f"{node.value!r} is not a number")
            return self._finite(lambda: float(node.value), f"{node.value!r}")
        if isinstance(node, ast.Name):
            if node.id.startswith("_"):
                raise self.fail(f"names starting with '_' are not allowed ({node.id})")
            if node.id in self.names:
                return None
            if node.id in CONSTANTS:
                return CONSTANTS[node.id]
            if node.id in FUNCTIONS:
                raise self.fail(f"{node.id} is a function: call it, e.g. {node.id}(x)")
            raise self.fail(f"unknown name {node.id!r}")
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.USub | ast.UAdd):
                v = self(node.operand)
                return None if v is None else (-v if isinstance(node.op, ast.USub) else v)
            if self.relational and isinstance(node.op, ast.Invert):   # ~(a > b): not
                self(node.operand)
                return None
            raise self.fail(f"the operator {type(node.op).__name__} is not allowed")
        if isinstance(node, ast.BinOp):
            if type(node.op) in _LOGIC and self.relational:
                self(node.left), self(node.right)
                return None
            if type(node.op) not in _ARITH:
                raise self.fail(f"the operator {type(node.op).__name__} is not allowed")
            a, b = self(node.left), self(node.right)
            power = isinstance(node.op, ast.Pow | ast.BitXor)
            if power and b is not None and abs(b) > MAX_CONSTANT_EXPONENT:
                raise self.fail(f"the constant exponent {b:g} is beyond +-{MAX_CONSTANT_EXPONENT:g}")
            if a is None or b is None:
                return None
            ops = {ast.Add: lambda: a + b, ast.Sub: lambda: a - b, ast.Mult: lambda: a * b, ast.Div: lambda: a / b,
                   ast.Pow: lambda: a ** b, ast.BitXor: lambda: a ** b}
            return self._finite(ops[type(node.op)], "a constant sub-expression")
        if isinstance(node, ast.Compare):
            if not self.relational:
                raise self.fail("comparisons are allowed only in fixed-point label conditions")
            if len(node.ops) != 1 or not isinstance(node.ops[0], _COMPARE):
                raise self.fail("use one of <, <=, >, >= per comparison (join them with & or |)")
            self(node.left), self(node.comparators[0])
            return None
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
                what = ast.unparse(node.func) if hasattr(ast, "unparse") else "this"
                raise self.fail(f"{what}(...) is not an allowed function")
            if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
                raise self.fail(f"{node.func.id}(...) takes plain arguments only")
            least, most = FUNCTIONS[node.func.id]
            if len(node.args) < least or (most is not None and len(node.args) > most):
                raise self.fail(f"{node.func.id} takes {least if least == most else f'{least} or more'} argument(s)")
            values = [self(a) for a in node.args]
            if any(v is None for v in values):
                return None
            return self._finite(lambda: _call(node.func.id, values), f"{node.func.id}(...)")
        if isinstance(node, ast.Attribute):
            raise self.fail("attribute access is not allowed")
        if isinstance(node, ast.Lambda):
            raise self.fail("lambda is not allowed")
        raise self.fail(f"{type(node).__name__} is not allowed in a model expression")

    def _finite(self, compute: Any, what: str) -> float:
        try:
            v = compute()
        except (OverflowError, ZeroDivisionError, ValueError) as exc:
            raise self.fail(f"{what} is not a finite real number ({exc})") from None
        if isinstance(v, complex) or not math.isfinite(v):
            raise self.fail(f"{what} is not a finite real number")
        return float(v)


def _call(name: str, args: list[float]) -> float:
    """A whitelisted function of constant arguments, in floats (for the finiteness guard only)."""
    if name == "Min":
        return min(args)
    if name == "Max":
        return max(args)
    if name == "Abs":
        return abs(args[0])
    if name == "Heaviside":
        return float(args[0] > 0)
    if name == "log" and len(args) == 2:
        return math.log(args[0], args[1])
    return getattr(math, name)(args[0])


def check_expression(text: Any, field: str, names: set[str] | frozenset[str], *, relational: bool = False,
                     max_chars: int = MAX_EXPRESSION_CHARS) -> None:
    """Raise InputError naming `field` unless `text` is a whitelisted expression over `names`."""
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise InputError(field, f"{text!r} is not an expression", "a string such as 'a*x - y'")
    text = str(text)
    if len(text) > max_chars:
        raise InputError(field, f"the expression has {len(text)} characters", f"at most {max_chars}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise _refuse(field, text, f"not an expression ({type(exc).__name__}: {getattr(exc, 'msg', exc)})",
                      set(names)) from None
    unknown = sorted({n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} - set(names) - set(CONSTANTS)
                     - set(FUNCTIONS))
    if unknown and not any(u.startswith("_") for u in unknown):
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise InputError(field, f"unknown names {unknown} in {shown!r}", _refuse(field, text, "", set(names)).allowed)
    try:
        _Checker(text, field, set(names), relational)(tree)
    except RecursionError:
        raise _refuse(field, text, "nested too deeply", set(names)) from None


def parse_expression(text: Any, field: str, symbols: Mapping[str, Any], *, relational: bool = False,
                     max_chars: int = MAX_EXPRESSION_CHARS) -> Any:
    """The SymPy expression of `text` over `symbols` (name -> Symbol or expression), parsed without
    evaluating anything but the whitelisted syntax (see the module docstring)."""
    check_expression(text, field, set(symbols), relational=relational, max_chars=max_chars)
    import sympy as sp
    from sympy.parsing.sympy_parser import auto_number, convert_xor, parse_expr

    namespace: dict[str, Any] = {"__builtins__": {}, "Integer": sp.Integer, "Float": sp.Float,
                                 "Rational": sp.Rational, "pi": sp.pi, "E": sp.E}
    namespace.update({name: getattr(sp, name) for name in FUNCTIONS})
    try:
        expr = parse_expr(str(text).strip(), local_dict=dict(symbols), global_dict=namespace,
                          transformations=(auto_number, convert_xor))
    except (SyntaxError, TypeError, ValueError, ZeroDivisionError, AttributeError, RecursionError) as exc:
        raise _refuse(field, str(text), f"{type(exc).__name__}: {exc}", set(symbols)) from None
    if not isinstance(expr, sp.Basic):
        raise _refuse(field, str(text), "not an expression", set(symbols))
    if expr.has(sp.zoo, sp.oo, -sp.oo, sp.nan) or (expr.is_number and not relational and not expr.is_real):
        raise _refuse(field, str(text), "it is not finite and real", set(symbols))
    return expr


def _name_list(values: list[str], what: str) -> list[str]:
    for v in values:
        if not NAME.match(v):
            raise ValueError(f"{what} name {v!r} is not a plain name (a letter, then letters, digits or _)")
        if v in FUNCTIONS:
            raise ValueError(f"{what} name {v!r} is a function name ({', '.join(FUNCTIONS)} are reserved)")
    return values


class FixedPointLabel(Strict):
    """Names a class of fixed points by a condition on the final state (e.g. `Lambda > 5`)."""

    name: str = Field(max_length=64)
    when: str


class ReferencePoint(Strict):
    """A documented parameter point and the attractor it must show (checked by tests and the demo)."""

    name: str = Field(max_length=64)
    params: dict[str, float] = Field(default_factory=dict)
    initial_state: dict[str, float] = Field(default_factory=dict)
    expect: str


class ModelSpec(Strict):
    """A dynamical system u' = F(u; p) as data: states, parameter defaults, equations as text.

    Strict (actors.common.config): unknown keys, NaN / Infinity and booleans or strings as numbers
    are errors naming the field. Equations are parsed when the model is compiled (models.py).
    """

    name: str = Field("inline", max_length=64, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
    description: str = Field("", max_length=20_000)
    states: list[str] = Field(min_length=1)
    params: dict[str, float]
    initial_state: dict[str, float]
    definitions: dict[str, str] = Field(default_factory=dict)  # helper expressions, in order
    equations: dict[str, str]
    fixed_point_labels: list[FixedPointLabel] = Field(default_factory=list)
    default_fixed_point_label: str = Field("fixed_point", max_length=64)
    time_span: tuple[float, float] = (0.0, 100.0)
    reference_points: list[ReferencePoint] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        _name_list(self.states, "state")
        _name_list(list(self.params), "parameter")
        _name_list(list(self.definitions), "definition")
        if len(set(self.states)) != len(self.states):
            raise ValueError(f"states must be distinct, got {self.states}")
        if set(self.equations) != set(self.states):
            raise ValueError(f"equations must have one entry per state {self.states}; got {list(self.equations)}")
        if set(self.initial_state) != set(self.states):
            raise ValueError(f"initial_state must name every state {self.states}")
        clash = (set(self.states) & set(self.params)) | ((set(self.states) | set(self.params)) & set(self.definitions))
        if clash:
            raise ValueError(f"names used twice (states, parameters, definitions): {sorted(clash)}")
        t0, t1 = self.time_span
        if not t1 > t0:
            raise ValueError(f"time_span must be increasing, got {self.time_span}")
        return self


def _model_ref(value: Any) -> Any:
    """A mapping is an inline model (validated as ModelSpec, errors on `model.<field>`); a name stays."""
    if isinstance(value, Mapping):
        return ModelSpec.model_validate(dict(value))
    return value


# `model:` of a sweep, bifurcation or continuation spec and of a /sweep/simulate request: the name of a
# shipped or registered model, or a whole model inline
ModelRef = Annotated[Union[str, ModelSpec], BeforeValidator(_model_ref)]  # noqa: UP007


def model_label(ref: str | ModelSpec | Any) -> str:
    """The name of a model reference (a name, an inline ModelSpec or a compiled model)."""
    return ref if isinstance(ref, str) else ref.name
