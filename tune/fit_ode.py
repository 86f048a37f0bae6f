"""Estimate ODE model parameters from one noisy observed trajectory with Ray Tune, then polish.

The recipe, in three steps:

1. `make_observations` plants a known parameter set (`FitSpec.true_params`), integrates it with
   the scipy reference backend (DOP853, rtol 1e-10) at `n_obs` evenly spaced times over `t_span`
   and adds seeded Gaussian noise whose standard deviation is `noise` times each observed state's
   own standard deviation over the window (a per-state signal-to-noise ratio of 1/noise).
2. A Tune study searches the `fit` box with Optuna's TPE sampler (seeded) under an ASHA scheduler.
   Training iteration i of a trial integrates the candidate (torch backend, `rtol`, CPU, one
   thread) over the first `horizons[i]` fraction of `t_span`, continuing from where iteration
   i-1 stopped, and reports `loss`: the normalised mean squared error

       loss = mean over observed points t_k <= horizon end and observed states s of
              (y_s(t_k; theta) - y_obs_s(t_k))**2 / var(y_obs_s)

   At the planted parameters it sits at the noise floor, noise**2 / (1 + noise**2). The horizons
   are ASHA's rungs (`time_attr="training_iteration"`, grace period 1): a candidate must first
   track the data over a short window before it may spend time on a longer one, where an
   oscillator's phase error makes the loss surface ragged. ASHA compares trials within a rung;
   the TPE searcher learns from `search_loss`, the first rung's loss (see `trainable` for why).
3. The best trial at the deepest rung (losses on different windows are not comparable) is refined
   by `scipy.optimize.least_squares` (trust-region reflective, inside the same bounds) on the same
   residuals, integrated at the tighter `polish_rtol` with a batched forward-difference Jacobian.
   Why both: a stochastic search with a few dozen samples finds the right basin but only to within
   the spacing of its samples (several per cent, tens of per cent in a weakly constrained
   direction), while Gauss-Newton converges in a handful of iterations once inside the basin and
   nails the digits, but has no way out of a wrong basin. The polish walks through the horizons
   too (continuation): each window's optimum starts the next, longer window, whose basin around
   the true phase is narrower; so a Tune answer that is only in the first window's (wide) basin
   still ends at the global optimum.

The documented case (configs/fit/gaslit_fit.yaml): GASLIT-AF from Lambda(0)=1 with gamma=0.4, an
oscillation (period ~3.2) growing out of the unstable healthy focus towards the gamma=0.4 limit
cycle, observed on [0, 20] (about six cycles) at 300 points with 2 % noise; fitted gamma, alpha_xy
and c. The growth rate is set by a1*gamma - a2*Omega, the period by tau*sqrt(alpha_xy), and the
functional level f by f0 - b/(c - x); the Fisher standard errors are below 0.1 % for all three.
gamma and a1 are never fitted together: in this window they act only through the product a1*gamma
(gamma's one other term, rho*gamma*sig(Lambda), is gated off: sig < 2e-3 at Lambda <= 1). That is
not an exact symmetry of the equations, so FitSpec's structural test lets the pair through, and
`fit` rejects it before any Tune trial by its Fisher preflight (`expected_rel_se`).
Why not a longer window: over [0, 60] the oscillation grows thirty-fold and a 2 % change in gamma
or alpha_xy slips the phase by a cycle, so the full-window loss is a needle that two dozen samples
never hit (the best of 200 random candidates scores ~0.4, no better than a flat line); on [0, 20]
the deepest rung still ranks candidates sensibly. Chaotic candidates are kept out by the bounds
(gamma < 0.6).

Engines import no Ray; this module is a Tune study, so Ray is imported lazily inside `fit`.
"""
from __future__ import annotations

import contextlib
import itertools
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from actors.common.config import Strict
from actors.common.errors import InputError
from actors.common.storage import atomic_write_json
from actors.sweep.config import ScipySolver, TorchSolver
from actors.sweep.engine import simulate
from actors.sweep.models import CompiledModel, get_model

PENALTY = 1e3          # loss reported for a candidate that blows up (finite, so samplers can rank it)
OBS_RTOL, OBS_ATOL = 1e-10, 1e-12  # the planted trajectory: scipy DOP853 at these tolerances


