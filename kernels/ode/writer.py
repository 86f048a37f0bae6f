"""The generated step kernel, one method per concern: lanes, controller, t_eval output, Poincaré sections,
final-window features, save-every, Lyapunov, blow-up; the stages themselves are in kernels/ode/steps.py.

One lane integrates one trajectory. Each launch reads the lane's state through its row index,
takes up to CHUNK trial steps (testing "anyone left?" every INNER steps) and writes the state back.
The argument list comes from the buffer table (kernels/ode/buffers.py).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from kernels.ode.buffers import (
    BY_NAME,
    SCALAR_INDEX,
    SCALARS,
    init_signature,
    load_scalar,
    step_decorator,
    step_signature,
)
from kernels.ode.steps import Lines, StepWriter
from kernels.ode.symbolic import rhs_lines
from kernels.ode.tableaus import TABLEAUS

if TYPE_CHECKING:
    from kernels.ode.codegen import KernelSpec

# controller constants (Hairer–Wanner PI controller for a 5(4) pair; scipy's clamps)
SAFETY, MIN_FACTOR, MAX_FACTOR = 0.9, 0.2, 10.0
PI_BETA1, PI_BETA2 = 0.7 / 5, 0.4 / 5    # for q = 4; scaled by 5 / (q + 1) for other error orders
NEWTON_ITERS = 6   # safeguarded Newton iterations locating a section crossing on the interpolant
RETURN_STATS = ("tlast", "rmean", "rm2", "rmin", "rmax")   # the columns of RET

HELPERS = '''
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


def _literal(v: float) -> str:
    """A float as kernel source: `float('inf')` where repr would give a bare name (`inf`, `nan`), e.g. a
    folded product of huge fixed parameters (gamma = 1e308); the lanes then stall as blow-ups."""
    return repr(v) if math.isfinite(v) else f"float({str(v)!r})"


def _load(var: str, other: str, buf: str | None = None) -> str:
    """var = this lane's element of a [B] buffer (buf: default var)."""
    return f"{var} = tl.load({BY_NAME[buf or var].arg} + row, mask=inb, other={other})"


def _store(var: str, buf: str | None = None) -> str:
    """This lane's element of a [B] buffer = var."""
    return f"tl.store({BY_NAME[buf or var].arg} + row, {var}, mask=inb)"


