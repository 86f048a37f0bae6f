"""Energy landscapes the replica ladders sample (torch, batched over chains; no Ray).

Every problem holds its state as a tuple of tensors whose first axis is the chain (B = ladders x
replicas) and offers: `init(B, gen)`, `energy(state) -> [B]`, `step(state, E, beta, gen) -> (state, E,
accepted)` (one Metropolis update per chain at inverse temperature beta[B]; `sweep_size` proposals,
the unit of "energy evaluations"), `take(state, idx)` (reorder chains: replica swaps) and
`observables(state) -> [B, n_obs]`.

- CategoricalProblem   K states with given energies (the exact Boltzmann check: TV vs boltzmann()).
- IsingProblem         L x L periodic Ising, checkerboard Metropolis (exact enumeration for L = 4).
- DoubleWellProblem    E(x) = h (x^2 - 1)^2 + tilt x (where a single cold chain cannot cross).
- AssignmentProblem    N requests to K engines: sum of per-pair energies, per-engine capacity and a
                       money budget as exact penalties; the ladder reports the best feasible assignment.
                       `assignment_milp` solves small instances exactly (scipy.optimize.milp) and
                       `random_assignment` makes seeded instances whose capacity and budget both bind.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from actors.common.errors import InputError
from actors.router.checks import finite_array, positive_int

__all__ = [
    "AssignmentInstance", "AssignmentProblem", "CategoricalProblem", "DoubleWellProblem", "IsingProblem",
    "assignment_milp", "ising_exact", "random_assignment",
]

State = tuple[torch.Tensor, ...]


def _metropolis(dE: torch.Tensor, beta: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """accept with probability min(1, exp(-beta dE)) (log-uniform form: no overflow)."""
    u = torch.rand(dE.shape, generator=gen, device=dE.device, dtype=dE.dtype)
    return torch.log(u) < -beta * dE


class CategoricalProblem:
    """One of K states with energies `levels`; proposals pick any other state uniformly."""

    def __init__(self, levels, *, device: str = "cpu", dtype: torch.dtype = torch.float64):
        lv = finite_array(levels, "levels", ndim=1)
        if lv.size == 0:
            raise InputError("K", "no states", ">= 1")
        self.levels = torch.as_tensor(lv, device=device, dtype=dtype)
        self.k, self.sweep_size = lv.size, 1
        self.device, self.dtype = device, dtype

    def init(self, n: int, gen: torch.Generator) -> State:
        return (torch.randint(0, self.k, (n,), generator=gen, device=self.device),)

    def energy(self, state: State) -> torch.Tensor:
        return self.levels[state[0]]

    def step(self, state: State, E: torch.Tensor, beta: torch.Tensor, gen: torch.Generator):
        s = state[0]
        if self.k == 1:
            return state, E, torch.zeros_like(E, dtype=torch.bool)
        new = (s + torch.randint(1, self.k, s.shape, generator=gen, device=self.device)) % self.k
        dE = self.levels[new] - E
        acc = _metropolis(dE, beta, gen)
        return (torch.where(acc, new, s),), torch.where(acc, E + dE, E), acc

    def take(self, state: State, idx: torch.Tensor) -> State:
        return (state[0][idx],)

    def observables(self, state: State) -> torch.Tensor:
        return state[0][:, None].to(self.dtype)


class IsingProblem:
    """E = -J sum_<ij> s_i s_j - h sum_i s_i on an L x L periodic lattice (L even); one step is a
    checkerboard sweep (all black sites, then all white: L*L proposals). Observables: E, M."""

    def __init__(self, L: int = 4, J: float = 1.0, h: float = 0.0, *, device: str = "cpu",
                 dtype: torch.dtype = torch.float64):
        self.L = positive_int(L, "L", minimum=2)
        if self.L % 2:
            raise InputError("L", "the checkerboard update needs an even L", "even integers >= 2")
        self.J, self.h = float(J), float(h)
        self.sweep_size = self.L * self.L
        self.device, self.dtype = device, dtype
        ij = torch.arange(self.L, device=device)
        self.colour = ((ij[:, None] + ij[None, :]) % 2).to(torch.bool)

    def init(self, n: int, gen: torch.Generator) -> State:
        s = torch.randint(0, 2, (n, self.L, self.L), generator=gen, device=self.device).to(self.dtype) * 2 - 1
        return (s,)

    def _nb(self, s: torch.Tensor) -> torch.Tensor:
        return (torch.roll(s, 1, 1) + torch.roll(s, -1, 1) + torch.roll(s, 1, 2) + torch.roll(s, -1, 2))

    def energy(self, state: State) -> torch.Tensor:
        s = state[0]
        bonds = (s * torch.roll(s, 1, 1) + s * torch.roll(s, 1, 2)).sum(dim=(1, 2))
        return -self.J * bonds - self.h * s.sum(dim=(1, 2))

    def step(self, state: State, E: torch.Tensor, beta: torch.Tensor, gen: torch.Generator):
        s = state[0]
        n_acc = torch.zeros(s.shape[0], device=self.device, dtype=self.dtype)
        for c in (False, True):
            dE = 2 * s * (self.J * self._nb(s) + self.h)          # flipping s_i
            acc = _metropolis(dE, beta[:, None, None], gen) & (self.colour == c)
            s = torch.where(acc, -s, s)
            E = E + (dE * acc).sum(dim=(1, 2))
            n_acc = n_acc + acc.sum(dim=(1, 2))
        return (s,), E, n_acc / self.sweep_size

    def take(self, state: State, idx: torch.Tensor) -> State:
        return (state[0][idx],)

    def observables(self, state: State) -> torch.Tensor:
        s = state[0]
        return torch.stack([self.energy(state), s.sum(dim=(1, 2))], dim=1)


def ising_exact(L: int, T: float, J: float = 1.0, h: float = 0.0) -> dict[str, float]:
    """<E>, <E^2>, <|M|>, <M^2> by enumerating all 2^(L*L) states in float64 (L <= 4)."""
    if L * L > 20:
        raise InputError("L", "exact enumeration is limited to 2^20 states", "L*L <= 20")
    n = L * L
    codes = np.arange(2 ** n, dtype=np.int64)
    s = (((codes[:, None] >> np.arange(n)) & 1) * 2 - 1).astype(np.float64).reshape(-1, L, L)
    bonds = (s * np.roll(s, 1, 1) + s * np.roll(s, 1, 2)).sum(axis=(1, 2))
    M = s.sum(axis=(1, 2))
    E = -J * bonds - h * M
    a = -E / T
    w = np.exp(a - a.max())
    p = w / w.sum()
    return {"E": float(p @ E), "E2": float(p @ E ** 2), "absM": float(p @ np.abs(M)), "M2": float(p @ M ** 2)}


class DoubleWellProblem:
    """E(x) = h (x^2 - 1)^2 + tilt x; Gaussian random-walk proposals of scale step*sqrt(T) clipped to
    [step_min, step_max] (symmetric for each temperature slot). Observable: x."""

    def __init__(self, h: float = 2.0, tilt: float = 0.0, *, step: float = 0.8, step_min: float = 0.05,
                 step_max: float = 1.5, init_spread: float = 1.5, device: str = "cpu",
                 dtype: torch.dtype = torch.float64):
        self.h, self.tilt = float(h), float(tilt)
        self.step_, self.step_min, self.step_max = float(step), float(step_min), float(step_max)
        self.init_spread = float(init_spread)
        self.sweep_size = 1
        self.device, self.dtype = device, dtype

    def _E(self, x: torch.Tensor) -> torch.Tensor:
        return self.h * (x * x - 1) ** 2 + self.tilt * x

    def init(self, n: int, gen: torch.Generator) -> State:
        u = torch.rand(n, generator=gen, device=self.device, dtype=self.dtype)
        return ((2 * u - 1) * self.init_spread,)

    def energy(self, state: State) -> torch.Tensor:
        return self._E(state[0])

    def step(self, state: State, E: torch.Tensor, beta: torch.Tensor, gen: torch.Generator):
        x = state[0]
        sigma = (self.step_ / torch.sqrt(beta)).clamp(self.step_min, self.step_max)
        new = x + sigma * torch.randn(x.shape, generator=gen, device=self.device, dtype=self.dtype)
        En = self._E(new)
        acc = _metropolis(En - E, beta, gen)
        return (torch.where(acc, new, x),), torch.where(acc, En, E), acc

    def take(self, state: State, idx: torch.Tensor) -> State:
        return (state[0][idx],)

    def observables(self, state: State) -> torch.Tensor:
        return state[0][:, None]


# ------------------------------------------------------------------------------------------ assignment
@dataclass(frozen=True)
class AssignmentInstance:
    """N requests to K engines: cost[N, K] (routing energy, e.g. energies()), money[N, K] >= 0 (what a
    call costs), capacity[K] (requests an engine may take) and budget (total money; inf = none)."""

    cost: np.ndarray
    money: np.ndarray
    capacity: np.ndarray
    budget: float = math.inf

    def __post_init__(self) -> None:
        cost = finite_array(self.cost, "cost", ndim=2)
        n, k = cost.shape
        if k == 0:
            raise InputError("K", "no engines (cost has 0 columns)", ">= 1")
        if n == 0:
            raise InputError("N", "no requests (cost has 0 rows)", ">= 1")
        money = finite_array(self.money, "money", ndim=2, shape=(n, k), nonnegative=True)
        cap = finite_array(self.capacity, "capacity", ndim=1, shape=(k,), nonnegative=True)
        if np.any(cap != np.round(cap)):
            raise InputError("capacity", "capacities must be whole numbers of requests", "integers >= 0")
        if cap.sum() < n:
            raise InputError("capacity", f"total capacity {int(cap.sum())} < {n} requests", f"sum >= {n}")
        b = float(self.budget)
        if math.isnan(b) or b < 0:
            raise InputError("budget", f"{self.budget!r} is not a non-negative amount", ">= 0")
        if money.min(axis=1).sum() > b:
            raise InputError("budget", f"{b} is below the cheapest possible spend {money.min(axis=1).sum():.6g}",
                             f">= {money.min(axis=1).sum():.6g}")
        object.__setattr__(self, "cost", cost)
        object.__setattr__(self, "money", money)
        object.__setattr__(self, "capacity", cap.astype(np.int64))
        object.__setattr__(self, "budget", b)

    @property
    def shape(self) -> tuple[int, int]:
        return self.cost.shape

    def evaluate(self, assign) -> tuple[float, bool]:
        """(sum of costs, feasible) of one assignment [N] (float64, from scratch)."""
        a = np.asarray(assign, dtype=np.int64)
        rows = np.arange(a.size)
        load = np.bincount(a, minlength=self.shape[1])
        ok = bool(np.all(load <= self.capacity) and self.money[rows, a].sum() <= self.budget * (1 + 1e-12) + 1e-12)
        return float(self.cost[rows, a].sum()), ok


def random_assignment(n: int, k: int, seed: int, *, slack: float = 1.15, budget_level: float = 0.5) -> AssignmentInstance:
    """A seeded router-like instance: engines from cheap/weak to dear/strong, requests of varying
    difficulty; cost = price - 3 * quality; capacity ceil(slack N / K) each; budget at `budget_level`
    between the cheapest spend and the spend of the unconstrained per-request argmin, so it binds."""
    n, k = positive_int(n, "N"), positive_int(k, "K")
    rng = np.random.default_rng(seed)
    strength = np.linspace(0.0, 1.0, k)
    price = 0.2 + 2.0 * strength ** 1.5
    difficulty = rng.random(n)
    quality = 1 / (1 + np.exp(-(4 * (strength[None, :] - difficulty[:, None]) + rng.normal(0, 0.5, (n, k)))))
    tokens = rng.uniform(0.5, 1.5, n)
    money = price[None, :] * tokens[:, None]
    cost = money - 3.0 * quality
    cap = np.full(k, math.ceil(slack * n / k))
    lo = money[np.arange(n), _transport_argmin(money, cap)].sum()     # cheapest spend within capacity
    hi = money[np.arange(n), _transport_argmin(cost, cap)].sum()      # spend of the best plan ignoring money
    return AssignmentInstance(cost=cost, money=money, capacity=cap, budget=float(lo + budget_level * max(hi - lo, 0)))


def _transport_argmin(weights: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """argmin of sum weights[n, a_n] under per-engine capacity: a transportation LP, whose vertices are
    integral (totally unimodular), solved by scipy's HiGHS."""
    from scipy.optimize import linprog
    from scipy.sparse import csr_matrix, kron

    n, k = weights.shape
    res = linprog(weights.ravel(), A_ub=kron(np.ones((1, n)), csr_matrix(np.eye(k))), b_ub=cap,
                  A_eq=kron(csr_matrix(np.eye(n)), np.ones((1, k))), b_eq=np.ones(n), bounds=(0, 1), method="highs")
    return res.x.reshape(n, k).argmax(axis=1)


