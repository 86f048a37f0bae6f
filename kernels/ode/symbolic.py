"""SymPy equations -> straight-line triton.language statements (the right-hand side of a generated kernel).

An `OdeSystem` is what a kernel is generated from; `rhs_lines` lowers F (or its Jacobian, or F with
the Jacobian-vector product of the tangent flow) after SymPy's common-subexpression elimination.
"""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import sympy as sp


class CodegenError(ValueError):
    """The equations use something the Triton printer cannot lower."""


@dataclass(frozen=True)
class OdeSystem:
    """u' = F(u; p) as SymPy expressions over plain symbols (what the kernel is generated from)."""

    name: str
    states: tuple[str, ...]
    params: tuple[str, ...]           # per-lane parameters, in the column order of the P array
    equations: tuple[sp.Expr, ...]

    @property
    def digest(self) -> str:
        text = repr((self.states, self.params, [sp.srepr(e) for e in self.equations]))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def system_from_model(model, fixed: dict[str, float] | None = None) -> OdeSystem:
    """An OdeSystem from a registered model (duck-typed: state/param names and symbols, equations).

    `fixed` parameters are substituted as constants: SymPy then folds them (Lambda**n_sig with
    n_sig = 4 becomes three multiplies instead of exp(4 log Lambda)), and they are not loaded.
    """
    fixed = dict(fixed or {})
    subs = {sp.Symbol(k): (sp.Integer(int(v)) if float(v).is_integer() else sp.Float(v, 17))
            for k, v in fixed.items()}
    eqs = []
    for e in model.equations:
        e = e.subs(subs)
        # integer-valued float exponents become integer powers (multiplications, exact for x < 0)
        e = e.replace(lambda x: x.is_Pow and x.exp.is_Float and float(x.exp).is_integer(),
                      lambda x: sp.Pow(x.base, int(x.exp)))
        eqs.append(e)
    free = tuple(p for p in model.param_names if p not in fixed)
    return OdeSystem(model.name, tuple(model.state_names), free, tuple(eqs))