class FitSpec(Strict):
    """A parameter-recovery problem: a planted truth, what to fit, how to observe, how to search."""

    name: str = "fit"
    model: str = "gaslit_af"
    true_params: dict[str, float] = Field(default_factory=dict)    # planted values (others: defaults)
    fit: dict[str, tuple[float, float]] = Field(min_length=1)       # name -> [lo, hi] search bounds
    initial_state: dict[str, float] = Field(default_factory=dict)  # known; overrides model defaults
    observe: list[str] | None = None                                # observed states (None: all)
    t_span: tuple[float, float] = (0.0, 20.0)
    n_obs: int = Field(300, ge=10, le=100_000)
    noise: float = Field(0.02, ge=0.0, le=1.0)                      # relative to each state's std
    seed: int = 0
    num_samples: int = Field(24, ge=1, le=10_000)
    max_concurrent_trials: int | None = Field(None, ge=1)
    n_startup_trials: int = Field(8, ge=1)                          # TPE's random start
    horizons: list[float] = Field(default_factory=lambda: [0.25, 0.5, 1.0], min_length=1)
    reduction_factor: int = Field(2, ge=2)                          # ASHA
    rtol: float = Field(1e-6, gt=1e-13, le=1e-2)                    # Tune trials (torch backend)
    atol: float = Field(1e-9, gt=1e-16, le=1e-2)
    polish_rtol: float = Field(1e-7, gt=1e-13, le=1e-4)             # least-squares polish
    polish_max_nfev: int = Field(30, ge=1)                          # per horizon
    tolerance: float = Field(0.05, gt=0.0)                          # pass: every relative error below

    @model_validator(mode="after")
    def _check(self) -> FitSpec:
        model = get_model(self.model)  # UnknownName names the field `model`
        model.param_vector(self.true_params, "true_params")
        model.state_vector(self.initial_state, "initial_state")
        for s in self.observe or []:
            if s not in model.state_names:
                raise InputError(f"observe.{s}", "not a state of model " + model.name, ", ".join(model.state_names))
        if self.observe is not None and (not self.observe or len(set(self.observe)) != len(self.observe)):
            raise InputError("observe", f"must list distinct states, got {self.observe}", ", ".join(model.state_names))
        planted = model.param_vector(self.true_params, "true_params")
        for name, (lo, hi) in self.fit.items():
            if name not in model.param_names:
                raise InputError(f"fit.{name}", f"not a parameter of model {model.name}", ", ".join(model.param_names))
            if not (np.isfinite(lo) and np.isfinite(hi)) or lo >= hi:
                raise InputError(f"fit.{name}", f"bounds must be finite with lo < hi, got [{lo}, {hi}]")
            value = planted[model.param_names.index(name)]
            if not lo < value < hi:
                raise InputError(f"fit.{name}", f"planted value {value} lies outside the bounds [{lo}, {hi}]")
        _check_identifiable(model, list(self.fit), planted)
        t0, t1 = self.t_span
        if not (np.isfinite(t0) and np.isfinite(t1)) or t1 <= t0:
            raise InputError("t_span", f"must be finite and increasing, got {self.t_span}")
        h = np.asarray(self.horizons, dtype=float)
        if not (np.all(np.diff(h) > 0) and h[0] > 0 and h[-1] == 1.0):
            raise InputError("horizons", f"must increase strictly in (0, 1] and end at 1.0, got {self.horizons}")
        return self

    @property
    def observed(self) -> list[str]:
        return list(self.observe) if self.observe is not None else get_model(self.model).state_names

    @property
    def true_fitted(self) -> dict[str, float]:
        """Planted values of the fitted parameters."""
        model = get_model(self.model)
        planted = model.param_vector(self.true_params, "true_params")
        return {n: float(planted[model.param_names.index(n)]) for n in self.fit}


