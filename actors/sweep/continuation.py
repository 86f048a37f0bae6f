"""Pseudo-arclength continuation of equilibria in one parameter, with fold, branch-point and Hopf detection.

Equilibria X = (u, lam) of F(u; lam) = 0 form curves; following them by arclength instead of by
lam walks around folds, where lam turns back (Keller 1977). Each step: tangent predictor
X + h tau, Newton corrector on [F(Y) = 0, tau . (Y - X) = h] with the model's symbolic Jacobian
[F_u | F_lam], then the new tangent from [F_X; tau^T] tau' = e_{n+1} (which keeps the orientation
through folds). The step grows after easy corrections and halves after failed or sharply turning ones.

Test functions, evaluated at every point; a sign change between two points brackets a bifurcation:
- fold (limit point): the tangent's parameter component tau_lam and det F_u both change sign;
- branch point: only one of them does: det F_u along a branch crossed by another (Lorenz's origin
  at rho = 1), tau_lam along the symmetric branch of a pitchfork (Lorenz's C+ -> C- at rho = 1);
- Hopf: prod_{i<j} (mu_i + mu_j) over the eigenvalues mu of F_u (the determinant of the bialternate
  product 2 F_u (.) I). A complex pair crossing the imaginary axis zeroes it; so does a real pair
  mu, -mu (a neutral saddle), which is rejected after location by checking for an imaginary pair.
Each bracketed point is located by Brent's method (secant / inverse quadratic / bisection, scipy)
on the arclength s in (0, h), every trial point Newton-corrected onto the branch, to |ds| <= 1e-12.
`write_continuation` writes a spec's branches, special points, figure and summary (jobs.continuation).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import scipy.linalg
import scipy.optimize
from pydantic import Field, model_validator

from actors.common.config import Strict
from actors.common.errors import InputError
from actors.common.storage import atomic_write_json, atomic_write_parquet
from actors.sweep.jacobian import derivatives, param_index
from actors.sweep.models import ModelRef, model_label, resolve_model

BranchDirection = Literal[-1, 1]   # initial sign of d(param)/ds along a branch


class ContinuationSettings(Strict):
    """Step control and tolerances of the continuation."""

    step: float = Field(0.05, gt=0, le=10)          # first arclength step
    step_min: float = Field(1e-6, gt=0, le=1)
    step_max: float = Field(0.25, gt=0, le=100)
    max_points: int = Field(2000, gt=1, le=1_000_000)
    newton_tol: float = Field(1e-11, gt=0, le=1e-4)  # on the Newton update and the residual
    newton_max_iter: int = Field(12, ge=2, le=100)
    max_turn: float = Field(0.3, gt=0, le=1.5)      # radians between consecutive tangents before halving
    locate_tol: float = Field(1e-12, gt=0, le=1e-6)  # Brent tolerance on the arclength s
    state_bound: float = Field(1e6, gt=0)            # stop when |u| exceeds this

    @model_validator(mode="after")
    def _steps(self) -> ContinuationSettings:
        if not self.step_min <= self.step <= self.step_max:
            raise ValueError(f"need step_min <= step <= step_max, got {self.step_min}, {self.step}, {self.step_max}")
        return self


class BranchStart(Strict):
    """Where one branch starts: a guess of the equilibrium at parameter `start`, and which way to go."""

    initial_state: dict[str, float] = Field(default_factory=dict)  # guess (model defaults otherwise)
    start: float | None = None                                       # parameter value (default: model's)
    direction: BranchDirection = 1
    label: str = ""


class ContinuationSpec(Strict):
    """A one-parameter continuation of equilibria: model, parameter, range, branch starts."""

    name: str = "continuation"
    model: ModelRef                          # a model name, or a whole model inline
    parameter: str
    params: dict[str, float] = Field(default_factory=dict)  # fixed overrides of the other parameters
    bounds: tuple[float, float]
    branches: list[BranchStart] = Field(min_length=1, max_length=64)
    settings: ContinuationSettings = Field(default_factory=ContinuationSettings)
    plot_state: str | None = None  # state on the PNG's y axis (default: the first)

    @model_validator(mode="after")
    def _bounds(self) -> ContinuationSpec:
        lo, hi = self.bounds
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise ValueError(f"bounds must be finite and increasing, got {self.bounds}")
        return self


@dataclass
class SpecialPoint:
    """A located bifurcation on a branch."""

    kind: str                 # fold / branch_point / hopf
    param: float
    state: np.ndarray         # [n]
    eigenvalues: np.ndarray   # [n] complex, of F_u at the point
    frequency: float = float("nan")  # Hopf: the crossing pair's imaginary part
    index: int = 0            # the point is between branch points index-1 and index
    located: bool = True      # False: Brent's search failed; param is the secant estimate

    def as_dict(self, state_names: list[str]) -> dict:
        return {"kind": self.kind, "param": float(self.param), "index": self.index, "located": self.located,
                "state": dict(zip(state_names, map(float, self.state))),
                "eigenvalues_real": np.real(self.eigenvalues).tolist(),
                "eigenvalues_imag": np.imag(self.eigenvalues).tolist(),
                "frequency": float(self.frequency) if np.isfinite(self.frequency) else None}


@dataclass
class Branch:
    """Equilibria along one branch, their stability, and the bifurcations found on it."""

    model: str
    parameter: str
    state_names: list[str]
    param: np.ndarray          # [N]
    states: np.ndarray         # [N, n]
    eigenvalues: np.ndarray    # [N, n] complex
    special: list[SpecialPoint] = field(default_factory=list)
    stop_reason: str = ""

    @property
    def stable(self) -> np.ndarray:
        return np.real(self.eigenvalues).max(axis=1) < 0

    def table(self) -> pd.DataFrame:
        cols = {self.parameter: self.param}
        cols.update({s: self.states[:, i] for i, s in enumerate(self.state_names)})
        cols["max_real_eig"] = np.real(self.eigenvalues).max(axis=1)
        cols["stable"] = self.stable
        return pd.DataFrame(cols)


class ContinuationError(InputError):
    """The start point did not converge to an equilibrium."""


class _System:
    """F(X), its (n x n+1) Jacobian and the test functions at X = (u, lam), in float64 numpy."""

    def __init__(self, model, p: np.ndarray, j: int):
        self.model, self.der, self.p, self.j = model, derivatives(model), p, j
        self.n = len(model.state_names)

    def _p(self, lam: float) -> np.ndarray:
        p = self.p.copy()
        p[self.j] = lam
        return p

    def F(self, X: np.ndarray) -> np.ndarray:
        return self.model.rhs_numpy(X[:-1], self._p(X[-1]))

    def Fu(self, X: np.ndarray) -> np.ndarray:
        return self.der.jac_numpy(X[:-1], self._p(X[-1]))

    def FX(self, X: np.ndarray) -> np.ndarray:
        p = self._p(X[-1])
        return np.hstack([self.der.jac_numpy(X[:-1], p), self.der.dfdp_column_numpy(X[:-1], p, self.j)[:, None]])

    def tangent(self, X: np.ndarray, tau_prev: np.ndarray) -> np.ndarray:
        """Unit tangent at X, oriented along tau_prev: [F_X; tau_prev^T] t = e_{n+1}."""
        rhs = np.zeros(self.n + 1)
        rhs[-1] = 1.0
        t = np.linalg.solve(np.vstack([self.FX(X), tau_prev]), rhs)
        return t / np.linalg.norm(t)

    def correct(self, Y: np.ndarray, X: np.ndarray, tau: np.ndarray, s: float, tol: float,
                max_iter: int) -> tuple[np.ndarray | None, int]:
        """Newton on [F(Y) = 0, tau.(Y - X) = s]; returns (point or None, iterations)."""
        for it in range(max_iter):
            G = np.append(self.F(Y), tau @ (Y - X) - s)
            if not np.isfinite(G).all():
                return None, it
            if np.linalg.norm(G, np.inf) <= tol * (1 + np.linalg.norm(Y, np.inf)):
                return Y, it
            try:
                dY = np.linalg.solve(np.vstack([self.FX(Y), tau]), -G)
            except np.linalg.LinAlgError:
                return None, it
            Y = Y + dY
            if np.linalg.norm(dY, np.inf) <= tol * (1 + np.linalg.norm(Y, np.inf)):
                return Y, it + 1
        return None, max_iter

    def tests(self, X: np.ndarray, tau: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(fold, branch-point, Hopf) test values and the eigenvalues of F_u at X."""
        Fu = self.Fu(X)
        mu = scipy.linalg.eigvals(Fu)
        hopf = np.real(np.prod([mu[a] + mu[b] for a in range(self.n) for b in range(a + 1, self.n)])) \
            if self.n > 1 else 1.0
        return np.array([tau[-1], np.linalg.det(Fu), hopf]), mu