# ---- expression printer --------------------------------------------------------------------------
class _Printer:
    """Lowers a SymPy expression to a triton.language expression string.

    Numbers become named constants of the kernel's dtype (tl.full), so FP64 kernels keep every
    coefficient exact; integer powers become multiplications; x**(1/2) -> tl.sqrt.
    """

    _UNARY = {"exp": "tl.exp", "log": "tl.log", "sin": "tl.sin", "cos": "tl.cos", "Abs": "tl.abs",
              "tanh": "_tanh", "sinh": "_sinh", "cosh": "_cosh", "tan": "_tan"}

    def __init__(self, names: dict[sp.Symbol, str], consts: dict[float, str], fast_div: bool = False):
        self.names = names
        self.consts = consts
        self.fast_div = fast_div

    def div(self, num: str, den: str) -> str:
        # FP32: tl.fdiv is the fast ~2-ulp division (IEEE div.rn costs ~10x more); FP64 stays exact
        return f"tl.fdiv({num}, {den})" if self.fast_div else f"(({num}) / ({den}))"

    def const(self, value: float) -> str:
        value = float(value)
        if value not in self.consts:
            self.consts[value] = f"c{len(self.consts)}"
        return self.consts[value]

    def __call__(self, e: sp.Expr) -> str:
        if e.is_Symbol:
            if e not in self.names:
                raise CodegenError(f"unknown symbol {e}")
            return self.names[e]
        if e.is_Number:
            if not e.is_finite:
                raise CodegenError(f"non-finite constant {e}")
            return self.const(e)
        if e is sp.pi or e is sp.E:
            return self.const(float(e))
        if e.is_Add:
            return "(" + " + ".join(self(a) for a in e.args) + ")"
        if e.is_Mul:
            return self._mul(e)
        if e.is_Pow:
            return self._pow(e.base, e.exp)
        fname = type(e).__name__
        if fname in self._UNARY:
            return f"{self._UNARY[fname]}({self(e.args[0])})"
        if fname in ("Max", "Min"):
            op = "tl.maximum" if fname == "Max" else "tl.minimum"
            out = self(e.args[0])
            for a in e.args[1:]:
                out = f"{op}({out}, {self(a)})"
            return out
        if fname == "Heaviside":
            return f"tl.where({self(e.args[0])} > {self.const(0)}, {self.const(1)}, {self.const(0)})"
        raise CodegenError(f"cannot lower {fname} (in {e}) to Triton")

    def _mul(self, e: sp.Mul) -> str:
        num, den = [], []
        coeff, factors = e.as_coeff_mul()
        for f in factors:
            if f.is_Pow and f.exp.is_Number and f.exp < 0:
                den.append(self._pow(f.base, -f.exp))
            else:
                num.append(self(f))
        sign = ""
        if coeff == -1:
            sign = "-"
        elif coeff != 1:
            num.insert(0, self.const(coeff))
        text = " * ".join(num) if num else self.const(1)
        if den:
            text = self.div(text, " * ".join(den))
        return f"({sign}{text})"

    def _pow(self, base: sp.Expr, ex: sp.Expr) -> str:
        if ex.is_Float and float(ex).is_integer():
            ex = sp.Integer(int(ex))
        if ex.is_Integer:
            n = int(ex)
            if n == 0:
                return self.const(1)
            b = self(base)
            if n < 0:
                return self.div(self.const(1), self._ipow(b, -n))
            return self._ipow(b, n)
        if ex == sp.Rational(1, 2):
            return f"tl.sqrt({self(base)})"
        if ex == sp.Rational(-1, 2):
            return self.div(self.const(1), f"tl.sqrt({self(base)})")
        return f"_pow({self(base)}, {self(ex)})"

    @staticmethod
    def _ipow(b: str, n: int) -> str:
        """b**n by repeated squaring, as one expression (the compiler shares the repeated terms)."""
        if n == 1:
            return b
        half = _Printer._ipow(b, n // 2)
        sq = f"({half} * {half})"
        return f"({sq} * {b})" if n % 2 else sq


def _tangent_symbols(system: OdeSystem) -> list[sp.Symbol]:
    return [sp.Symbol(f"__tangent_{s}") for s in system.states]


@functools.lru_cache(maxsize=32)
def _cse(system: OdeSystem, jac: bool = False, jvp: bool = False) -> tuple[list, list]:
    exprs = list(system.equations)
    states = [sp.Symbol(s) for s in system.states]
    if jac:  # dF/du row by row: the stiff solver's W = I - gamma h J is built from it in the kernel
        exprs = list(sp.Matrix(exprs).jacobian(states))
    elif jvp:  # F and J(u) w together: the tangent flow shares F's subexpressions
        J = sp.Matrix(exprs).jacobian(states)
        exprs = exprs + list(J * sp.Matrix(_tangent_symbols(system)))
    return sp.cse(exprs, symbols=sp.numbered_symbols("_cse"), optimizations="basic")


def rhs_lines(system: OdeSystem, inputs: list[str], params: list[str], outputs: list[str], tmp: str,
              consts: dict[float, str], fast_div: bool = False, jac: bool = False,
              tangent: tuple[list[str], list[str]] | None = None) -> list[str]:
    """Straight-line statements computing outputs[i] = F_i(inputs; params), temporaries `tmp{j}`.

    jac=True: outputs are the n*n entries of the Jacobian dF/du, row-major.
    tangent=(w, out): also out[i] = (J(inputs) w)_i, the tangent flow's right-hand side (exact
    linearisation: no difference of two nearby states, so no rounding floor).
    """
    names = {sp.Symbol(s): v for s, v in zip(system.states, inputs)}
    names.update({sp.Symbol(p): v for p, v in zip(system.params, params)})
    if tangent is not None:
        names.update(dict(zip(_tangent_symbols(system), tangent[0])))
        outputs = list(outputs) + list(tangent[1])
    repl, reduced = _cse(system, jac, tangent is not None)
    lines = []
    for j, (sym, expr) in enumerate(repl):
        pr = _Printer(names, consts, fast_div)
        lines.append(f"{tmp}{j} = {pr(expr)}")
        names[sym] = f"{tmp}{j}"
    pr = _Printer(names, consts, fast_div)
    for out, expr in zip(outputs, reduced):
        lines.append(f"{out} = {pr(expr)}")
    return lines

