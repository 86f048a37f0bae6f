"""The integration-method half of a generated step kernel: stages, tangent stages, Rosenbrock, interpolant.

`StepWriter` holds what every part of one kernel's source shares (the emitted lines, the named
constants, the spec) and writes the lines of one trial step for each kind of method; the features
built on top of a step (controller, sections, window, Lyapunov, ...) are in kernels/ode/writer.py.
All arithmetic is unrolled over the state components: variable `x_i` is component i of vector x.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from kernels.ode.symbolic import rhs_lines
from kernels.ode.tableaus import ROS23_D, ROS23_E32, TABLEAUS, Tableau

if TYPE_CHECKING:
    from kernels.ode.codegen import KernelSpec


class Lines:
    """Indented source lines (the kernel body starts one level in)."""

    def __init__(self):
        self.lines: list[str] = []
        self.indent = 1

    def __call__(self, *lines: str) -> None:
        self.lines.extend("    " * self.indent + ln for ln in lines)


def lincomb(coeffs, terms: list[str], c) -> str:
    """sum(c(a) * t) over the nonzero coefficients a (c names the constant)."""
    parts = [f"{c(a)} * {t}" for a, t in zip(coeffs, terms) if a != 0.0]
    return " + ".join(parts) if parts else c(0.0)


class StepWriter:
    """Source lines of one trial step of the spec's method, sharing one constant table."""

    def __init__(self, spec: KernelSpec):
        self.spec = spec
        self.tab: Tableau = TABLEAUS[spec.solver]
        self.sysm = spec.system
        self.n, self.m = len(self.sysm.states), len(self.sysm.params)
        self.S = self.tab.stages
        self.R = range(self.n)
        self.P = [f"p_{j}" for j in range(self.m)]
        self.fast = spec.dtype == "float32"
        self.rosen = self.tab.kind == "rosenbrock"
        self.consts: dict[float, str] = {}   # value -> name, defined as tl.full([BLOCK], value, DT)
        self.hc: dict[float, str] = {}       # fixed step: coefficient -> name of dt * coefficient
        self.body = Lines()

    # ---- emission helpers ------------------------------------------------------------------------
    def c(self, v: float) -> str:
        """The named constant holding v (in the kernel's dtype, so FP64 keeps every coefficient)."""
        v = float(v)
        if v not in self.consts:
            self.consts[v] = f"c{len(self.consts)}"
        return self.consts[v]

    def div(self, a: str, b: str) -> str:
        """a / b: FP32 uses the fast ~2-ulp division (IEEE div.rn costs ~10x more), FP64 stays exact."""
        return f"tl.fdiv({a}, {b})" if self.fast else f"(({a}) / ({b}))"

    def rhs(self, inp: list[str], out: list[str], tag: str) -> None:
        """out = F(inp), temporaries prefixed _{tag}_."""
        self.body(*rhs_lines(self.sysm, inp, self.P, out, f"_{tag}_", self.consts, self.fast))

    def hcoef(self, v: float) -> str:
        """Fixed step: h * coefficient, computed once before the loop."""
        if v not in self.hc:
            self.hc[v] = f"hc{len(self.hc)}"
        return self.hc[v]

    def combo(self, x: str, coeffs, terms: list[str]) -> str:
        """x + h * sum(coeffs * terms)."""
        if self.tab.adaptive:
            return f"{x} + h * ({lincomb(coeffs, terms, self.c)})"
        parts = [f"{self.hcoef(a)} * {t}" for a, t in zip(coeffs, terms) if a != 0.0]
        return f"{x} + (" + " + ".join(parts) + ")"

    def amax(self, name: str) -> str:
        """max_i |name_i|."""
        out = f"tl.abs({name}_0)"
        for i in range(1, self.n):
            out = f"tl.maximum({out}, tl.abs({name}_{i}))"
        return out

    def fsal(self, k: str, i: int) -> str:
        """The stage holding F(u_new), reused as the next step's F(u)."""
        return f"{k}F2_{i}" if self.rosen else f"{k}{self.S}_{i}"

    # ---- explicit Runge-Kutta ----------------------------------------------------------------------
    def stages(self, x: str, k: str, tag: str) -> None:
        """Stages 1..S-1 of a step from state x_i with stage-0 values k0_i already set."""
        body, tab, S, R = self.body, self.tab, self.S, self.R
        for s in range(1, S):
            for i in R:
                body(f"y{tag}_{i} = {self.combo(f'{x}_{i}', tab.a[s], [f'{k}{j}_{i}' for j in range(s)])}")
            self.rhs([f"y{tag}_{i}" for i in R], [f"{k}{s}_{i}" for i in R], f"{tag}{s}")
        for i in R:
            body(f"{x}n_{i} = {self.combo(f'{x}_{i}', tab.b, [f'{k}{j}_{i}' for j in range(S)])}")
        if tab.adaptive:
            self.rhs([f"{x}n_{i}" for i in R], [f"{k}{S}_{i}" for i in R], f"{tag}{S}")
            for i in R:
                body(f"{x}e_{i} = h * ({lincomb(tab.e, [f'{k}{j}_{i}' for j in range(S + 1)], self.c)})")

    def tangent_stages(self) -> None:
        """Stages of u and of the tangent v together: kv_s = J(y_s) (v + h sum a_sj kv_j), exact."""
        body, tab, S, R = self.body, self.tab, self.S, self.R
        for s in range(1, S):
            for i in R:
                body(f"yu_{i} = {self.combo(f'u_{i}', tab.a[s], [f'k{j}_{i}' for j in range(s)])}",
                     f"yv_{i} = {self.combo(f'v_{i}', tab.a[s], [f'kv{j}_{i}' for j in range(s)])}")
            body(*rhs_lines(self.sysm, [f"yu_{i}" for i in R], self.P, [f"k{s}_{i}" for i in R], f"_u{s}_",
                            self.consts, self.fast, tangent=([f"yv_{i}" for i in R], [f"kv{s}_{i}" for i in R])))
        for i in R:
            body(f"un_{i} = {self.combo(f'u_{i}', tab.b, [f'k{j}_{i}' for j in range(S)])}",
                 f"vn_{i} = {self.combo(f'v_{i}', tab.b, [f'kv{j}_{i}' for j in range(S)])}")
        if tab.adaptive:
            body(*rhs_lines(self.sysm, [f"un_{i}" for i in R], self.P, [f"k{S}_{i}" for i in R], f"_u{S}_",
                            self.consts, self.fast, tangent=([f"vn_{i}" for i in R], [f"kv{S}_{i}" for i in R])))
            for i in R:
                body(f"ue_{i} = h * ({lincomb(tab.e, [f'k{j}_{i}' for j in range(S + 1)], self.c)})",
                     f"ve_{i} = h * ({lincomb(tab.e, [f'kv{j}_{i}' for j in range(S + 1)], self.c)})")

    # ---- Rosenbrock23 ------------------------------------------------------------------------------
    def rosen_stages(self, x: str, k: str, tag: str, f0: str) -> None:
        """One Rosenbrock23 step from x_i (F(x) in f0_i): Jacobian, pivoted LU of W, three solves."""
        body, c, R = self.body, self.c, self.R
        W = self._lu(x, k, tag)
        self._solve(W, k, [f"{f0}_{i}" for i in R], f"{k}1")
        for i in R:
            body(f"y{tag}_{i} = {x}_{i} + {c(0.5)} * h * {k}1_{i}")
        self.rhs([f"y{tag}_{i}" for i in R], [f"{k}F1_{i}" for i in R], f"{tag}1")
        self._solve(W, k, [f"{k}F1_{i} - {k}1_{i}" for i in R], f"{k}2")
        for i in R:
            body(f"{k}2_{i} = {k}2_{i} + {k}1_{i}", f"{x}n_{i} = {x}_{i} + h * {k}2_{i}")
        self.rhs([f"{x}n_{i}" for i in R], [f"{k}F2_{i}" for i in R], f"{tag}2")
        self._solve(W, k, [f"{k}F2_{i} - {c(ROS23_E32)} * ({k}2_{i} - {k}F1_{i}) - {c(2.0)} * ({k}1_{i} - {f0}_{i})"
                           for i in R], f"{k}3")
        for i in R:
            body(f"{x}e_{i} = h * {c(1 / 6)} * ({k}1_{i} - {c(2.0)} * {k}2_{i} + {k}3_{i})")

    def _lu(self, x: str, k: str, tag: str) -> list[list[str]]:
        """W = I - d h J(x) factorised in place (unit-lower L below the diagonal, U with 1/pivot in kip)."""
        body, c, n, R = self.body, self.c, self.n, self.R
        W = [[f"{k}W{r}_{q}" for q in R] for r in R]
        body(*rhs_lines(self.sysm, [f"{x}_{i}" for i in R], self.P, [W[r][q] for r in R for q in R], f"_{tag}j_",
                        self.consts, self.fast, jac=True))
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
            body(f"{k}ip{q} = {self.div(c(1.0), W[q][q])}")
            for r in range(q + 1, n):
                body(f"{W[r][q]} = {W[r][q]} * {k}ip{q}")
                for cc in range(q + 1, n):
                    body(f"{W[r][cc]} = {W[r][cc]} - {W[r][q]} * {W[q][cc]}")
        return W

    def _solve(self, W: list[list[str]], k: str, rhs_terms: list[str], out: str) -> None:
        """out = W^-1 rhs_terms with the factorisation of `_lu`: row swaps, forward, back substitution."""
        body, n, R = self.body, self.n, self.R
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

    # ---- the method's interpolant ------------------------------------------------------------------
    def dense_terms(self) -> list[tuple[tuple[float, ...], str, bool]]:
        """u(t_old + theta h) = uo + sum over (poly(theta), vector, scaled by h) of poly * vector."""
        if self.tab.dense is None:  # RK4: cubic Hermite through (uo, k0 = F(uo)) and (un, kH = F(un))
            return [((0.0, 0.0, 3.0, -2.0), "(un_{i} - uo_{i})", False), ((0.0, 1.0, -2.0, 1.0), "k0_{i}", True),
                    ((0.0, 0.0, -1.0, 1.0), "kH_{i}", True)]
        vec = ["k1_{i}", "k2_{i}"] if self.rosen else [f"k{j}_{{i}}" for j in range(self.S + 1)]
        return [(tuple(row), v, True) for row, v in zip(self.tab.dense, vec)]

    def horner(self, coeffs, th: str) -> str:
        """The polynomial (ascending coefficients) at th, in Horner form."""
        coeffs = list(coeffs)
        while len(coeffs) > 1 and coeffs[-1] == 0.0:
            coeffs.pop()
        out = self.c(coeffs[-1])
        for a in reversed(coeffs[:-1]):
            out = f"{th} * ({out})" if a == 0.0 else f"{self.c(a)} + {th} * ({out})"
        return out

    def dense(self, th: str, out: str, comps, deriv: bool = False) -> None:
        """out_i = the interpolant (deriv: its theta-derivative) at theta `th` for components `comps`."""
        terms = self.dense_terms()
        for j, (poly, _, _) in enumerate(terms):
            if deriv:
                poly = tuple(m * a for m, a in enumerate(poly))[1:] or (0.0,)
            self.body(f"{out}w{j} = {self.horner(poly, th)}")
        for i in comps:
            hs = [f"{out}w{j} * {v.format(i=i)}" for j, (_, v, sc) in enumerate(terms) if sc]
            plain = [f"{out}w{j} * {v.format(i=i)}" for j, (_, v, sc) in enumerate(terms) if not sc]
            expr = "h * (" + " + ".join(hs) + ")" + "".join(f" + {p}" for p in plain)
            self.body(f"{out}_{i} = " + (expr if deriv else f"uo_{i} + {expr}"))
