"""SymPy equations -> Triton source for one fused per-trajectory ODE kernel.

One lane integrates one trajectory: the state, its step size and the error controller live in
registers as one scalar variable per state component (fully unrolled: a 5-state Tsit5 step is ~200
straight-line lines), the right-hand side is inlined after SymPy's common-subexpression
elimination, and parameters are loaded once per lane. This is DiffEqGPU.jl's design, in Python.

The source is written to a cache directory and imported from there (Triton's JIT reads the source
of the functions it compiles), keyed by a hash of the equations, the solver and the options.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import sympy as sp

from kernels.ode.tableaus import ROS23_D, ROS23_E32, TABLEAUS, Tableau

CODEGEN_VERSION = "10"
CACHE_DIR = Path(os.environ.get("ATTRACTOR_KERNEL_CACHE", Path.home() / ".cache" / "attractor" / "ode_kernels"))

# controller constants (Hairer–Wanner PI controller for a 5(4) pair; scipy's clamps)
SAFETY, MIN_FACTOR, MAX_FACTOR = 0.9, 0.2, 10.0
PI_BETA1, PI_BETA2 = 0.7 / 5, 0.4 / 5    # for q = 4; scaled by 5 / (q + 1) for other error orders
NEWTON_ITERS = 6   # safeguarded Newton iterations locating a section crossing on the interpolant


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


# ---- kernel source -------------------------------------------------------------------------------
_HELPERS = '''
@triton.jit
def _pow(x, y):
    # x**y for a run-time exponent: exact sign for integer y and x < 0, nan otherwise (as C pow)
    r = tl.exp(y * tl.log(tl.abs(x)))
    yi = tl.floor(y)
    odd = (yi == y) & (tl.floor(0.5 * y) != 0.5 * y)
    r = tl.where((x < 0) & odd, -r, r)
    r = tl.where((x < 0) & (yi != y), tl.sqrt(-1.0 - tl.abs(x)), r)  # sqrt(<0): nan
    return tl.where(y == 0, r * 0.0 + 1.0, r)


@triton.jit
def _tanh(x):
    e = tl.exp(-2.0 * tl.abs(x))
    r = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -r, r)


@triton.jit
def _sinh(x):
    return 0.5 * (tl.exp(x) - tl.exp(-x))


@triton.jit
def _cosh(x):
    return 0.5 * (tl.exp(x) + tl.exp(-x))


@triton.jit
def _tan(x):
    return tl.sin(x) / tl.cos(x)
'''


@dataclass(frozen=True)
class KernelSpec:
    """What one generated module is specialised for."""

    system: OdeSystem
    solver: str               # rk4 | tsit5 | dopri5
    dtype: str                # float32 | float64
    lyapunov: bool = False    # integrate a renormalised perturbation (Benettin) alongside
    save_every: bool = False  # store the state every k-th accepted step
    features: bool = True     # running min/max/mean over the final window
    interp: bool = False      # store the dense-output state at given times (t_eval)
    section: tuple[int, int] | None = None  # Poincare section (state index, direction +1/-1/0)

    @property
    def tangent(self) -> bool:
        """The perturbation is a tangent vector v' = J(u) v through the same explicit RK stages.

        Why not a twin state u + d0 s: the twin's separation is a difference of two states, resolved
        only down to ~eps |u| (in FP32 that floor is 2% of d0 = 1e-4 per step), and the twin can
        leave the model's domain where the orbit does not. Rosenbrock keeps the twin (its stages
        solve with W = I - gamma h J, whose linearisation the tangent would need too).
        """
        return self.lyapunov and TABLEAUS[self.solver].kind != "rosenbrock"

    @property
    def key(self) -> str:
        text = (f"{CODEGEN_VERSION}|{self.system.digest}|{self.solver}|{self.dtype}|{self.lyapunov}|"
                f"{self.save_every}|{self.features}|{self.interp}|{self.section}")
        return f"{self.system.name}_{self.solver}_{self.dtype}_" + hashlib.sha256(text.encode()).hexdigest()[:12]


class _Src:
    def __init__(self):
        self.lines: list[str] = []
        self.indent = 1

    def __call__(self, *lines: str) -> None:
        self.lines.extend("    " * self.indent + ln for ln in lines)


def _lincomb(coeffs, terms: list[str], c) -> str:
    parts = [f"{c(a)} * {t}" for a, t in zip(coeffs, terms) if a != 0.0]
    return " + ".join(parts) if parts else c(0.0)


def kernel_source(spec: KernelSpec) -> str:
    """The Python/Triton source of the step kernel (and for adaptive solvers, the init kernel)."""
    tab: Tableau = TABLEAUS[spec.solver]
    sysm = spec.system
    n, m = len(sysm.states), len(sysm.params)
    S = tab.stages
    R = range(n)
    consts: dict[float, str] = {}

    def c(v: float) -> str:
        v = float(v)
        if v not in consts:
            consts[v] = f"c{len(consts)}"
        return consts[v]

    P = [f"p_{j}" for j in range(m)]
    body = _Src()
    lyap = spec.lyapunov

    fast = spec.dtype == "float32"

    def div(a: str, b: str) -> str:
        return f"tl.fdiv({a}, {b})" if fast else f"(({a}) / ({b}))"

    def rhs(inp: list[str], out: list[str], tag: str) -> None:
        body(*rhs_lines(sysm, inp, P, out, f"_{tag}_", consts, fast))

    hc: dict[float, str] = {}

    def hcoef(v: float) -> str:
        """Fixed step: h * coefficient, computed once before the loop."""
        if v not in hc:
            hc[v] = f"hc{len(hc)}"
        return hc[v]

    def combo(x: str, coeffs, terms: list[str]) -> str:
        if tab.adaptive:
            return f"{x} + h * ({_lincomb(coeffs, terms, c)})"
        parts = [f"{hcoef(a)} * {t}" for a, t in zip(coeffs, terms) if a != 0.0]
        return f"{x} + (" + " + ".join(parts) + ")"

    def stages(x: str, k: str, tag: str) -> None:
        """Stages 1..S-1 of a step from state x_i with stage-0 values k0_i already set."""
        for s in range(1, S):
            for i in R:
                body(f"y{tag}_{i} = {combo(f'{x}_{i}', tab.a[s], [f'{k}{j}_{i}' for j in range(s)])}")
            rhs([f"y{tag}_{i}" for i in R], [f"{k}{s}_{i}" for i in R], f"{tag}{s}")
        for i in R:
            body(f"{x}n_{i} = {combo(f'{x}_{i}', tab.b, [f'{k}{j}_{i}' for j in range(S)])}")
        if tab.adaptive:
            rhs([f"{x}n_{i}" for i in R], [f"{k}{S}_{i}" for i in R], f"{tag}{S}")
            for i in R:
                body(f"{x}e_{i} = h * ({_lincomb(tab.e, [f'{k}{j}_{i}' for j in range(S + 1)], c)})")

    rosen = tab.kind == "rosenbrock"

    def tangent_stages() -> None:
        """Stages of u and of the tangent v together: kv_s = J(y_s) (v + h sum a_sj kv_j), exact."""
        for s in range(1, S):
            for i in R:
                body(f"yu_{i} = {combo(f'u_{i}', tab.a[s], [f'k{j}_{i}' for j in range(s)])}",
                     f"yv_{i} = {combo(f'v_{i}', tab.a[s], [f'kv{j}_{i}' for j in range(s)])}")
            body(*rhs_lines(sysm, [f"yu_{i}" for i in R], P, [f"k{s}_{i}" for i in R], f"_u{s}_", consts, fast,
                            tangent=([f"yv_{i}" for i in R], [f"kv{s}_{i}" for i in R])))
        for i in R:
            body(f"un_{i} = {combo(f'u_{i}', tab.b, [f'k{j}_{i}' for j in range(S)])}",
                 f"vn_{i} = {combo(f'v_{i}', tab.b, [f'kv{j}_{i}' for j in range(S)])}")
        if tab.adaptive:
            body(*rhs_lines(sysm, [f"un_{i}" for i in R], P, [f"k{S}_{i}" for i in R], f"_u{S}_", consts, fast,
                            tangent=([f"vn_{i}" for i in R], [f"kv{S}_{i}" for i in R])))
            for i in R:
                body(f"ue_{i} = h * ({_lincomb(tab.e, [f'k{j}_{i}' for j in range(S + 1)], c)})",
                     f"ve_{i} = h * ({_lincomb(tab.e, [f'kv{j}_{i}' for j in range(S + 1)], c)})")

    def fsal(k: str, i: int) -> str:
        """The stage holding F(u_new), reused as the next step's F(u)."""
        return f"{k}F2_{i}" if rosen else f"{k}{S}_{i}"

    def rosen_stages(x: str, k: str, tag: str, f0: str) -> None:
        """One Rosenbrock23 step from x_i (F(x) in f0_i): Jacobian, pivoted LU of W, three solves."""
        W = [[f"{k}W{r}_{q}" for q in R] for r in R]
        body(*rhs_lines(sysm, [f"{x}_{i}" for i in R], P, [W[r][q] for r in R for q in R], f"_{tag}j_", consts,
                        fast, jac=True))
        body(f"{k}gh = h * {c(ROS23_D)}")
        for r in R:
            for q in R:
                body(f"{W[r][q]} = " + (f"{c(1.0)} - {k}gh * {W[r][q]}" if r == q else f"-({k}gh * {W[r][q]})"))
        for q in R:  # partial pivoting by compare-and-swap (branch-free): row q ends with the largest pivot
            for r in range(q + 1, n):
                body(f"{k}sw{q}_{r} = tl.abs({W[r][q]}) > tl.abs({W[q][q]})")
                for cc in R:
                    body(f"_sw = {W[q][cc]}", f"{W[q][cc]} = tl.where({k}sw{q}_{r}, {W[r][cc]}, {W[q][cc]})",
                         f"{W[r][cc]} = tl.where({k}sw{q}_{r}, _sw, {W[r][cc]})")
            body(f"{k}ip{q} = {div(c(1.0), W[q][q])}")
            for r in range(q + 1, n):
                body(f"{W[r][q]} = {W[r][q]} * {k}ip{q}")
                for cc in range(q + 1, n):
                    body(f"{W[r][cc]} = {W[r][cc]} - {W[r][q]} * {W[q][cc]}")

        def solve(rhs_terms: list[str], out: str) -> None:
            for i in R:
                body(f"{out}_{i} = {rhs_terms[i]}")
            for q in R:  # the row swaps, in the order the factorisation made them
                for r in range(q + 1, n):
                    body(f"_sw = {out}_{q}", f"{out}_{q} = tl.where({k}sw{q}_{r}, {out}_{r}, {out}_{q})",
                         f"{out}_{r} = tl.where({k}sw{q}_{r}, _sw, {out}_{r})")
            for r in range(1, n):
                body(f"{out}_{r} = {out}_{r} - (" + " + ".join(f"{W[r][q]} * {out}_{q}" for q in range(r)) + ")")
            for r in reversed(R):
                rest = " + ".join(f"{W[r][q]} * {out}_{q}" for q in range(r + 1, n))
                body(f"{out}_{r} = ({out}_{r}" + (f" - ({rest})" if rest else "") + f") * {k}ip{r}")

        solve([f"{f0}_{i}" for i in R], f"{k}1")
        for i in R:
            body(f"y{tag}_{i} = {x}_{i} + {c(0.5)} * h * {k}1_{i}")
        rhs([f"y{tag}_{i}" for i in R], [f"{k}F1_{i}" for i in R], f"{tag}1")
        solve([f"{k}F1_{i} - {k}1_{i}" for i in R], f"{k}2")
        for i in R:
            body(f"{k}2_{i} = {k}2_{i} + {k}1_{i}", f"{x}n_{i} = {x}_{i} + h * {k}2_{i}")
        rhs([f"{x}n_{i}" for i in R], [f"{k}F2_{i}" for i in R], f"{tag}2")
        solve([f"{k}F2_{i} - {c(ROS23_E32)} * ({k}2_{i} - {k}F1_{i}) - {c(2.0)} * ({k}1_{i} - {f0}_{i})" for i in R],
              f"{k}3")
        for i in R:
            body(f"{x}e_{i} = h * {c(1 / 6)} * ({k}1_{i} - {c(2.0)} * {k}2_{i} + {k}3_{i})")

    def dense_terms() -> list[tuple[tuple[float, ...], str, bool]]:
        """u(t_old + theta h) = uo + sum over (poly(theta), vector, scaled by h) of poly * vector."""
        if tab.dense is None:  # RK4: cubic Hermite through (uo, k0 = F(uo)) and (un, kH = F(un))
            return [((0.0, 0.0, 3.0, -2.0), "(un_{i} - uo_{i})", False), ((0.0, 1.0, -2.0, 1.0), "k0_{i}", True),
                    ((0.0, 0.0, -1.0, 1.0), "kH_{i}", True)]
        vec = ["k1_{i}", "k2_{i}"] if rosen else [f"k{j}_{{i}}" for j in range(S + 1)]
        return [(tuple(row), v, True) for row, v in zip(tab.dense, vec)]

    def horner(coeffs, th: str) -> str:
        coeffs = list(coeffs)
        while len(coeffs) > 1 and coeffs[-1] == 0.0:
            coeffs.pop()
        out = c(coeffs[-1])
        for a in reversed(coeffs[:-1]):
            out = f"{th} * ({out})" if a == 0.0 else f"{c(a)} + {th} * ({out})"
        return out

    def dense(th: str, out: str, comps, deriv: bool = False) -> None:
        """out_i = the interpolant (deriv: its theta-derivative) at theta `th` for components `comps`."""
        terms = dense_terms()
        for j, (poly, _, _) in enumerate(terms):
            if deriv:
                poly = tuple(m * a for m, a in enumerate(poly))[1:] or (0.0,)
            body(f"{out}w{j} = {horner(poly, th)}")
        for i in comps:
            hs = [f"{out}w{j} * {v.format(i=i)}" for j, (_, v, sc) in enumerate(terms) if sc]
            plain = [f"{out}w{j} * {v.format(i=i)}" for j, (_, v, sc) in enumerate(terms) if not sc]
            expr = "h * (" + " + ".join(hs) + ")" + "".join(f" + {p}" for p in plain)
            body(f"{out}_{i} = " + (expr if deriv else f"uo_{i} + {expr}"))

    def amax(name: str) -> str:
        out = f"tl.abs({name}_0)"
        for i in range(1, n):
            out = f"tl.maximum({out}, tl.abs({name}_{i}))"
        return out

    # ---- prologue: lanes, scalars, per-lane state --------------------------------------------
    body("lane = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)",
         "inb = lane < NW",
         "row = tl.load(IDX + lane, mask=inb, other=0).to(tl.int64)",
         "t0 = tl.load(S + 0)", "t1 = tl.load(S + 1)", "dt = tl.load(S + 2)", "rtol = tl.load(S + 3)",
         "atol = tl.load(S + 4)", "bound = tl.load(S + 5)", "ws = tl.load(S + 6)", "d0 = tl.load(S + 7)",
         "hmin = tl.load(S + 8)", "teps = tl.load(S + 9)", "sep_floor = tl.load(S + 10)",
         "zero = tl.zeros([BLOCK], DT)",
         "t = tl.load(T + row, mask=inb, other=0.0)",
         "status = tl.load(STATUS + row, mask=inb, other=1)",
         "nacc = tl.load(NACC + row, mask=inb, other=0)",
         "nrej = tl.load(NREJ + row, mask=inb, other=0)",
         "tblow = tl.load(TBLOW + row, mask=inb, other=0.0)",
         "wlen = tl.load(WLEN + row, mask=inb, other=0.0)")
    if tab.adaptive:
        body("h = tl.load(H + row, mask=inb, other=0.0)", "eprev = tl.load(EPREV + row, mask=inb, other=1.0)")
    else:
        body("h = zero + dt")
    for j in range(m):
        body(f"p_{j} = tl.load(P + row * {m} + {j}, mask=inb, other=0.0)")
    vecs = ["u"] + (["wmin", "wmax", "wsum"] if spec.features else []) + (["f"] if tab.adaptive else [])
    vecs += (["v"] + (["fv"] if tab.adaptive else [])) if lyap else []
    bufs = {"u": "U", "wmin": "WMIN", "wmax": "WMAX", "wsum": "WSUM", "f": "F", "v": "V", "fv": "FV"}
    for name in vecs:
        for i in R:
            body(f"{name}_{i} = tl.load({bufs[name]} + row * {n} + {i}, mask=inb, other=0.0)")
    if lyap:
        body("lsum = tl.load(LSUM + row, mask=inb, other=0.0)", "ltime = tl.load(LTIME + row, mask=inb, other=0.0)",
             "speed0 = tl.load(SPEED0 + row, mask=inb, other=0.0)")
    if spec.interp:
        body("ie = tl.load(IE + row, mask=inb, other=0)", "erow = row * TSR")
    if spec.section:
        body("lev = tl.load(S + 11)", "smin = tl.load(S + 12)",
             "ncross = tl.load(NCROSS + row, mask=inb, other=0)",
             *[f"{name} = tl.load(RET + row * 5 + {j}, mask=inb, other=0.0)"
               for j, name in enumerate(("tlast", "rmean", "rm2", "rmin", "rmax"))])
    body(f"m_prev = {amax('u')}", "mo_esc = zero", "h_esc = zero", "status_in = status",
         "active = inb & (status == 0) & (nacc + nrej < MAX_STEPS)",
         "n_act = tl.sum(active.to(tl.int32), axis=0)",
         "it = 0",
         "while (it < CHUNK) & (n_act > 0):",
         # the block-wide "anyone left?" reduction costs a barrier: test it every INNER steps
         "    for _k in range(INNER):")
    body.indent += 2
    # ---- one step --------------------------------------------------------------------------
    if tab.adaptive:
        body("h = tl.where(active, tl.minimum(h, t1 - t), h)")
        for i in R:
            body(f"k0_{i} = f_{i}")
        if lyap:
            for i in R:
                body(f"kv0_{i} = fv_{i}")
    elif spec.tangent:
        body(*rhs_lines(sysm, [f"u_{i}" for i in R], P, [f"k0_{i}" for i in R], "_u0_", consts, fast,
                        tangent=([f"v_{i}" for i in R], [f"kv0_{i}" for i in R])))
    else:
        rhs([f"u_{i}" for i in R], [f"k0_{i}" for i in R], "u0")
        if lyap:
            rhs([f"v_{i}" for i in R], [f"kv0_{i}" for i in R], "v0")
    if rosen:
        rosen_stages("u", "k", "u", "k0")
        if lyap:
            rosen_stages("v", "kv", "v", "kv0")
    elif spec.tangent:
        tangent_stages()
    else:
        stages("u", "k", "u")
        if lyap:
            stages("v", "kv", "v")
    if (spec.interp or spec.section) and tab.dense is None:
        rhs([f"un_{i}" for i in R], [f"kH_{i}" for i in R], "uH")  # F(u_new) for the Hermite interpolant
    if tab.adaptive:
        terms = [div(f"ue_{i}", f"atol + rtol * tl.maximum(tl.abs(u_{i}), tl.abs(un_{i}))") for i in R]
        qs = 5.0 / (tab.error_order + 1)  # PI gains scale with the order of the error estimate
        body("en = tl.sqrt((" + " + ".join(f"{x} * {x}" for x in terms) + f") * {c(1 / n)})")
        if spec.tangent:  # the perturbation (size d0) resolved to rtol too, as the torch twin's separation
            sep = [div(f"ve_{i}", "rtol * d0") for i in R]
        elif lyap:  # the twin's separation (size d0, below atol) must be resolved to rtol too, down to the
            # rounding floor of a difference of two states (~eps |u|): below it FP32 would never accept
            sep = [div(f"ve_{i} - ue_{i}", f"rtol * d0 + sep_floor * tl.abs(u_{i})") for i in R]
        if lyap:  # a non-finite perturbation error rejects the step (tl.maximum may drop a nan)
            body("en_v = tl.sqrt((" + " + ".join(f"{x} * {x}" for x in sep) + f") * {c(1 / n)})",
                 "en = tl.where(en_v > en, en_v, tl.where((en_v - en_v) == 0, en, en_v))")
        body("finite = (en - en) == 0",  # false for nan and inf
             f"accept = active & finite & (en <= {c(1.0)})",
             "reject = active & ~accept",
             "en_s = tl.where(finite & (en > 0), en, zero + 1e-30)",
             # PI controller on accepts (err^-b1 * err_prev^b2), plain I controller after a reject
             f"fac_a = {c(SAFETY)} * tl.exp({c(-PI_BETA1 * qs)} * tl.log(en_s) + {c(PI_BETA2 * qs)} * tl.log(eprev))",
             f"fac_r = {c(SAFETY)} * tl.exp({c(-1.0 / (tab.error_order + 1))} * tl.log(en_s))",
             f"fac = tl.where(accept, tl.minimum(tl.maximum(fac_a, {c(MIN_FACTOR)}), {c(MAX_FACTOR)}),"
             f" tl.minimum(tl.maximum(fac_r, {c(MIN_FACTOR)}), {c(1.0)}))",
             f"fac = tl.where(finite, fac, {c(MIN_FACTOR)})",
             f"eprev = tl.where(accept, tl.maximum(en, {c(1e-4)}), eprev)")
    else:
        body("accept = active")
    track_t = tab.adaptive or spec.features or spec.save_every or lyap or spec.interp or spec.section
    # (RK4 without any of these sets t once after the loop)
    if track_t:
        body("t_old = t", "t = tl.where(accept, t + h, t)" if tab.adaptive else
             "t = tl.where(accept, t0 + (nacc + 1).to(DT) * dt, t)")
    for i in R:
        body(f"uo_{i} = u_{i}", f"u_{i} = tl.where(accept, un_{i}, u_{i})")
        if tab.adaptive:
            body(f"f_{i} = tl.where(accept, {fsal('k', i)}, f_{i})")
    body("nacc += accept.to(tl.int32)")
    if tab.adaptive:
        body("nrej += reject.to(tl.int32)")
    if spec.interp:  # dense output at every requested time this step covered (the last step: all left)
        body("fin = accept & (t >= t1 - teps)" if tab.adaptive else "fin = accept & (nacc >= NSTEPS)",
             "te = tl.load(TEVAL + erow + ie * TSI, mask=accept & (ie < NT), other=0.0)",
             "pend = accept & (ie < NT) & ((te <= t) | fin)",
             "npend = tl.sum(pend.to(tl.int32), axis=0)",
             "while npend > 0:")
        body.indent += 1
        body(f"th = tl.minimum(tl.maximum({div('te - t_old', 'h')}, zero), {c(1.0)})")
        dense("th", "yi", R)
        for i in R:
            body(f"tl.store(YS + (ie * {n} + {i}).to(tl.int64) * NB + row, yi_{i}, mask=pend)")  # [T, n, B]: coalesced
        body("ie += pend.to(tl.int32)",
             "te = tl.load(TEVAL + erow + ie * TSI, mask=pend & (ie < NT), other=0.0)",
             "pend = pend & (ie < NT) & ((te <= t) | fin)",
             "npend = tl.sum(pend.to(tl.int32), axis=0)")
        body.indent -= 1
    if spec.section:  # Poincare section u_K = level crossed in the given direction during this step
        K, direction = spec.section
        body(f"g_o = uo_{K} - lev", f"g_n = un_{K} - lev")
        cond = {1: "(g_o < 0) & (g_n >= 0)", -1: "(g_o > 0) & (g_n <= 0)",
                0: "(((g_o < 0) & (g_n >= 0)) | ((g_o > 0) & (g_n <= 0)))"}[direction]
        body(f"cr = accept & (t_old >= smin) & {cond}",
             "if tl.sum(cr.to(tl.int32), axis=0) > 0:")
        body.indent += 1
        # root of the interpolant's K-th component on theta in [0, 1]: Newton from the secant guess,
        # kept inside the sign-change bracket (a step leaving it is replaced by bisection)
        body(f"th = tl.where(cr, {div('g_o', 'g_o - g_n')}, zero)",
             "lo = zero", f"hi = zero + {c(1.0)}",
             f"for _nt in range({NEWTON_ITERS}):")
        body.indent += 1
        dense("th", "gy", [K])
        dense("th", "gd", [K], deriv=True)
        body(f"gg = gy_{K} - lev",
             "same = (gg < 0) == (g_o < 0)",
             "lo = tl.where(same, th, lo)", "hi = tl.where(same, hi, th)",
             f"nth = th - {div('gg', f'gd_{K}')}",
             f"th = tl.where((nth >= lo) & (nth <= hi), nth, {c(0.5)} * (lo + hi))")
        body.indent -= 1
        body("tc = t_old + th * h")
        dense("th", "yc", R)
        body("cslot = ncross",
             "tl.store(CROSS_T + cslot.to(tl.int64) * NB + row, tc, mask=cr & (cslot < NCB))")
        for i in R:
            body(f"tl.store(CROSS + (cslot * {n} + {i}).to(tl.int64) * NB + row, yc_{i}, mask=cr & (cslot < NCB))")
        # return times (interval between successive crossings): Welford mean / M2, min, max
        body("prev = cr & (ncross > 0)",
             "dret = tc - tlast",
             "nint = tl.maximum(ncross, 1).to(DT)",
             "rdel = dret - rmean",
             f"rmean = tl.where(prev, rmean + {div('rdel', 'nint')}, rmean)",
             "rm2 = tl.where(prev, rm2 + rdel * (dret - rmean), rm2)",
             "rmin = tl.where(prev, tl.minimum(rmin, dret), rmin)",
             "rmax = tl.where(prev, tl.maximum(rmax, dret), rmax)",
             "tlast = tl.where(cr, tc, tlast)",
             "ncross += cr.to(tl.int32)")
        body.indent -= 1
    # final-window features at accepted points (running min/max, trapezoid time average)
    if spec.features:
        body("in_win = accept & (t >= ws)",
             "seg = tl.where(in_win, t - tl.maximum(t_old, ws), zero)",
             "wlen += seg")
        for i in R:
            body(f"wmin_{i} = tl.where(in_win, tl.minimum(wmin_{i}, u_{i}), wmin_{i})",
                 f"wmax_{i} = tl.where(in_win, tl.maximum(wmax_{i}, u_{i}), wmax_{i})",
                 f"wsum_{i} += seg * {c(0.5)} * (u_{i} + uo_{i})")
    if spec.save_every:
        body("slot = nacc // SAVE_EVERY - 1",
             "do_save = accept & (nacc % SAVE_EVERY == 0) & (slot < N_SAVE)",
             "tl.store(SAVE_T + row * N_SAVE + slot, t, mask=do_save)")
        for i in R:
            body(f"tl.store(SAVE + (row * N_SAVE + slot) * {n} + {i}, u_{i}, mask=do_save)")
    if lyap:  # Benettin: log growth of the twin's separation, then renormalise it to d0
        for i in R:
            body(f"v_{i} = tl.where(accept, vn_{i}, v_{i})")
            if tab.adaptive:
                body(f"fv_{i} = tl.where(accept, {fsal('kv', i)}, fv_{i})")
            body(f"sep_{i} = v_{i}" if spec.tangent else f"sep_{i} = v_{i} - u_{i}")
        body("dist = tl.sqrt(" + " + ".join(f"sep_{i} * sep_{i}" for i in R) + ")",
             "good = accept & ((dist - dist) == 0) & (dist > 0)",
             "count = good & (t_old >= ws)",
             "speed = tl.sqrt(" + " + ".join(f"k0_{i} * k0_{i}" for i in R) + ")",
             "speed0 = tl.where(count & (ltime == 0), speed, speed0)",
             "lsum += tl.where(count, tl.log(tl.where(good, dist / d0, zero + 1.0)), zero)",
             "ltime += tl.where(count, h, zero)",
             "renorm = tl.where(good, d0 / tl.where(good, dist, zero + 1.0), zero + 1.0)")
        for i in R:
            if spec.tangent:  # J(u) v is linear in v: the FSAL stage rescales exactly
                body(f"v_{i} = tl.where(good, sep_{i} * renorm, v_{i})")
                if tab.adaptive:
                    body(f"fv_{i} = tl.where(good, fv_{i} * renorm, fv_{i})")
                continue
            body(f"v_{i} = tl.where(good, u_{i} + sep_{i} * renorm, v_{i})")
            if tab.adaptive:  # F is linear in the tiny separation: F(u + c s) = F(u) + c (F(u + s) - F(u))
                body(f"fv_{i} = tl.where(good, f_{i} + (fv_{i} - f_{i}) * renorm, fv_{i})")
    # blow-up: |u| past the bound (or non-finite); the crossing time is located after the loop by
    # linear interpolation of max|u| across the escaping step (kept: max|u| before it, and h).
    # An adaptive step size collapsing below hmin also counts.
    body(f"m_new = {amax('u')}",
         "escaped = accept & ~(m_new <= bound)",
         "mo_esc = tl.where(escaped, m_prev, mo_esc)",
         "h_esc = tl.where(escaped, h, h_esc)",
         "m_prev = m_new",
         "status = tl.where(escaped, 2, status)")
    if tab.adaptive:
        # below ~ulp(t) t stalls; written so that a nan step size (nan right-hand side) is stuck too
        body("stuck = reject & ~(h * fac >= hmin * tl.maximum(tl.abs(t), 1.0))",
             "tblow = tl.where(stuck, t_old, tblow)",
             "status = tl.where(stuck, 3, status)",
             "status = tl.where(accept & (status == 0) & (t >= t1 - teps), 1, status)",
             "h = tl.where(active, h * fac, h)")
        body("active = active & (status == 0) & (nacc + nrej < MAX_STEPS)")
    else:
        body("active = active & ~escaped & (nacc < NSTEPS)")
    body.indent -= 1
    body("n_act = tl.sum(active.to(tl.int32), axis=0)",
         "it += INNER")
    body.indent -= 1
    # ---- epilogue: blow-up crossing, status, write the lane's state back ------------------------
    if not tab.adaptive:
        body("status = tl.where((status == 0) & (nacc >= NSTEPS), 1, status)")
        if not track_t:
            body("t = tl.where(inb, t0 + nacc.to(DT) * dt, t)")
    frac = div("bound - mo_esc", f"{amax('u')} - mo_esc")
    body(f"frac = {frac}",
         f"frac = tl.where(frac == frac, tl.minimum(tl.maximum(frac, zero), {c(1.0)}), zero)",
         "tblow = tl.where((status_in == 0) & (status == 2), t - h_esc + frac * h_esc, tblow)")
    body("tl.store(T + row, t, mask=inb)", "tl.store(STATUS + row, status, mask=inb)",
         "tl.store(NACC + row, nacc, mask=inb)", "tl.store(NREJ + row, nrej, mask=inb)",
         "tl.store(TBLOW + row, tblow, mask=inb)", "tl.store(WLEN + row, wlen, mask=inb)")
    if tab.adaptive:
        body("tl.store(H + row, h, mask=inb)", "tl.store(EPREV + row, eprev, mask=inb)")
    if lyap:
        body("tl.store(LSUM + row, lsum, mask=inb)", "tl.store(LTIME + row, ltime, mask=inb)",
             "tl.store(SPEED0 + row, speed0, mask=inb)")
    if spec.interp:
        body("tl.store(IE + row, ie, mask=inb)")
    if spec.section:
        body("tl.store(NCROSS + row, ncross, mask=inb)")
        for j, name in enumerate(("tlast", "rmean", "rm2", "rmin", "rmax")):
            body(f"tl.store(RET + row * 5 + {j}, {name}, mask=inb)")
    for name in vecs:
        for i in R:
            body(f"tl.store({bufs[name]} + row * {n} + {i}, {name}_{i}, mask=inb)")

    const_lines = [f"    {name} = tl.full([BLOCK], {v!r}, DT)" for v, name in consts.items()]
    const_lines += [f"    {name} = tl.load(S + 2) * {v!r}" for v, name in hc.items()]  # dt * coefficient
    sig = ("IDX, NW, S, T, H, EPREV, STATUS, NACC, NREJ, TBLOW, WLEN, U, F, V, FV, P, WMIN, WMAX, WSUM, "
           "LSUM, LTIME, SPEED0, SAVE, SAVE_T, TEVAL, IE, YS, NCROSS, RET, CROSS, CROSS_T, "
           "CHUNK, MAX_STEPS, NSTEPS, SAVE_EVERY, N_SAVE, TSI, TSR, NT, NCB, NB, "
           "BLOCK: tl.constexpr, DT: tl.constexpr, INNER: tl.constexpr")
    header = [f'"""Generated by kernels/ode/codegen.py (v{CODEGEN_VERSION}) for model {sysm.name!r}: '
              f'{spec.solver}, {spec.dtype}, lyapunov={lyap}, save_every={spec.save_every}, '
              f'features={spec.features}, interp={spec.interp}, section={spec.section}.',
              "",
              f"states {list(sysm.states)}; per-lane params {list(sysm.params)}",
              "".join(f"\nd{s}/dt = {e}" for s, e in zip(sysm.states, sysm.equations)),
              '"""',
              "import triton", "import triton.language as tl", _HELPERS, "",
              '@triton.jit(do_not_specialize=["NW", "CHUNK", "MAX_STEPS", "NSTEPS", "SAVE_EVERY", "N_SAVE", '
              '"TSI", "TSR", "NT", "NCB", "NB"])',
              f"def step_kernel({sig}):"]
    src = "\n".join(header + const_lines + body.lines) + "\n"
    if tab.adaptive:
        src += "\n\n" + _init_source(spec)
    return src


