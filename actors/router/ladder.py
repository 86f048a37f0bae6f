"""Parallel tempering (replica exchange) in torch: many independent ladders batched on one device.

A ladder is R replicas of one problem (actors/router/problems.py) at temperatures T_0 < ... < T_{R-1}
(geometric by default); `n_ladders` ladders run side by side as one batch of B = n_ladders * R chains,
so a GPU advances thousands of chains per kernel launch and a CPU runs the same code. Each sweep is
one Metropolis update per chain at its replica's temperature, followed by neighbour swaps on
alternating even / odd pairs, accepted with min(1, exp((beta_i - beta_{i+1})(E_i - E_{i+1}))).

Reported: per-pair swap acceptance, per-temperature local acceptance, round trips (a walker going
from the coldest to the hottest temperature and back), the up-flow fraction per temperature, the
cold replica's observables per ladder, and the split Gelman-Rubin R-hat across ladders. During
burn-in the spacing adapts (`adapt`): every `adapt_every` sweeps the log-temperature gaps are
rescaled by 1/sqrt(-ln a_i) (equalising the swap acceptance, which for smooth energies falls like
exp(-c dbeta^2)), T_min and T_max fixed; after burn-in the ladder is frozen, so production samples
come from a fixed, valid Markov chain.

`simulated_annealing` runs the same problem's moves under a cooling schedule: the baseline PT is
compared with at an equal number of energy evaluations (proposals).

    cfg = LadderConfig(n_replicas=8, T_min=0.1, T_max=2.0, n_ladders=16, n_sweeps=5000, seed=0)
    res = run_ladder(DoubleWellProblem(), cfg)
    res.swap_acceptance, res.round_trips, res.rhat
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from actors.common.budget import checkpoint
from actors.common.config import Strict, WorkerConfig
from actors.common.errors import InputError
from actors.router.problems import AssignmentInstance, AssignmentProblem
from actors.router.schedules import geometric_ladder

__all__ = [
    "AnnealResult", "AssignmentResult", "LadderConfig", "LadderPoolSpec", "LadderResult", "anneal_assignment", "gelman_rubin",
    "resolve_device", "run_ladder", "simulated_annealing", "solve_assignment",
]

Device = Literal["auto", "cpu", "cuda"]
DType = Literal["float64", "float32"]


class LadderConfig(Strict):
    """One parallel-tempering run: the ladder, its length, where it runs and its seed."""

    n_replicas: int = Field(8, ge=1, le=512)
    T_min: float = Field(0.1, gt=0, le=1e12)
    T_max: float = Field(10.0, gt=0, le=1e12)
    n_ladders: int = Field(4, ge=1, le=1_000_000)
    n_sweeps: int = Field(1000, ge=1, le=100_000_000)
    burn_in: int = Field(200, ge=0, le=100_000_000)
    adapt: bool = True
    adapt_every: int = Field(50, ge=1, le=1_000_000)
    swap_every: int = Field(1, ge=1, le=1_000_000)
    record_every: int = Field(1, ge=1, le=1_000_000)
    record: Literal["cold", "all", "none"] = "cold"
    seed: int = Field(0, ge=0, le=2 ** 32 - 1)
    device: Device = "cpu"
    dtype: DType = "float64"

    @model_validator(mode="after")
    def _order(self) -> LadderConfig:
        if self.T_max < self.T_min:
            raise ValueError(f"T_max {self.T_max} is below T_min {self.T_min}")
        if self.burn_in >= self.n_sweeps and self.record != "none":
            raise ValueError(f"burn_in {self.burn_in} leaves no production sweeps of n_sweeps {self.n_sweeps}")
        return self

    def torch_dtype(self) -> torch.dtype:
        return torch.float64 if self.dtype == "float64" else torch.float32


class LadderPoolSpec(Strict):
    """Batch-assignment ladders on the ReplicaLadder pool (actors/router/pool.py): one task per
    (instance, seed); `ladder.device: auto` runs each task on its actor's device (its GPU, else CPU)."""

    name: str = Field("router-ladders", min_length=1, max_length=200)
    ladder: LadderConfig = Field(default_factory=lambda: LadderConfig(device="auto"))
    workers: WorkerConfig = Field(default_factory=WorkerConfig)
    inflight: int = Field(2, ge=1, le=64)