def _check_identifiable(model: CompiledModel, names: list[str], planted: np.ndarray) -> None:
    """Reject fitted parameters the right-hand side cannot tell apart (numeric symmetry test).

    A parameter that does not change F(u; p) is unidentifiable; so is a pair that enters only as a
    product (p_a*k, p_b/k leaves F unchanged) or only as a ratio. This is structural and exact;
    pairs that are merely inseparable in the data at hand (GASLIT-AF's a1 and gamma at low load)
    are caught by `expected_rel_se` in `fit`.
    """
    rng = np.random.default_rng(12345)
    base = np.where(planted != 0, planted, 1.0)
    P = base * rng.uniform(0.6, 1.4, size=(6, planted.size))
    U = rng.uniform(0.2, 2.0, size=(6, len(model.state_names)))
    with np.errstate(all="ignore"):
        F = model.rhs_numpy(U, P)

        def same(Q: np.ndarray) -> bool:
            G = model.rhs_numpy(U, Q)
            ok = np.isfinite(F) & np.isfinite(G)
            return bool(ok.any()) and np.allclose(F[ok], G[ok], rtol=1e-9, atol=1e-12)

        idx = {n: model.param_names.index(n) for n in names}
        for n in names:
            Q = P.copy()
            Q[:, idx[n]] *= 1.37
            if same(Q):
                raise InputError(f"fit.{n}", "does not change the model's right-hand side; cannot be estimated")
        for a, b in itertools.combinations(names, 2):
            for kind, kb in (("product", 1 / 1.37), ("ratio", 1.37)):
                Q = P.copy()
                Q[:, idx[a]] *= 1.37
                Q[:, idx[b]] *= kb
                if same(Q):
                    raise InputError(f"fit.{b}", f"{a} and {b} enter the model only as their {kind}; "
                                     "fit one of them and fix the other")


# ---- observations ---------------------------------------------------------------------------------
def observation_times(spec: FitSpec) -> np.ndarray:
    return np.linspace(spec.t_span[0], spec.t_span[1], spec.n_obs)


def simulate_params(spec: FitSpec, values: dict[str, float], t: np.ndarray, *,
                    rtol: float = OBS_RTOL, atol: float = OBS_ATOL) -> np.ndarray:
    """All states at times t [T, n] for the planted parameters with `values` substituted (scipy)."""
    model = get_model(spec.model)
    p = model.param_vector({**spec.true_params, **values}, "params")
    u0 = model.state_vector(spec.initial_state, "initial_state")
    solver = ScipySolver(method="DOP853", rtol=rtol, atol=atol, t_span=(float(t[0]), float(t[-1])), lyapunov=False)
    return simulate(model, p[None], u0[None], solver, t_eval=np.asarray(t, dtype=float)).raw.ys[0]


def make_observations(spec: FitSpec) -> tuple[np.ndarray, np.ndarray]:
    """Observation times t [n_obs] and noisy observed states y_obs [n_obs, len(spec.observed)].

    Noise: y_obs = y + noise * std_t(y_s) * N(0, 1), seeded by spec.seed.
    """
    t = observation_times(spec)
    ys = simulate_params(spec, {}, t)
    if not np.all(np.isfinite(ys)):
        raise InputError("true_params", "the planted trajectory blows up inside t_span")
    model = get_model(spec.model)
    clean = ys[:, [model.state_names.index(s) for s in spec.observed]]
    rng = np.random.default_rng(spec.seed)
    return t, clean + spec.noise * clean.std(axis=0) * rng.standard_normal(clean.shape)


def expected_rel_se(spec: FitSpec, t: np.ndarray, y_obs: np.ndarray) -> dict[str, float]:
    """Fisher (Cramér-Rao) relative standard error of each fitted parameter at the planted point.

    Linearised: J = d y_obs / d theta by forward differences (one batched torch call, rtol 1e-8),
    each observed state weighted by its noise sd, SE = sqrt(diag((J^T J)^-1)) via the SVD (so a
    pair the data cannot separate shows up as a huge SE instead of a singular-matrix error).
    NaN where it cannot be assessed (noise 0, a planted parameter equal to 0).
    """
    problem = Problem.build(spec, t, y_obs)
    x0 = np.array([spec.true_fitted[n] for n in spec.fit])
    h = 1e-4 * np.maximum(np.abs(x0), 1e-3)
    X = np.vstack([x0, x0 + np.diag(h)])
    with _torch_threads(1):
        ys = problem.predict(X, problem.t_ends[-1], 1e-8)
    sigma = spec.noise * y_obs.std(axis=0) / np.sqrt(1 + spec.noise ** 2)
    if not np.all(np.isfinite(ys)) or not np.all(sigma > 0):
        return {n: float("nan") for n in spec.fit}
    J = ((ys[1:] - ys[0]) / sigma).reshape(len(x0), -1).T / h  # [T*n_obs, k]
    _, S, Vt = np.linalg.svd(J, full_matrices=False)
    with np.errstate(divide="ignore"):
        cov = (Vt.T / np.where(S > 0, S, 0.0) ** 2) @ Vt
    return {n: float(np.sqrt(max(cov[i, i], 0.0)) / abs(x0[i])) if x0[i] != 0 else float("nan")
            for i, n in enumerate(spec.fit)}