def _init_source(spec: KernelSpec) -> str:
    """Kernel computing F(u0) (the FSAL stage) and the Hairer–Wanner starting step per lane."""
    sysm = spec.system
    n, m = len(sysm.states), len(sysm.params)
    R = range(n)
    consts: dict[float, str] = {}
    body = _Src()
    P = [f"p_{j}" for j in range(m)]
    body("lane = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)",
         "inb = lane < NW",
         "row = tl.load(IDX + lane, mask=inb, other=0).to(tl.int64)",
         "t0 = tl.load(S + 0)", "t1 = tl.load(S + 1)", "rtol = tl.load(S + 3)", "atol = tl.load(S + 4)",
         "zero = tl.zeros([BLOCK], DT)")
    for j in range(m):
        body(f"p_{j} = tl.load(P + row * {m} + {j}, mask=inb, other=0.0)")
    for i in R:
        body(f"u_{i} = tl.load(U + row * {n} + {i}, mask=inb, other=0.0)")
    if spec.lyapunov:
        for i in R:
            body(f"v_{i} = tl.load(V + row * {n} + {i}, mask=inb, other=0.0)")
    body(*rhs_lines(sysm, [f"u_{i}" for i in R], P, [f"f_{i}" for i in R], "_a", consts,
                    tangent=([f"v_{i}" for i in R], [f"fv_{i}" for i in R]) if spec.tangent else None))
    for i in R:
        body(f"tl.store(F + row * {n} + {i}, f_{i}, mask=inb)")
    if spec.lyapunov:
        if not spec.tangent:
            body(*rhs_lines(sysm, [f"v_{i}" for i in R], P, [f"fv_{i}" for i in R], "_b", consts))
        for i in R:
            body(f"tl.store(FV + row * {n} + {i}, fv_{i}, mask=inb)")

    def rms(terms):
        return "tl.sqrt((" + " + ".join(f"({x}) * ({x})" for x in terms) + f") * {1.0 / n!r})"

    body(*[f"sc_{i} = atol + tl.abs(u_{i}) * rtol" for i in R],
         "dd0 = " + rms([f"u_{i} / sc_{i}" for i in R]),
         "dd1 = " + rms([f"f_{i} / sc_{i}" for i in R]),
         "h0 = tl.where((dd0 < 1e-5) | (dd1 < 1e-5), zero + 1e-6, 0.01 * dd0 / tl.where(dd1 > 0, dd1, zero + 1.0))",
         "h0 = tl.minimum(h0, t1 - t0)",
         *[f"y_{i} = u_{i} + h0 * f_{i}" for i in R])
    body(*rhs_lines(sysm, [f"y_{i}" for i in R], P, [f"g_{i}" for i in R], "_c", consts))
    body("dd2 = " + rms([f"(g_{i} - f_{i}) / sc_{i}" for i in R]) + " / h0",
         "big = tl.maximum(dd1, dd2)",
         f"h1 = tl.where(big <= 1e-15, tl.maximum(zero + 1e-6, h0 * 1e-3), "
         f"tl.exp({-1.0 / (TABLEAUS[spec.solver].error_order + 1)!r} * tl.log(tl.where(big > 0, big, zero + 1.0) / 0.01)))",
         "h = tl.minimum(tl.minimum(100.0 * h0, h1), t1 - t0)",
         "tl.store(H + row, h, mask=inb)")
    const_lines = [f"    {name} = tl.full([BLOCK], {v!r}, DT)" for v, name in consts.items()]
    return "\n".join(['@triton.jit(do_not_specialize=["NW"])', "def init_kernel(IDX, NW, S, U, F, V, FV, P, H, BLOCK: tl.constexpr, "
                      "DT: tl.constexpr):"] + const_lines + body.lines) + "\n"


_LOADED: dict[tuple[str, bool], ModuleType] = {}


def load_kernels(spec: KernelSpec, *, interpret: bool = False) -> ModuleType:
    """Generate (once) and import the module holding `step_kernel` (and `init_kernel`).

    interpret=True sets TRITON_INTERPRET=1 for the process (Triton reads it when @triton.jit
    decorates and again at launch), so the same kernels run on the CPU with numpy (CI). Set it
    before any Triton kernel is launched; one process runs either interpreted or compiled kernels.
    """
    key = (spec.key, interpret)
    if key in _LOADED:
        return _LOADED[key]
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    path = CACHE_DIR / f"{spec.key}.py"
    if not path.exists():
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(kernel_source(spec))
        os.replace(tmp, path)  # atomic: concurrent workers never import a half-written file
    name = f"attractor_ode_{spec.key}" + ("_interp" if interpret else "")
    if interpret:  # process-wide: Triton also reads it lazily at launch (its gluon import asserts it)
        os.environ["TRITON_INTERPRET"] = "1"
    mod_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules[name] = module
    mod_spec.loader.exec_module(module)
    _LOADED[key] = module
    return module