def _newton_equilibrium(system: _System, u: np.ndarray, lam: float, tol: float, max_iter: int) -> np.ndarray:
    """Solve F(u; lam) = 0 for u from a guess (the start of every branch)."""
    for _ in range(4 * max_iter):
        X = np.append(u, lam)
        r = system.F(X)
        try:
            du = np.linalg.solve(system.Fu(X), -r)
        except np.linalg.LinAlgError as exc:
            raise ContinuationError("branches.initial_state", f"singular Jacobian at the guess {u}",
                                    "a guess near a regular equilibrium") from exc
        u = u + du
        if not np.isfinite(u).all():
            break
        if np.linalg.norm(du, np.inf) <= tol * (1 + np.linalg.norm(u, np.inf)):
            return u
    raise ContinuationError("branches.initial_state", f"Newton did not converge to an equilibrium from the guess "
                            f"at {system.model.param_names[system.j]}={lam}", "a guess near an equilibrium")


def continue_branch(spec: ContinuationSpec, start: BranchStart) -> Branch:
    """Follow the equilibrium branch from `start` until it leaves spec.bounds or max_points."""
    model = resolve_model(spec.model)
    j = param_index(model, spec.parameter, "parameter")
    p = model.param_vector(spec.params, "params")
    lam0 = p[j] if start.start is None else float(start.start)
    lo, hi = spec.bounds
    if not lo <= lam0 <= hi:
        raise InputError("branches.start", f"{lam0} outside bounds", f"[{lo}, {hi}]")
    cfg = spec.settings
    system = _System(model, p, j)
    u = _newton_equilibrium(system, model.state_vector(start.initial_state, "branches.initial_state"), lam0,
                            cfg.newton_tol, cfg.newton_max_iter)
    X = np.append(u, lam0)
    null = scipy.linalg.null_space(system.FX(X))
    tau = null[:, 0] if null.shape[1] else np.eye(len(X))[-1]
    if tau[-1] * start.direction < 0:
        tau = -tau
    test, mu = system.tests(X, tau)
    points, eigs, special = [X], [mu], []
    h = cfg.step
    reason = "max_points"
    while len(points) < cfg.max_points:
        Y, iters = system.correct(X + h * tau, X, tau, h, cfg.newton_tol, cfg.newton_max_iter)
        try:
            tau_new = system.tangent(Y, tau) if Y is not None else None
        except np.linalg.LinAlgError:  # landed exactly on a singular point: step differently
            Y = tau_new = None
        if Y is None or np.arccos(np.clip(tau_new @ tau, -1, 1)) > cfg.max_turn:
            h /= 2
            if h < cfg.step_min:
                reason = "step_min"
                break
            continue
        test_new, mu_new = system.tests(Y, tau_new)
        special += [sp_ for sp_ in _locate(system, X, tau, h, test, test_new, cfg, len(points))
                    if lo <= sp_.param <= hi]  # the last step may leave the bounds
        points.append(Y)
        eigs.append(mu_new)
        X, tau, test = Y, tau_new, test_new
        if iters <= 3:
            h = min(h * 1.5, cfg.step_max)
        if not lo <= X[-1] <= hi:
            reason = "bounds"
            break
        if np.abs(X[:-1]).max() > cfg.state_bound:
            reason = "state_bound"
            break
    P = np.array(points)
    return Branch(model=model.name, parameter=spec.parameter, state_names=model.state_names, param=P[:, -1],
                  states=P[:, :-1], eigenvalues=np.array(eigs), special=special, stop_reason=reason)