# ---- the objective --------------------------------------------------------------------------------
@contextlib.contextmanager
def _torch_threads(n: int):
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@dataclass
class Problem:
    """Everything a trial needs, small and picklable (shipped to trials by tune.with_parameters)."""

    model: str
    names: list[str]
    base_params: np.ndarray  # [m] planted values; fitted entries are overwritten per candidate
    u0: np.ndarray           # [n]
    obs_idx: list[int]       # columns of the model state that are observed
    t: np.ndarray            # [T]
    y_obs: np.ndarray        # [T, len(obs_idx)]
    inv_var: np.ndarray      # [len(obs_idx)] 1 / var(y_obs) per observed state
    t_ends: list[float]      # absolute end time of each horizon
    rtol: float
    atol: float

    @classmethod
    def build(cls, spec: FitSpec, t: np.ndarray, y_obs: np.ndarray) -> Problem:
        model = get_model(spec.model)
        t0, t1 = spec.t_span
        var = np.maximum(y_obs.var(axis=0), 1e-300)
        return cls(model=spec.model, names=list(spec.fit),
                   base_params=model.param_vector(spec.true_params, "true_params"),
                   u0=model.state_vector(spec.initial_state, "initial_state"),
                   obs_idx=[model.state_names.index(s) for s in spec.observed], t=t, y_obs=y_obs,
                   inv_var=1.0 / var, t_ends=[t0 + h * (t1 - t0) for h in spec.horizons],
                   rtol=spec.rtol, atol=spec.atol)

    def params(self, X: np.ndarray) -> np.ndarray:
        """[B, k] fitted values -> [B, m] full parameter rows."""
        X = np.atleast_2d(X)
        model = get_model(self.model)
        P = np.tile(self.base_params, (X.shape[0], 1))
        for j, n in enumerate(self.names):
            P[:, model.param_names.index(n)] = X[:, j]
        return P

    def mask(self, t_end: float) -> np.ndarray:
        return self.t <= t_end * (1 + 1e-12) + 1e-12

    def predict(self, X: np.ndarray, t_end: float, rtol: float) -> np.ndarray:
        """Observed states [B, T_h, n_obs] on the observation times up to t_end (torch, CPU)."""
        X = np.atleast_2d(X)
        t = self.t[self.mask(t_end)]
        solver = TorchSolver(device="cpu", rtol=rtol, atol=self.atol, t_span=(float(self.t[0]), float(t_end)),
                             lyapunov=False)
        res = simulate(self.model, self.params(X), np.tile(self.u0, (X.shape[0], 1)), solver, t_eval=t)
        return res.raw.ys[:, :, self.obs_idx]

    def residuals(self, ys: np.ndarray, t_end: float) -> np.ndarray:
        """Scaled residuals [B, T_h * n_obs] whose squared sum is the loss; NaN -> a large constant."""
        obs = self.y_obs[self.mask(t_end)]
        r = (ys - obs) * np.sqrt(self.inv_var) / np.sqrt(obs.size)
        return np.where(np.isfinite(r), r, np.sqrt(PENALTY / obs.size)).reshape(ys.shape[0], -1)