class KernelWriter(StepWriter):
    """Writes the source of one generated module: `step_kernel` (and `init_kernel` for adaptive methods)."""

    def __init__(self, spec: KernelSpec, version: str):
        super().__init__(spec)
        self.version = version
        self.lyap = spec.lyapunov
        # RK4 without any of these sets t once after the loop
        self.track_t = bool(self.tab.adaptive or spec.features or spec.save_every or self.lyap or spec.interp
                            or spec.section)

    def source(self) -> str:
        """The module's Python/Triton source."""
        self.prologue()
        self.step()
        self.epilogue()
        src = "\n".join(self.header() + self.const_lines() + self.body.lines) + "\n"
        if self.tab.adaptive:
            src += "\n\n" + init_source(self.spec)
        return src

    def lane_vectors(self) -> list[str]:
        """The [B, n] buffers held in registers as name_0 .. name_{n-1} between load and store."""
        vecs = ["u"] + (["wmin", "wmax", "wsum"] if self.spec.features else []) + (["f"] if self.tab.adaptive else [])
        return vecs + ((["v"] + (["fv"] if self.tab.adaptive else [])) if self.lyap else [])

    # ---- lanes ---------------------------------------------------------------------------------------
    def prologue(self) -> None:
        """Lane ids, scalars, every buffer's element for this lane, then the chunk's loop header."""
        body, spec, n, m = self.body, self.spec, self.n, self.m
        body("lane = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)",
             "inb = lane < NW",
             "row = tl.load(IDX + lane, mask=inb, other=0).to(tl.int64)",
             *(load_scalar(s.name) for s in SCALARS if s.feature is None),
             "zero = tl.zeros([BLOCK], DT)",
             _load("t", "0.0"), _load("status", "1"), _load("nacc", "0"), _load("nrej", "0"), _load("tblow", "0.0"),
             _load("wlen", "0.0"))
        if self.tab.adaptive:
            body(_load("h", "0.0"), _load("eprev", "1.0"))
        else:
            body("h = zero + dt")
        for j in range(m):
            body(f"p_{j} = tl.load(P + row * {m} + {j}, mask=inb, other=0.0)")
        for name in self.lane_vectors():
            for i in self.R:
                body(f"{name}_{i} = tl.load({BY_NAME[name].arg} + row * {n} + {i}, mask=inb, other=0.0)")
        if self.lyap:
            body(_load("lsum", "0.0"), _load("ltime", "0.0"), _load("speed0", "0.0"))
        if spec.interp:
            body(_load("ie", "0"), "erow = row * TSR")
        if spec.section:
            body(*(load_scalar(s.name) for s in SCALARS if s.feature == "section"),
                 _load("ncross", "0"),
                 *[f"{name} = tl.load(RET + row * 5 + {j}, mask=inb, other=0.0)" for j, name in enumerate(RETURN_STATS)])
        self.blowup_start()
        body("active = inb & (status == 0) & (nacc + nrej < MAX_STEPS)",
             "n_act = tl.sum(active.to(tl.int32), axis=0)",
             "it = 0",
             "while (it < CHUNK) & (n_act > 0):",
             # the block-wide "anyone left?" reduction costs a barrier: test it every INNER steps
             "    for _k in range(INNER):")
        body.indent += 2

    def step(self) -> None:
        """One trial step of every active lane, then each feature's update at the accepted ones."""
        spec = self.spec
        self.method_stages()
        self.controller()
        self.advance()
        if spec.interp:
            self.dense_output()
        if spec.section:
            self.sections()
        if spec.features:
            self.window_features()
        if spec.save_every:
            self.save_every()
        if self.lyap:
            self.lyapunov()
        self.blowup()
        self.finish_step()
        self.body.indent -= 1
        self.body("n_act = tl.sum(active.to(tl.int32), axis=0)",
                  "it += INNER")
        self.body.indent -= 1

    def epilogue(self) -> None:
        """After the chunk: fixed-step status, the blow-up time, every buffer's element written back."""
        body, n = self.body, self.n
        if not self.tab.adaptive:
            body("status = tl.where((status == 0) & (nacc >= NSTEPS), 1, status)")
            if not self.track_t:
                body("t = tl.where(inb, t0 + nacc.to(DT) * dt, t)")
        self.blowup_time()
        body(_store("t"), _store("status"), _store("nacc"), _store("nrej"), _store("tblow"), _store("wlen"))
        if self.tab.adaptive:
            body(_store("h"), _store("eprev"))
        if self.lyap:
            body(_store("lsum"), _store("ltime"), _store("speed0"))
        if self.spec.interp:
            body(_store("ie"))
        if self.spec.section:
            body(_store("ncross"))
            for j, name in enumerate(RETURN_STATS):
                body(f"tl.store(RET + row * 5 + {j}, {name}, mask=inb)")
        for name in self.lane_vectors():
            for i in self.R:
                body(f"tl.store({BY_NAME[name].arg} + row * {n} + {i}, {name}_{i}, mask=inb)")

    # ---- the step ------------------------------------------------------------------------------------
    def method_stages(self) -> None:
        """Stage 0 (the FSAL stage of adaptive pairs), then the method's stages for u (and v)."""
        body, spec, R, lyap = self.body, self.spec, self.R, self.lyap
        if self.tab.adaptive:
            body("h = tl.where(active, tl.minimum(h, t1 - t), h)")
            for i in R:
                body(f"k0_{i} = f_{i}")
            if lyap:
                for i in R:
                    body(f"kv0_{i} = fv_{i}")
        elif spec.tangent:
            body(*rhs_lines(self.sysm, [f"u_{i}" for i in R], self.P, [f"k0_{i}" for i in R], "_u0_", self.consts,
                            self.fast, tangent=([f"v_{i}" for i in R], [f"kv0_{i}" for i in R])))
        else:
            self.rhs([f"u_{i}" for i in R], [f"k0_{i}" for i in R], "u0")
            if lyap:
                self.rhs([f"v_{i}" for i in R], [f"kv0_{i}" for i in R], "v0")
        if self.rosen:
            self.rosen_stages("u", "k", "u", "k0")
            if lyap:
                self.rosen_stages("v", "kv", "v", "kv0")
        elif spec.tangent:
            self.tangent_stages()
        else:
            self.stages("u", "k", "u")
            if lyap:
                self.stages("v", "kv", "v")
        if (spec.interp or spec.section) and self.tab.dense is None:
            self.rhs([f"un_{i}" for i in R], [f"kH_{i}" for i in R], "uH")  # F(u_new) for the Hermite interpolant

    def controller(self) -> None:
        """Accept/reject on the error norm (with the perturbation's), and the PI step-size factor."""
        body, c, div, R, n = self.body, self.c, self.div, self.R, self.n
        if not self.tab.adaptive:
            body("accept = active")
            return
        terms = [div(f"ue_{i}", f"atol + rtol * tl.maximum(tl.abs(u_{i}), tl.abs(un_{i}))") for i in R]
        qs = 5.0 / (self.tab.error_order + 1)  # PI gains scale with the order of the error estimate
        body("en = tl.sqrt((" + " + ".join(f"{x} * {x}" for x in terms) + f") * {c(1 / n)})")
        if self.spec.tangent:  # the perturbation (size d0) resolved to rtol too, as the torch twin's separation
            sep = [div(f"ve_{i}", "rtol * d0") for i in R]
        elif self.lyap:  # the twin's separation (size d0, below atol) must be resolved to rtol too, down to the
            # rounding floor of a difference of two states (~eps |u|): below it FP32 would never accept
            sep = [div(f"ve_{i} - ue_{i}", f"rtol * d0 + sep_floor * tl.abs(u_{i})") for i in R]
        if self.lyap:  # a non-finite perturbation error rejects the step (tl.maximum may drop a nan)
            body("en_v = tl.sqrt((" + " + ".join(f"{x} * {x}" for x in sep) + f") * {c(1 / n)})",
                 "en = tl.where(en_v > en, en_v, tl.where((en_v - en_v) == 0, en, en_v))")
        body("finite = (en - en) == 0",  # false for nan and inf
             f"accept = active & finite & (en <= {c(1.0)})",
             "reject = active & ~accept",
             "en_s = tl.where(finite & (en > 0), en, zero + 1e-30)",
             # PI controller on accepts (err^-b1 * err_prev^b2), plain I controller after a reject
             f"fac_a = {c(SAFETY)} * tl.exp({c(-PI_BETA1 * qs)} * tl.log(en_s) + {c(PI_BETA2 * qs)} * tl.log(eprev))",
             f"fac_r = {c(SAFETY)} * tl.exp({c(-1.0 / (self.tab.error_order + 1))} * tl.log(en_s))",
             f"fac = tl.where(accept, tl.minimum(tl.maximum(fac_a, {c(MIN_FACTOR)}), {c(MAX_FACTOR)}),"
             f" tl.minimum(tl.maximum(fac_r, {c(MIN_FACTOR)}), {c(1.0)}))",
             f"fac = tl.where(finite, fac, {c(MIN_FACTOR)})",
             f"eprev = tl.where(accept, tl.maximum(en, {c(1e-4)}), eprev)")

    def advance(self) -> None:
        """Accepted lanes move to the new state (t_old, uo keep the step's start)."""
        body, adaptive = self.body, self.tab.adaptive
        if self.track_t:
            body("t_old = t", "t = tl.where(accept, t + h, t)" if adaptive else
                 "t = tl.where(accept, t0 + (nacc + 1).to(DT) * dt, t)")
        for i in self.R:
            body(f"uo_{i} = u_{i}", f"u_{i} = tl.where(accept, un_{i}, u_{i})")
            if adaptive:
                body(f"f_{i} = tl.where(accept, {self.fsal('k', i)}, f_{i})")
        body("nacc += accept.to(tl.int32)")
        if adaptive:
            body("nrej += reject.to(tl.int32)")

    def dense_output(self) -> None:
        """The interpolant at every requested time this step covered (the last step: all left)."""
        body, n = self.body, self.n
        body("fin = accept & (t >= t1 - teps)" if self.tab.adaptive else "fin = accept & (nacc >= NSTEPS)",
             "te = tl.load(TEVAL + erow + ie * TSI, mask=accept & (ie < NT), other=0.0)",
             "pend = accept & (ie < NT) & ((te <= t) | fin)",
             "npend = tl.sum(pend.to(tl.int32), axis=0)",
             "while npend > 0:")
        body.indent += 1
        body(f"th = tl.minimum(tl.maximum({self.div('te - t_old', 'h')}, zero), {self.c(1.0)})")
        self.dense("th", "yi", self.R)
        for i in self.R:
            body(f"tl.store(YS + (ie * {n} + {i}).to(tl.int64) * NB + row, yi_{i}, mask=pend)")  # [T, n, B]: coalesced
        body("ie += pend.to(tl.int32)",
             "te = tl.load(TEVAL + erow + ie * TSI, mask=pend & (ie < NT), other=0.0)",
             "pend = pend & (ie < NT) & ((te <= t) | fin)",
             "npend = tl.sum(pend.to(tl.int32), axis=0)")
        body.indent -= 1

    def sections(self) -> None:
        """Poincaré section u_K = level crossed in the given direction during this step: the crossing
        located on the interpolant, its state stored, the return-time statistics updated."""
        body, c, div, n = self.body, self.c, self.div, self.n
        K, direction = self.spec.section
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
        self.dense("th", "gy", [K])
        self.dense("th", "gd", [K], deriv=True)
        body(f"gg = gy_{K} - lev",
             "same = (gg < 0) == (g_o < 0)",
             "lo = tl.where(same, th, lo)", "hi = tl.where(same, hi, th)",
             f"nth = th - {div('gg', f'gd_{K}')}",
             f"th = tl.where((nth >= lo) & (nth <= hi), nth, {c(0.5)} * (lo + hi))")
        body.indent -= 1
        body("tc = t_old + th * h")
        self.dense("th", "yc", self.R)
        body("cslot = ncross",
             "tl.store(CROSS_T + cslot.to(tl.int64) * NB + row, tc, mask=cr & (cslot < NCB))")
        for i in self.R:
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

    def window_features(self) -> None:
        """Final-window features at accepted points: running min/max, trapezoid time average."""
        body = self.body
        body("in_win = accept & (t >= ws)",
             "seg = tl.where(in_win, t - tl.maximum(t_old, ws), zero)",
             "wlen += seg")
        for i in self.R:
            body(f"wmin_{i} = tl.where(in_win, tl.minimum(wmin_{i}, u_{i}), wmin_{i})",
                 f"wmax_{i} = tl.where(in_win, tl.maximum(wmax_{i}, u_{i}), wmax_{i})",
                 f"wsum_{i} += seg * {self.c(0.5)} * (u_{i} + uo_{i})")

    def save_every(self) -> None:
        """The state (and time) after every SAVE_EVERY-th accepted step, N_SAVE slots per row."""
        self.body("slot = nacc // SAVE_EVERY - 1",
                  "do_save = accept & (nacc % SAVE_EVERY == 0) & (slot < N_SAVE)",
                  "tl.store(SAVE_T + row * N_SAVE + slot, t, mask=do_save)")
        for i in self.R:
            self.body(f"tl.store(SAVE + (row * N_SAVE + slot) * {self.n} + {i}, u_{i}, mask=do_save)")

    def lyapunov(self) -> None:
        """Benettin: log growth of the perturbation (tangent, or twin separation), renormalised to d0."""
        body, R, adaptive, tangent = self.body, self.R, self.tab.adaptive, self.spec.tangent
        for i in R:
            body(f"v_{i} = tl.where(accept, vn_{i}, v_{i})")
            if adaptive:
                body(f"fv_{i} = tl.where(accept, {self.fsal('kv', i)}, fv_{i})")
            body(f"sep_{i} = v_{i}" if tangent else f"sep_{i} = v_{i} - u_{i}")
        body("dist = tl.sqrt(" + " + ".join(f"sep_{i} * sep_{i}" for i in R) + ")",
             "good = accept & ((dist - dist) == 0) & (dist > 0)",
             "count = good & (t_old >= ws)",
             "speed = tl.sqrt(" + " + ".join(f"k0_{i} * k0_{i}" for i in R) + ")",
             "speed0 = tl.where(count & (ltime == 0), speed, speed0)",
             "lsum += tl.where(count, tl.log(tl.where(good, dist / d0, zero + 1.0)), zero)",
             "ltime += tl.where(count, h, zero)",
             "renorm = tl.where(good, d0 / tl.where(good, dist, zero + 1.0), zero + 1.0)")
        for i in R:
            if tangent:  # J(u) v is linear in v: the FSAL stage rescales exactly
                body(f"v_{i} = tl.where(good, sep_{i} * renorm, v_{i})")
                if adaptive:
                    body(f"fv_{i} = tl.where(good, fv_{i} * renorm, fv_{i})")
                continue
            body(f"v_{i} = tl.where(good, u_{i} + sep_{i} * renorm, v_{i})")
            if adaptive:  # F is linear in the tiny separation: F(u + c s) = F(u) + c (F(u + s) - F(u))
                body(f"fv_{i} = tl.where(good, f_{i} + (fv_{i} - f_{i}) * renorm, fv_{i})")

    # ---- blow-up -------------------------------------------------------------------------------------
    # |u| past the bound (or non-finite); the crossing time is located after the loop by linear
    # interpolation of max|u| across the escaping step (kept: max|u| before it, and h). An adaptive
    # step size collapsing below hmin also counts.
    def blowup_start(self) -> None:
        """max|u| before the first step; the escaping step's start max|u| and size, kept for blowup_time."""
        self.body(f"m_prev = {self.amax('u')}", "mo_esc = zero", "h_esc = zero", "status_in = status")

    def blowup(self) -> None:
        """Escape past the bound at an accepted step; (adaptive) a step size stuck below hmin."""
        self.body(f"m_new = {self.amax('u')}",
                  "escaped = accept & ~(m_new <= bound)",
                  "mo_esc = tl.where(escaped, m_prev, mo_esc)",
                  "h_esc = tl.where(escaped, h, h_esc)",
                  "m_prev = m_new",
                  "status = tl.where(escaped, 2, status)")
        if self.tab.adaptive:
            # below ~ulp(t) t stalls; written so that a nan step size (nan right-hand side) is stuck too
            self.body("stuck = reject & ~(h * fac >= hmin * tl.maximum(tl.abs(t), 1.0))",
                      "tblow = tl.where(stuck, t_old, tblow)",
                      "status = tl.where(stuck, 3, status)")

    def blowup_time(self) -> None:
        """Where max|u| crossed the bound within the escaping step (linear in max|u|)."""
        frac = self.div("bound - mo_esc", f"{self.amax('u')} - mo_esc")
        self.body(f"frac = {frac}",
                  f"frac = tl.where(frac == frac, tl.minimum(tl.maximum(frac, zero), {self.c(1.0)}), zero)",
                  "tblow = tl.where((status_in == 0) & (status == 2), t - h_esc + frac * h_esc, tblow)")

    def finish_step(self) -> None:
        """Done at t1; the next step size; which lanes go on."""
        if self.tab.adaptive:
            self.body("status = tl.where(accept & (status == 0) & (t >= t1 - teps), 1, status)",
                      "h = tl.where(active, h * fac, h)")
            self.body("active = active & (status == 0) & (nacc + nrej < MAX_STEPS)")
        else:
            self.body("active = active & ~escaped & (nacc < NSTEPS)")

    # ---- assembly ------------------------------------------------------------------------------------
    def const_lines(self) -> list[str]:
        """The named constants (and fixed-step dt * coefficient), defined once at the kernel's top."""
        lines = [f"    {name} = tl.full([BLOCK], {_literal(v)}, DT)" for v, name in self.consts.items()]
        return lines + [f"    {name} = tl.load(S + {SCALAR_INDEX['dt']}) * {v!r}" for v, name in self.hc.items()]

    def header(self) -> list[str]:
        """Module docstring, imports, helpers and the step kernel's def line."""
        spec, sysm = self.spec, self.sysm
        return [f'"""Generated by kernels/ode/codegen.py (v{self.version}) for model {sysm.name!r}: '
                f'{spec.solver}, {spec.dtype}, lyapunov={spec.lyapunov}, save_every={spec.save_every}, '
                f'features={spec.features}, interp={spec.interp}, section={spec.section}.',
                "",
                f"states {list(sysm.states)}; per-lane params {list(sysm.params)}",
                "".join(f"\nd{s}/dt = {e}" for s, e in zip(sysm.states, sysm.equations)),
                '"""',
                "import triton", "import triton.language as tl", HELPERS, "",
                step_decorator(),
                f"def step_kernel({step_signature()}):"]



def init_source(spec: KernelSpec) -> str:
    """Kernel computing F(u0) (the FSAL stage) and the Hairer–Wanner starting step per lane."""
    sysm = spec.system
    n, m = len(sysm.states), len(sysm.params)
    R = range(n)
    consts: dict[float, str] = {}
    body = Lines()
    P = [f"p_{j}" for j in range(m)]
    body("lane = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)",
         "inb = lane < NW",
         "row = tl.load(IDX + lane, mask=inb, other=0).to(tl.int64)",
         load_scalar("t0"), load_scalar("t1"), load_scalar("rtol"), load_scalar("atol"),
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
    const_lines = [f"    {name} = tl.full([BLOCK], {_literal(v)}, DT)" for v, name in consts.items()]
    return "\n".join(['@triton.jit(do_not_specialize=["NW"])', f"def init_kernel({init_signature()}):"]
                     + const_lines + body.lines) + "\n"