def _locate(system: _System, X: np.ndarray, tau: np.ndarray, h: float, t0: np.ndarray, t1: np.ndarray,
            cfg: ContinuationSettings, index: int) -> list[SpecialPoint]:
    """Bifurcations bracketed by the step X -> X(h): Brent on s, every trial Newton-corrected."""
    changed = np.sign(t0) * np.sign(t1) < 0
    found = []

    def at(s: float) -> np.ndarray:
        if s == 0:
            return X
        Y, _ = system.correct(X + s * tau, X, tau, s, cfg.newton_tol, cfg.newton_max_iter)
        if Y is None:
            raise RuntimeError("corrector failed while locating a bifurcation")
        return Y

    def value(s: float, which: int) -> float:
        Y = at(s)
        if which == 0:
            return system.tangent(Y, tau)[-1]
        if which == 1:
            return np.linalg.det(system.Fu(Y))
        return system.tests(Y, tau)[0][2]

    # tau_lam and det F_u both change at a fold; only one of them at a branch point: det F_u along
    # a branch that crosses another (Lorenz origin at rho = 1), tau_lam along the symmetric branch
    # of a pitchfork, which turns back there without a change in det F_u
    kinds = [(0, "fold" if changed[1] else "branch_point")] if changed[0] else (
        [(1, "branch_point")] if changed[1] else [])
    if changed[2]:
        kinds.append((2, "hopf"))
    for which, kind in kinds:
        try:
            s = scipy.optimize.brentq(value, 0.0, h, args=(which,), xtol=cfg.locate_tol,
                                      rtol=4 * np.finfo(float).eps)
            Y = at(s)
        except (RuntimeError, ValueError, np.linalg.LinAlgError):
            # the corrector failed inside the bracket: report the secant estimate, flagged
            s = h * t0[which] / (t0[which] - t1[which])
            Y = X + s * tau
            found.append(SpecialPoint(kind=kind, param=float(Y[-1]), state=Y[:-1].copy(),
                                      eigenvalues=scipy.linalg.eigvals(system.Fu(Y)), index=index, located=False))
            continue
        mu = scipy.linalg.eigvals(system.Fu(Y))
        freq = float("nan")
        if kind == "hopf":
            scale = 1.0 + np.abs(mu).max()
            pair = (np.abs(np.real(mu)) <= 1e-6 * scale) & (np.abs(np.imag(mu)) > 1e-8 * scale)
            if not pair.any():
                continue  # a neutral saddle (real pair mu, -mu), not a Hopf point
            freq = float(np.abs(np.imag(mu[pair])).max())
        found.append(SpecialPoint(kind=kind, param=float(Y[-1]), state=Y[:-1].copy(), eigenvalues=mu,
                                  frequency=freq, index=index))
    return found