def trainable(config: dict[str, float], problem: Problem) -> None:
    """Tune function trainable: iteration i reports the loss over the first horizons[i] of the data.

    Reports `loss` (the normalised MSE over the horizon, what ASHA ranks each rung by), `horizon`
    (fraction of t_span) and `search_loss` (the loss on the first horizon, repeated). The searcher
    learns from `search_loss`: OptunaSearch scores a trial by its last result, and a trial ASHA
    stopped early would otherwise look better than one that ran on, since an oscillator's loss can
    only grow as the window lengthens; the first rung is the one window every trial has covered,
    and its loss surface is smooth. The integration continues from the previous horizon's end
    state, so a trial that survives every rung costs one integration of t_span in total.
    """
    from ray import tune

    x = np.array([config[n] for n in problem.names], dtype=float)
    P = problem.params(x)
    t0, t1 = float(problem.t[0]), problem.t_ends[-1]
    u, t_prev, sq, count, first = problem.u0[None].copy(), t0, 0.0, 0, None
    start = problem.t <= t_prev
    if start.any():  # observations at t0 are of the known initial state
        d = (problem.u0[problem.obs_idx] - problem.y_obs[start]) ** 2 * problem.inv_var
        sq, count = float(d.sum()), int(d.size)
    with _torch_threads(1):
        for t_end in problem.t_ends:
            sel = (problem.t > t_prev) & problem.mask(t_end)
            solver = TorchSolver(device="cpu", rtol=problem.rtol, atol=problem.atol, t_span=(t_prev, t_end),
                                 lyapunov=False)
            res = simulate(problem.model, P, u, solver, t_eval=problem.t[sel] if sel.any() else None)
            ok = not res.raw.blowup[0] and np.all(np.isfinite(res.raw.u_final))
            if ok and sel.any():
                d = (res.raw.ys[0][:, problem.obs_idx] - problem.y_obs[sel]) ** 2 * problem.inv_var
                ok = bool(np.all(np.isfinite(d)))
                sq, count = sq + float(d.sum()), count + int(d.size)
            loss = sq / max(count, 1) if ok else PENALTY
            first = loss if first is None else first
            tune.report({"loss": float(loss), "search_loss": float(first),
                         "horizon": float((t_end - t0) / (t1 - t0))})
            if not ok:  # blew up: nothing further to learn from this candidate
                return
            u, t_prev = res.raw.u_final.copy(), t_end


# ---- the polish ---------------------------------------------------------------------------------
class _BatchedResiduals:
    """least_squares' fun and jac from one batched torch call: rows x, x + h_j e_j (forward FD)."""

    def __init__(self, problem: Problem, t_end: float, rtol: float, lo: np.ndarray, hi: np.ndarray):
        self.problem, self.t_end, self.rtol = problem, t_end, rtol
        self.lo, self.hi = lo, hi
        self.step = 1e-4 * (hi - lo)  # well above the integrator's row-to-row noise at polish_rtol
        self._x: np.ndarray | None = None
        self.nfev = 0

    def _eval(self, x: np.ndarray) -> None:
        if self._x is not None and np.array_equal(x, self._x):
            return
        h = np.where(x + self.step <= self.hi, self.step, -self.step)
        X = np.vstack([x, x + np.diag(h)])
        R = self.problem.residuals(self.problem.predict(X, self.t_end, self.rtol), self.t_end)
        self._x, self._r, self._J = x.copy(), R[0], ((R[1:] - R[0]) / h[:, None]).T
        self.nfev += 1

    def fun(self, x: np.ndarray) -> np.ndarray:
        self._eval(x)
        return self._r

    def jac(self, x: np.ndarray) -> np.ndarray:
        self._eval(x)
        return self._J


def polish(problem: Problem, x0: np.ndarray, lo: np.ndarray, hi: np.ndarray, rtol: float,
           max_nfev: int = 30) -> tuple[np.ndarray, float, int]:
    """Least squares through the horizons (continuation); returns (x, full-horizon loss, evaluations)."""
    from scipy.optimize import least_squares

    x = np.clip(np.asarray(x0, dtype=float), lo, hi)
    nfev, loss = 0, float("nan")
    with _torch_threads(1):
        for t_end in problem.t_ends:
            res_fn = _BatchedResiduals(problem, t_end, rtol, lo, hi)
            sol = least_squares(res_fn.fun, x, jac=res_fn.jac, bounds=(lo, hi), x_scale=hi - lo,
                                method="trf", xtol=1e-8, ftol=1e-8, gtol=1e-8, max_nfev=max_nfev)
            x, loss, nfev = sol.x, float(2 * sol.cost), nfev + res_fn.nfev
    return x, loss, nfev