def assignment_milp(inst: AssignmentInstance, time_limit: float = 60.0) -> tuple[float, np.ndarray]:
    """The exact optimum (objective, assignment [N]) by scipy.optimize.milp (HiGHS branch and bound)."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import csr_matrix, kron

    n, k = inst.shape
    one_per_request = kron(csr_matrix(np.eye(n)), np.ones((1, k)))      # x[n, :] sums to 1
    per_engine = kron(np.ones((1, n)), csr_matrix(np.eye(k)))           # column loads
    cons = [LinearConstraint(one_per_request, 1, 1), LinearConstraint(per_engine, 0, inst.capacity)]
    if math.isfinite(inst.budget):
        cons.append(LinearConstraint(csr_matrix(inst.money.reshape(1, -1)), 0, inst.budget))
    res = milp(inst.cost.ravel(), constraints=cons, integrality=np.ones(n * k), bounds=Bounds(0, 1),
               options={"time_limit": time_limit, "mip_rel_gap": 1e-9})
    if res.x is None or res.status != 0:
        raise InputError("instance", f"milp found no optimum: {res.message}")
    x = np.round(res.x).reshape(n, k)
    return float(inst.cost.ravel() @ x.ravel()), x.argmax(axis=1)


class AssignmentProblem:
    """Assignment energy E = sum_n cost[n, a_n] + lam_cap * sum_k max(0, load_k - cap_k)
    + lam_budget * max(0, spend - budget). Moves: reassign one request (prob 1 - p_swap) or exchange the
    engines of two requests (keeps loads: the move that stays feasible when capacity is tight). The
    penalties default to values that make any constraint violation cost more than the largest cost gain
    a single move can make, so the low-energy states are feasible; `best` keeps the best feasible one."""

    def __init__(self, inst: AssignmentInstance, *, lam_cap: float | None = None, lam_budget: float | None = None,
                 p_swap: float = 0.5, device: str = "cpu", dtype: torch.dtype = torch.float64):
        self.inst = inst
        n, k = inst.shape
        self.n, self.k, self.sweep_size = n, k, 1     # one proposal per chain per step
        spread = float(np.ptp(inst.cost, axis=1).max()) if k > 1 else 1.0
        dm = float(np.ptp(inst.money, axis=1)[np.ptp(inst.money, axis=1) > 0].min()) if np.any(np.ptp(inst.money, axis=1) > 0) else 1.0
        self.lam_cap = float(lam_cap) if lam_cap is not None else 2 * spread + 1.0
        self.lam_budget = float(lam_budget) if lam_budget is not None else (2 * spread + 1.0) / dm
        if not (0 <= p_swap <= 1):
            raise InputError("p_swap", f"{p_swap} is out of range", ">= 0 and <= 1")
        self.p_swap = float(p_swap) if n > 1 else 0.0
        self.device, self.dtype = device, dtype
        self.cost = torch.as_tensor(inst.cost, device=device, dtype=dtype)
        self.money = torch.as_tensor(inst.money, device=device, dtype=dtype)
        self.cap = torch.as_tensor(inst.capacity, device=device)
        self.budget = float(inst.budget)
        self.best_obj: torch.Tensor | None = None
        self.best_assign: torch.Tensor | None = None

    # state: (assign [B, N] long, load [B, K] long, spend [B], objective [B])
    def _state(self, a: torch.Tensor) -> State:
        load = torch.zeros(a.shape[0], self.k, dtype=torch.long, device=self.device)
        load.scatter_add_(1, a, torch.ones_like(a))
        rows = torch.arange(self.n, device=self.device)
        return a, load, self.money[rows, a].sum(dim=1), self.cost[rows, a].sum(dim=1)

    def init(self, n: int, gen: torch.Generator) -> State:
        a = torch.randint(0, self.k, (n, self.n), generator=gen, device=self.device)
        state = self._state(a)
        self.best_obj = torch.full((n,), math.inf, device=self.device, dtype=self.dtype)
        self.best_assign = a.clone()
        self._track(state)
        return state

    def _excess(self, spend: torch.Tensor) -> torch.Tensor:
        return (spend - self.budget).clamp(min=0) if math.isfinite(self.budget) else torch.zeros_like(spend)

    def _feasible(self, state: State) -> torch.Tensor:
        _, load, spend, _ = state
        ok = (load <= self.cap).all(dim=1)
        if math.isfinite(self.budget):
            ok &= spend <= self.budget * (1 + 1e-12) + 1e-12
        return ok

    def energy(self, state: State) -> torch.Tensor:
        _, load, spend, obj = state
        over = (load - self.cap).clamp(min=0).sum(dim=1).to(self.dtype)
        return obj + self.lam_cap * over + self.lam_budget * self._excess(spend)

    def _track(self, state: State) -> None:
        a, _, _, obj = state
        better = self._feasible(state) & (obj < self.best_obj)
        self.best_obj = torch.where(better, obj, self.best_obj)
        self.best_assign = torch.where(better[:, None], a, self.best_assign)

    def step(self, state: State, E: torch.Tensor, beta: torch.Tensor, gen: torch.Generator):
        a, load, spend, obj = state
        B = a.shape[0]
        dev = self.device
        rows = torch.arange(B, device=dev)
        n1 = torch.randint(0, self.n, (B,), generator=gen, device=dev)
        n2 = torch.randint(0, self.n, (B,), generator=gen, device=dev)
        k1, k2 = a[rows, n1], a[rows, n2]
        swap = torch.rand(B, generator=gen, device=dev) < self.p_swap
        # reassign n1 to a uniformly chosen other engine
        kn = (k1 + torch.randint(1, max(self.k, 2), (B,), generator=gen, device=dev)) % self.k
        d_obj_r = self.cost[n1, kn] - self.cost[n1, k1]
        d_spend_r = self.money[n1, kn] - self.money[n1, k1]
        over_old_k1 = (load[rows, k1] > self.cap[k1]).to(self.dtype)     # leaving k1 removes one overflow
        over_new_kn = (load[rows, kn] >= self.cap[kn]).to(self.dtype)    # joining kn adds one
        d_over_r = over_new_kn - over_old_k1
        # exchange the engines of n1 and n2
        d_obj_s = self.cost[n1, k2] + self.cost[n2, k1] - self.cost[n1, k1] - self.cost[n2, k2]
        d_spend_s = self.money[n1, k2] + self.money[n2, k1] - self.money[n1, k1] - self.money[n2, k2]
        d_obj = torch.where(swap, d_obj_s, d_obj_r)
        d_spend = torch.where(swap, d_spend_s, d_spend_r)
        d_over = torch.where(swap, torch.zeros_like(d_over_r), d_over_r)
        if self.k == 1:
            d_obj = torch.where(swap, d_obj, torch.zeros_like(d_obj))
        dE = d_obj + self.lam_cap * d_over + self.lam_budget * (self._excess(spend + d_spend) - self._excess(spend))
        acc = _metropolis(dE, beta, gen)
        if self.k == 1:
            acc &= swap
        acc_r, acc_s = acc & ~swap, acc & swap
        new_a = a.clone()
        new_a[rows, n1] = torch.where(acc_r, kn, torch.where(acc_s, k2, k1))
        new_a[rows, n2] = torch.where(acc_s, k1, new_a[rows, n2])
        new_load = load.clone()
        one = acc_r.long()
        new_load[rows, k1] -= one
        new_load[rows, kn] += one
        zero = torch.zeros_like(d_obj)
        state = (new_a, new_load, spend + torch.where(acc, d_spend, zero), obj + torch.where(acc, d_obj, zero))
        self._track(state)
        return state, torch.where(acc, E + dE, E), acc

    def take(self, state: State, idx: torch.Tensor) -> State:
        return tuple(t[idx] for t in state)

    def observables(self, state: State) -> torch.Tensor:
        return torch.stack([state[3], state[2]], dim=1)

    def resync(self, state: State) -> State:
        """Recompute loads, spend and objective from the assignment (clears float drift)."""
        return self._state(state[0])