def resolve_device(device: str) -> str:
    """"auto" -> "cuda" where torch sees a GPU, else "cpu"; an unavailable "cuda" is an InputError."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("device", "CUDA was asked for but torch sees no GPU", "auto, cpu")
    if device not in ("cpu", "cuda"):
        raise InputError("device", f"unknown device {device!r}", "auto, cpu, cuda")
    return device


def gelman_rubin(chains) -> float:
    """Split R-hat (Gelman et al., BDA3 11.4) of chains [m, n]: each chain is halved, then
    sqrt(((n'-1)/n' W + B/n') / W) over the 2m halves. 1 means the chains agree."""
    x = np.asarray(chains, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 4:
        raise InputError("chains", f"need >= 2 chains of >= 4 draws, got shape {x.shape}", "[m >= 2, n >= 4]")
    half = x.shape[1] // 2
    x = np.concatenate([x[:, :half], x[:, half:2 * half]], axis=0)
    n = x.shape[1]
    means = x.mean(axis=1)
    W = x.var(axis=1, ddof=1).mean()
    B = n * means.var(ddof=1)
    if W == 0:
        return 1.0 if B == 0 else math.inf
    return float(math.sqrt(((n - 1) / n * W + B / n) / W))


@dataclass
class LadderResult:
    """What a ladder run measured (numpy arrays, float64)."""

    temperatures: np.ndarray            # [R] final ladder (after adaptation)
    initial_temperatures: np.ndarray    # [R]
    swap_acceptance: np.ndarray         # production sweeps, all ladders
    local_acceptance: np.ndarray        # [R]
    round_trips: np.ndarray             # [n_ladders]
    up_fraction: np.ndarray             # [R]
    samples: np.ndarray | None          # [n_records, n_ladders, R or 1, n_obs]
    rhat: list[float]                   # per observable, cold replica across ladders (nan if < 2 ladders)
    energy_evals: int
    wall_seconds: float
    device: str
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-able numbers (no samples)."""
        return {"temperatures": self.temperatures.tolist(), "swap_acceptance": self.swap_acceptance.tolist(),
                "local_acceptance": self.local_acceptance.tolist(), "round_trips": self.round_trips.tolist(),
                "up_fraction": self.up_fraction.tolist(), "rhat": self.rhat, "energy_evals": self.energy_evals,
                "wall_seconds": self.wall_seconds, "device": self.device, **self.extra}


def _adapted(T: np.ndarray, acc: np.ndarray, damping: float = 0.5) -> np.ndarray:
    """New ladder with the same ends whose log-T gaps move toward equal swap acceptance."""
    gaps = np.diff(np.log(T))
    a = np.clip(acc, 0.02, 0.98)
    target = gaps / np.sqrt(-np.log(a))
    new = gaps ** (1 - damping) * target ** damping
    new *= np.log(T[-1] / T[0]) / new.sum()
    return T[0] * np.exp(np.concatenate([[0.0], np.cumsum(new)]))


def run_ladder(problem, cfg: LadderConfig, *, temperatures=None) -> LadderResult:
    """Run `cfg.n_ladders` parallel-tempering ladders of `problem` (built on `cfg.device`)."""
    device = resolve_device(cfg.device)
    R, C = cfg.n_replicas, cfg.n_ladders
    if temperatures is not None:
        T = np.asarray(temperatures, dtype=np.float64)
        if T.shape != (R,) or not np.all(np.isfinite(T)) or np.any(T <= 0) or np.any(np.diff(T) < 0):
            raise InputError("temperatures", f"need {R} positive increasing temperatures", "increasing, > 0")
    else:
        T = geometric_ladder(cfg.T_min, cfg.T_max, R)
    T0 = T.copy()
    dtype = cfg.torch_dtype()
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    B = C * R
    state = problem.init(B, gen)
    E = problem.energy(state)
    betas = torch.as_tensor(1.0 / T, device=device, dtype=dtype)
    beta_b = betas.repeat(C)
    walker = torch.arange(R, device=device).repeat(C, 1)
    labels = torch.zeros(C, R, dtype=torch.int8, device=device)
    trips = torch.zeros(C, dtype=torch.long, device=device)
    base = (torch.arange(C, device=device) * R)[:, None]
    sw_att = torch.zeros(max(R - 1, 0), dtype=torch.float64, device=device)
    sw_acc = torch.zeros_like(sw_att)
    win_att, win_acc = torch.zeros_like(sw_att), torch.zeros_like(sw_att)
    loc_acc = torch.zeros(R, dtype=torch.float64, device=device)
    up_visits = torch.zeros(R, dtype=torch.float64, device=device)
    labelled = torch.zeros(R, dtype=torch.float64, device=device)
    records: list[torch.Tensor] = []
    n_swaps = 0
    t0 = time.perf_counter()

    for sweep in range(cfg.n_sweeps):
        production = sweep >= cfg.burn_in
        state, E, acc = problem.step(state, E, beta_b, gen)
        if production:
            loc_acc += acc.to(torch.float64).view(C, R).sum(dim=0)
        if R > 1 and (sweep + 1) % cfg.swap_every == 0:
            par = n_swaps % 2
            n_swaps += 1
            i = torch.arange(par, R - 1, 2, device=device)
            if i.numel():
                E2 = E.view(C, R)
                d = (betas[i] - betas[i + 1]) * (E2[:, i] - E2[:, i + 1])
                u = torch.rand(d.shape, generator=gen, device=device, dtype=dtype)
                ok = torch.log(u) < d
                perm = torch.arange(R, device=device).repeat(C, 1)
                perm[:, i] = torch.where(ok, i + 1, i)
                perm[:, i + 1] = torch.where(ok, i, i + 1)
                flat = (base + perm).view(-1)
                state = problem.take(state, flat)
                E = E[flat]
                walker = walker.gather(1, perm)
                okf = ok.to(torch.float64).sum(dim=0)
                if production:
                    sw_att[i] += C
                    sw_acc[i] += okf
                win_att[i] += C
                win_acc[i] += okf
            cold, hot = walker[:, :1], walker[:, -1:]
            trips += (labels.gather(1, cold)[:, 0] == 2).long() if production else 0
            labels.scatter_(1, cold, 1)
            labels.scatter_(1, hot, 2)
            if production:
                lab = labels.gather(1, walker)
                up_visits += (lab == 1).sum(dim=0)
                labelled += (lab > 0).sum(dim=0)
        if cfg.adapt and R > 2 and not production and (sweep + 1) % cfg.adapt_every == 0 and win_att.sum() > 0:
            a = (win_acc / win_att.clamp(min=1)).cpu().numpy()
            T = _adapted(T, a)
            betas = torch.as_tensor(1.0 / T, device=device, dtype=dtype)
            beta_b = betas.repeat(C)
            win_att.zero_()
            win_acc.zero_()
        if production and cfg.record != "none" and (sweep - cfg.burn_in) % cfg.record_every == 0:
            obs = problem.observables(state).view(C, R, -1)
            records.append(obs[:, :1] if cfg.record == "cold" else obs)
        if sweep % 256 == 0:
            checkpoint()

    if device == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    n_prod = cfg.n_sweeps - cfg.burn_in
    samples = torch.stack(records).to(torch.float64).cpu().numpy() if records else None
    rhat: list[float] = []
    if samples is not None and C >= 2 and samples.shape[0] >= 4:
        rhat = [gelman_rubin(samples[:, :, 0, j].T) for j in range(samples.shape[-1])]
    return LadderResult(
        temperatures=T, initial_temperatures=T0,
        swap_acceptance=(sw_acc / sw_att.clamp(min=1)).cpu().numpy(),
        local_acceptance=(loc_acc / max(C * n_prod, 1)).cpu().numpy(),
        round_trips=trips.cpu().numpy(), up_fraction=(up_visits / labelled.clamp(min=1)).cpu().numpy(),
        samples=samples, rhat=rhat, energy_evals=int(B * cfg.n_sweeps * problem.sweep_size),
        wall_seconds=wall, device=device)


# ------------------------------------------------------------------------- annealing baseline
@dataclass
class AnnealResult:
    """Simulated annealing: final energies per chain, evaluations, wall time."""

    final_energy: np.ndarray
    energy_evals: int
    wall_seconds: float
    device: str


def simulated_annealing(problem, temperatures, n_chains: int, *, seed: int = 0, device: str = "cpu",
                        dtype: torch.dtype = torch.float64) -> AnnealResult:
    """`n_chains` independent chains, sweep t at temperature temperatures[t] (e.g. exponential_schedule)."""
    device = resolve_device(device)
    T = np.asarray(temperatures, dtype=np.float64)
    if T.ndim != 1 or T.size == 0 or not np.all(np.isfinite(T)) or np.any(T <= 0):
        raise InputError("temperatures", "need a non-empty schedule of positive temperatures", "> 0")
    gen = torch.Generator(device=device).manual_seed(seed)
    state = problem.init(n_chains, gen)
    E = problem.energy(state)
    t0 = time.perf_counter()
    for t, temp in enumerate(T):
        beta = torch.full((n_chains,), 1.0 / temp, device=device, dtype=dtype)
        state, E, _ = problem.step(state, E, beta, gen)
        if t % 256 == 0:
            checkpoint()
    if device == "cuda":
        torch.cuda.synchronize()
    return AnnealResult(final_energy=E.cpu().numpy(), energy_evals=int(n_chains * T.size * problem.sweep_size),
                        wall_seconds=time.perf_counter() - t0, device=device)


# ------------------------------------------------------------------------- batch assignment
@dataclass
class AssignmentResult:
    """Best feasible assignment found (objective = sum of costs) and how it was found."""

    objective: float
    assignment: np.ndarray      # [N] engine per request (-1 if nothing feasible was found)
    feasible: bool
    energy_evals: int
    wall_seconds: float
    method: str
    ladder: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"objective": self.objective, "assignment": self.assignment.tolist(), "feasible": self.feasible,
                "energy_evals": self.energy_evals, "wall_seconds": self.wall_seconds, "method": self.method,
                "ladder": self.ladder}


def _best(problem: AssignmentProblem, inst: AssignmentInstance) -> tuple[float, np.ndarray, bool]:
    best = problem.best_obj.cpu().numpy()
    j = int(np.argmin(best))
    if not np.isfinite(best[j]):
        return math.inf, np.full(inst.shape[0], -1), False
    a = problem.best_assign[j].cpu().numpy()
    obj, ok = inst.evaluate(a)       # recomputed in float64 from scratch
    return obj, a, ok


def solve_assignment(inst: AssignmentInstance, cfg: LadderConfig, **problem_kw) -> AssignmentResult:
    """Batch assignment by parallel tempering: the best feasible assignment over all chains and sweeps."""
    device = resolve_device(cfg.device)
    problem = AssignmentProblem(inst, device=device, dtype=cfg.torch_dtype(), **problem_kw)
    res = run_ladder(problem, cfg.model_copy(update={"device": device}))
    obj, a, ok = _best(problem, inst)
    return AssignmentResult(objective=obj, assignment=a, feasible=ok, energy_evals=res.energy_evals,
                            wall_seconds=res.wall_seconds, method="parallel tempering",
                            ladder={k: v for k, v in res.summary().items() if k not in ("energy_evals", "wall_seconds")})


def anneal_assignment(inst: AssignmentInstance, *, n_chains: int, n_sweeps: int, T0: float, T_end: float,
                      seed: int = 0, device: str = "cpu", **problem_kw) -> AssignmentResult:
    """Batch assignment by simulated annealing (exponential cooling T0 -> T_end over n_sweeps)."""
    from actors.router.schedules import exponential_schedule

    device = resolve_device(device)
    if not (T_end > 0 and T0 >= T_end):
        raise InputError("T_end", f"need 0 < T_end <= T0, got T0={T0}, T_end={T_end}", "> 0 and <= T0")
    problem = AssignmentProblem(inst, device=device, **problem_kw)
    gamma = math.log(T0 / T_end) / max(n_sweeps - 1, 1)
    sched = exponential_schedule(T0, gamma, n_sweeps - 1) if n_sweeps > 1 else np.array([T_end])
    res = simulated_annealing(problem, sched, n_chains, seed=seed, device=device)
    obj, a, ok = _best(problem, inst)
    return AssignmentResult(objective=obj, assignment=a, feasible=ok, energy_evals=res.energy_evals,
                            wall_seconds=res.wall_seconds, method="simulated annealing")