# ---- the study ----------------------------------------------------------------------------------
@dataclass
class FitResult:
    """Outcome of `fit`: polished estimates against the planted truth."""

    name: str
    model: str
    best_params: dict[str, float]       # polished estimates
    true_params: dict[str, float]       # planted values of the fitted parameters
    rel_errors: dict[str, float]        # |best - true| / |true|
    expected_rel_se: dict[str, float]   # Fisher (Cramér-Rao) relative SE at the truth, a priori
    tune_best_params: dict[str, float]  # best Tune trial that reached the full horizon
    tune_best_loss: float               # its full-horizon loss (torch, spec.rtol)
    polished_loss: float                # full-horizon loss after the polish (torch, spec.polish_rtol)
    noise_floor: float                  # expected loss at the truth: noise^2 / (1 + noise^2)
    n_trials: int
    n_full_horizon: int                 # trials ASHA let reach the last rung
    polish_evaluations: int
    tune_seconds: float
    polish_seconds: float
    tolerance: float
    trials: list[dict[str, Any]] = field(default_factory=list)

    @property
    def max_rel_error(self) -> float:
        return max(self.rel_errors.values())

    @property
    def ok(self) -> bool:
        return all(np.isfinite(e) and e < self.tolerance for e in self.rel_errors.values())

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "max_rel_error": self.max_rel_error, "ok": self.ok}