def check_continuation(spec: ContinuationSpec) -> None:
    """Every name of `spec` against its model (model, parameter, params, branch starts, plot_state), so
    a job reports a bad name before any work; raises InputError naming the field."""
    model = resolve_model(spec.model)
    param_index(model, spec.parameter, "parameter")
    model.param_vector(spec.params, "params")
    lo, hi = spec.bounds
    for i, start in enumerate(spec.branches):
        model.state_vector(start.initial_state, f"branches[{i}].initial_state")
        if start.start is not None and not lo <= start.start <= hi:
            raise InputError(f"branches[{i}].start", f"{start.start} outside bounds", f"[{lo}, {hi}]")
    if spec.plot_state is not None and spec.plot_state not in model.state_names:
        raise InputError("plot_state", f"{spec.plot_state!r} is not a state", ", ".join(model.state_names))


def continue_equilibria(spec: ContinuationSpec) -> list[Branch]:
    """Every branch of `spec`, in order."""
    return [continue_branch(spec, start) for start in spec.branches]


def branches_table(branches: list[Branch], labels: list[str]) -> pd.DataFrame:
    """All branches in one long table (a `branch` index and its label per row)."""
    frames = []
    for i, (b, label) in enumerate(zip(branches, labels, strict=True)):
        t = b.table()
        t.insert(0, "branch", i)
        t.insert(1, "label", label)
        frames.append(t)
    return pd.concat(frames, ignore_index=True)


def write_continuation(spec: ContinuationSpec, out_dir: str | Path) -> dict:
    """Continue every branch and write DIR/branches.parquet, DIR/special_points.json,
    DIR/continuation.png and DIR/summary.json atomically; return the summary.

    A few hundred small dense solves: it runs in the caller's process (no actors, no GPU).
    """
    from actors.sweep.plots import continuation_figure

    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    check_continuation(spec)
    branches = continue_equilibria(spec)
    labels = [s.label or f"branch {i}" for i, s in enumerate(spec.branches)]
    special = [dict(sp_.as_dict(b.state_names), branch=i, label=labels[i])
               for i, b in enumerate(branches) for sp_ in b.special]
    atomic_write_parquet(out_dir / "branches.parquet", branches_table(branches, labels))
    atomic_write_json(out_dir / "special_points.json", special)
    continuation_figure(spec, branches, out_dir / "continuation.png")
    summary = {"name": spec.name, "model": model_label(spec.model), "parameter": spec.parameter,
               "out_dir": str(out_dir),
               "branches": [{"label": lab, "points": len(b.param), "stop_reason": b.stop_reason,
                             "param_range": [float(b.param.min()), float(b.param.max())]}
                            for lab, b in zip(labels, branches, strict=True)],
               "special_points": [{k: s[k] for k in ("kind", "param", "frequency", "branch")} for s in special],
               "wall_seconds": round(time.perf_counter() - t0, 3)}
    atomic_write_json(out_dir / "summary.json", summary)
    return summary