def run_tune(spec: FitSpec, problem: Problem, storage_path: str | Path):
    """The Tune study: TPE (Optuna, seeded) proposes, ASHA stops poor trials at the horizon rungs."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    space = {n: tune.uniform(float(lo), float(hi)) for n, (lo, hi) in spec.fit.items()}
    sampler = optuna.samplers.TPESampler(seed=spec.seed, multivariate=True,
                                         n_startup_trials=min(spec.n_startup_trials, spec.num_samples))
    searcher = OptunaSearch(metric="search_loss", mode="min", sampler=sampler)  # see `trainable`
    scheduler = ASHAScheduler(metric="loss", mode="min", time_attr="training_iteration",
                              max_t=len(spec.horizons), grace_period=1, reduction_factor=spec.reduction_factor)
    runnable = tune.with_resources(tune.with_parameters(trainable, problem=problem), {"cpu": 1})
    tuner = tune.Tuner(
        runnable, param_space=space,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=spec.num_samples,
                                    max_concurrent_trials=spec.max_concurrent_trials, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(Path(storage_path).resolve()), name=spec.name, verbose=0))
    return tuner.fit()


def fit(spec: FitSpec, storage_path: str | Path) -> FitResult:
    """Plant, observe, search with Tune, polish with least squares; compare with the truth."""
    t, y_obs = make_observations(spec)
    problem = Problem.build(spec, t, y_obs)
    names = list(spec.fit)
    # Practical identifiability before spending a Tune study: e.g. GASLIT-AF's gamma also enters
    # through rho*gamma*sig(Lambda), which is ~1e-3 at Lambda <= 1, so a1 and gamma pass the exact
    # product test in FitSpec and are still inseparable in such data.
    rel_se = expected_rel_se(spec, t, y_obs)
    poor = {n: v for n, v in rel_se.items() if v > spec.tolerance / 3}  # NaN: not assessable
    if poor:
        raise InputError("fit", "not identifiable from these observations: expected relative error "
                         + ", ".join(f"{n} {v:.3g}" for n, v in poor.items())
                         + f" exceeds tolerance/3 = {spec.tolerance / 3:.3g}",
                         "a parameter set the data constrain (drop or fix one of a confounded pair)")
    lo = np.array([spec.fit[n][0] for n in names], dtype=float)
    hi = np.array([spec.fit[n][1] for n in names], dtype=float)

    started = time.perf_counter()
    grid = run_tune(spec, problem, storage_path)
    tune_seconds = time.perf_counter() - started
    trials = []
    for r in grid:
        if r.error is not None or not r.metrics or "loss" not in r.metrics:
            continue
        trials.append({**{n: float(r.config[n]) for n in names}, "loss": float(r.metrics["loss"]),
                       "search_loss": float(r.metrics["search_loss"]), "horizon": float(r.metrics["horizon"]),
                       "iterations": int(r.metrics["training_iteration"])})
    if not trials:
        raise RuntimeError(f"Tune study {spec.name!r}: no trial reported a loss")
    # Losses are only comparable on the same horizon: rank the trials that reached the deepest one.
    deepest = max(tr["horizon"] for tr in trials)
    full = [tr for tr in trials if tr["horizon"] == deepest]
    best = min(full, key=lambda tr: tr["loss"])

    started = time.perf_counter()
    x, polished_loss, nfev = polish(problem, np.array([best[n] for n in names]), lo, hi,
                                    spec.polish_rtol, spec.polish_max_nfev)
    polish_seconds = time.perf_counter() - started

    truth = spec.true_fitted
    best_params = {n: float(v) for n, v in zip(names, x)}
    rel = {n: abs(best_params[n] - truth[n]) / abs(truth[n]) if truth[n] != 0 else abs(best_params[n])
           for n in names}
    noise_floor = spec.noise ** 2 / (1 + spec.noise ** 2)  # var(noise) / var(y_obs), every state
    return FitResult(name=spec.name, model=spec.model, best_params=best_params, true_params=truth,
                     rel_errors=rel, expected_rel_se=rel_se, tune_best_params={n: best[n] for n in names},
                     tune_best_loss=best["loss"], polished_loss=polished_loss, noise_floor=noise_floor,
                     n_trials=len(trials), n_full_horizon=len(full), polish_evaluations=nfev,
                     tune_seconds=tune_seconds, polish_seconds=polish_seconds, tolerance=spec.tolerance,
                     trials=sorted(trials, key=lambda tr: (-tr["horizon"], tr["loss"])))


def load_spec(path: str | Path, **overrides: Any) -> FitSpec:
    """A FitSpec from YAML, with keyword overrides (e.g. num_samples=8)."""
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    return FitSpec.model_validate(data)


# ---- outputs ------------------------------------------------------------------------------------
def table(result: FitResult) -> str:
    """True vs Tune's best vs polished values with relative errors, and the run's losses and timings."""
    lines = [f"{'param':<10} {'true':>12} {'tune best':>12} {'fitted':>12} {'rel.err':>9}"]
    for n in result.best_params:
        ok = "ok" if result.rel_errors[n] < result.tolerance else "FAIL"
        lines.append(f"{n:<10} {result.true_params[n]:>12.6g} {result.tune_best_params[n]:>12.6g} "
                     f"{result.best_params[n]:>12.6g} {100 * result.rel_errors[n]:>8.3f}% {ok}")
    lines.append(f"loss: tune best {result.tune_best_loss:.3e}, polished {result.polished_loss:.3e}, "
                 f"noise floor {result.noise_floor:.3e}; {result.n_trials} trials "
                 f"({result.n_full_horizon} reached the full horizon); "
                 f"tune {result.tune_seconds:.1f}s, polish {result.polish_seconds:.1f}s")
    return "\n".join(lines)


def plot_fit(spec: FitSpec, result: FitResult, path: Path) -> Path:
    """Observed points against the fitted and the planted trajectory, one panel per observed state."""
    from actors.sweep.plots import fit_figure

    model = get_model(spec.model)
    t, y_obs = make_observations(spec)
    dense = np.linspace(t[0], t[-1], 2000)
    cols = [model.state_names.index(s) for s in spec.observed]
    fitted = simulate_params(spec, result.best_params, dense)[:, cols]
    planted = simulate_params(spec, {}, dense)[:, cols]
    fitted_txt = ", ".join(f"{n}={v:.4g} ({100 * result.rel_errors[n]:.2f}%)" for n, v in result.best_params.items())
    return fit_figure(path, t, y_obs, dense, planted, fitted, spec.observed,
                      f"{spec.model}: {spec.name}  |  {fitted_txt}")


def write_outputs(spec: FitSpec, result: FitResult, out_dir: str | Path) -> tuple[Path, Path]:
    """DIR/fit.json (spec and result) and DIR/fit.png, both written atomically."""
    out_dir = Path(out_dir)
    atomic_write_json(out_dir / "fit.json", {"spec": spec.model_dump(mode="json"), "result": result.to_dict()})
    return out_dir / "fit.json", plot_fit(spec, result, out_dir / "fit.png")
