"""Temperature schedules for Boltzmann routing and replica ladders (re-exported by boltzmann.py).

- exponential      T_k = T0 exp(-gamma k dt)                       (the deterministic limit of the SDE)
- logarithmic      T_k = T0 ln(k0) / ln(k + k0)                    (Geman & Geman / Hajek cooling)
- adaptive         Robbins-Monro on ln T toward a target acceptance rate:
                   ln T <- ln T + gain (k+1)^-decay (target - accepted)
- Fokker-Planck    dT = -gamma T dt + eta sqrt(T) dW (a CIR process with zero mean level), seeded paths,
                   exact transition sampling (Poisson-Gamma mixture = the noncentral chi-square of
                   zero degrees of freedom; 0 is absorbing) or full-truncation Euler; its Fokker-Planck
                   moments E[T_t] = T0 e^{-gamma t}, Var[T_t] = eta^2 T0 (e^{-gamma t} - e^{-2 gamma t}) / gamma
- replica exchange a geometric ladder T_i = T_min (T_max/T_min)^{i/(R-1)}, neighbour swaps accepted with
                   min(1, exp((beta_i - beta_j)(E_i - E_j))), per-pair acceptance and round trips
                   (the numpy reference of what ladder.py runs batched in torch)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from actors.common.errors import InputError
from actors.router.checks import finite_array, positive_int

__all__ = [
    "AdaptiveSchedule", "SwapStats", "exponential_schedule", "fokker_planck_moments", "fokker_planck_paths",
    "geometric_ladder", "logarithmic_schedule", "replica_exchange_schedule", "swap_probability",
]


def _positive(value, field_name: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(field_name, f"{value!r} is not a number", ">= 0" if allow_zero else "> 0")
    v = float(value)
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise InputError(field_name, f"{value!r} is out of range", ">= 0" if allow_zero else "> 0")
    return v


def exponential_schedule(T0: float, gamma: float, n_steps: int, dt: float = 1.0) -> np.ndarray:
    """T_k = T0 exp(-gamma k dt) for k = 0..n_steps (geometric cooling by e^{-gamma dt} per step)."""
    T0, gamma, dt = _positive(T0, "T0"), _positive(gamma, "gamma", allow_zero=True), _positive(dt, "dt")
    k = np.arange(positive_int(n_steps, "n_steps", minimum=0) + 1)
    return T0 * np.exp(-gamma * dt * k)


def logarithmic_schedule(T0: float, n_steps: int, k0: float = 2.0) -> np.ndarray:
    """T_k = T0 ln(k0) / ln(k + k0) for k = 0..n_steps: slow enough for annealing to converge in
    probability to the ground states when T0 ln(k0) exceeds the deepest local-minimum depth (Hajek)."""
    T0 = _positive(T0, "T0")
    k0 = _positive(k0, "k0")
    if k0 <= 1:
        raise InputError("k0", f"{k0} must exceed 1 (ln k0 > 0)", "> 1")
    k = np.arange(positive_int(n_steps, "n_steps", minimum=0) + 1)
    return T0 * np.log(k0) / np.log(k + k0)


class AdaptiveSchedule:
    """A temperature that tunes itself to a target Metropolis acceptance rate (Robbins-Monro on ln T).

    Each `update(accepted)` (a 0/1 outcome or a rate) moves ln T by gain (k+1)^-decay (target - accepted):
    below target the temperature rises, above it falls. With 1/2 < decay <= 1 the steps satisfy the
    Robbins-Monro conditions and T_k converges to T* with acceptance(T*) = target when acceptance is
    increasing in T. `average` is the Polyak average of ln T since `burn_in` (lower variance).
    """

    def __init__(self, T0: float, target: float, *, gain: float = 1.0, decay: float = 0.7,
                 T_min: float = 1e-8, T_max: float = 1e8, burn_in: int = 0):
        self.T0 = _positive(T0, "T0")
        if not (np.isfinite(target) and 0 < target < 1):
            raise InputError("target", f"{target!r} is out of range", "> 0 and < 1")
        if not (np.isfinite(decay) and 0.5 < decay <= 1):
            raise InputError("decay", f"{decay!r} is out of range", "> 0.5 and <= 1")
        self.target, self.gain, self.decay = float(target), _positive(gain, "gain"), float(decay)
        self.T_min, self.T_max = _positive(T_min, "T_min"), _positive(T_max, "T_max")
        if not self.T_min <= self.T0 <= self.T_max:
            raise InputError("T0", f"{T0} is outside [T_min, T_max]", f">= {T_min} and <= {T_max}")
        self.burn_in = positive_int(burn_in, "burn_in", minimum=0)
        self.k = 0
        self.log_T = np.log(self.T0)
        self._sum, self._n = 0.0, 0

    @property
    def T(self) -> float:
        return float(np.exp(self.log_T))

    @property
    def average(self) -> float:
        """exp of the mean ln T over the updates after burn_in (T itself before any)."""
        return float(np.exp(self._sum / self._n)) if self._n else self.T

    def update(self, accepted: float) -> float:
        """Feed one acceptance outcome (0/1) or rate in [0, 1]; returns the new temperature."""
        a = float(accepted)
        if not (np.isfinite(a) and 0 <= a <= 1):
            raise InputError("accepted", f"{accepted!r} is not in [0, 1]", ">= 0 and <= 1")
        step = self.gain * (self.k + 1) ** (-self.decay)
        self.log_T = float(np.clip(self.log_T + step * (self.target - a), np.log(self.T_min), np.log(self.T_max)))
        self.k += 1
        if self.k > self.burn_in:
            self._sum += self.log_T
            self._n += 1
        return self.T


def fokker_planck_moments(T0: float, gamma: float, eta: float, t) -> tuple[np.ndarray, np.ndarray]:
    """Exact mean and variance of dT = -gamma T dt + eta sqrt(T) dW at times t (from the Fokker-Planck
    equation's moment hierarchy: m1' = -gamma m1, m2' = -2 gamma m2 + eta^2 m1)."""
    T0, gamma, eta = _positive(T0, "T0", allow_zero=True), _positive(gamma, "gamma"), _positive(eta, "eta", allow_zero=True)
    t = finite_array(t, "t", nonnegative=True)
    mean = T0 * np.exp(-gamma * t)
    var = eta ** 2 * T0 * (np.exp(-gamma * t) - np.exp(-2 * gamma * t)) / gamma
    return mean, var


def fokker_planck_paths(T0: float, gamma: float, eta: float, n_steps: int, dt: float, n_paths: int = 1, *,
                        seed: int = 0, method: str = "exact") -> np.ndarray:
    """Seeded paths [n_paths, n_steps + 1] of dT = -gamma T dt + eta sqrt(T) dW from T0.

    method "exact": the CIR transition over dt is c * Gamma(N, 2) with N ~ Poisson(lambda / 2),
    c = eta^2 (1 - e^{-gamma dt}) / (4 gamma), lambda = T e^{-gamma dt} / c (zero when N = 0: the
    temperature can freeze at 0, as the SDE does). "euler": full-truncation Euler-Maruyama (bias O(dt)).
    """
    T0, gamma, dt = _positive(T0, "T0", allow_zero=True), _positive(gamma, "gamma"), _positive(dt, "dt")
    eta = _positive(eta, "eta", allow_zero=True)
    n_steps = positive_int(n_steps, "n_steps", minimum=0)
    n_paths = positive_int(n_paths, "n_paths")
    if method not in ("exact", "euler"):
        raise InputError("method", f"unknown method {method!r}", "exact, euler")
    rng = np.random.default_rng(seed)
    out = np.empty((n_paths, n_steps + 1))
    out[:, 0] = T0
    decay = np.exp(-gamma * dt)
    if eta == 0:
        return T0 * decay ** np.arange(n_steps + 1)[None, :].repeat(n_paths, axis=0)
    c = eta ** 2 * (1 - decay) / (4 * gamma)
    T = np.full(n_paths, T0)
    for k in range(1, n_steps + 1):
        if method == "exact":
            shape = rng.poisson(T * decay / (2 * c))
            T = c * np.where(shape > 0, rng.gamma(np.maximum(shape, 1), 2.0), 0.0)
        else:
            Tp = np.maximum(T, 0.0)
            T = T - gamma * Tp * dt + eta * np.sqrt(Tp * dt) * rng.standard_normal(n_paths)
        out[:, k] = np.maximum(T, 0.0) if method == "euler" else T
    return out


def geometric_ladder(T_min: float, T_max: float, n: int) -> np.ndarray:
    """T_i = T_min (T_max / T_min)^{i / (n-1)}, i = 0..n-1 (constant ratio between neighbours)."""
    T_min, T_max = _positive(T_min, "T_min"), _positive(T_max, "T_max")
    n = positive_int(n, "n_replicas", minimum=1)
    if T_max < T_min:
        raise InputError("T_max", f"{T_max} is below T_min {T_min}", f">= {T_min}")
    if n == 1:
        return np.array([T_min])
    return T_min * (T_max / T_min) ** (np.arange(n) / (n - 1))


def swap_probability(beta_i, beta_j, E_i, E_j) -> np.ndarray:
    """Metropolis acceptance of exchanging the configurations of two replicas: min(1, e^{(b_i-b_j)(E_i-E_j)})."""
    x = (np.asarray(beta_i, dtype=np.float64) - beta_j) * (np.asarray(E_i, dtype=np.float64) - E_j)
    return np.exp(np.minimum(x, 0.0))


@dataclass
class SwapStats:
    """Per neighbour pair (i, i+1): swap attempts and acceptances; round trips of replicas between the
    coldest and hottest temperature; `up_fraction[i]`: share of visits to T_i by replicas last seen at
    the coldest end (the flow used for feedback-optimised spacing)."""

    attempts: np.ndarray
    accepts: np.ndarray
    round_trips: int = 0
    up_visits: np.ndarray = field(default_factory=lambda: np.zeros(0))
    labelled_visits: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def acceptance(self) -> np.ndarray:
        return self.accepts / np.maximum(self.attempts, 1)

    @property
    def up_fraction(self) -> np.ndarray:
        return self.up_visits / np.maximum(self.labelled_visits, 1)


class _RoundTrips:
    """Tracks which temperature each walker sits at and counts cold -> hot -> cold round trips."""

    def __init__(self, n: int):
        self.n = n
        self.label = np.zeros(n, dtype=np.int8)     # per walker: 0 none, 1 up (last end: cold), 2 down (hot)
        self.trips = 0
        self.up_visits = np.zeros(n)
        self.labelled = np.zeros(n)

    def visit(self, walker_at: np.ndarray) -> None:
        """walker_at[i] = walker at temperature i."""
        cold, hot = walker_at[0], walker_at[-1]
        if self.label[cold] == 2:
            self.trips += 1
        self.label[cold] = 1
        if self.n > 1:
            self.label[hot] = 2
        lab = self.label[walker_at]
        self.up_visits += lab == 1
        self.labelled += lab > 0


def replica_exchange_schedule(energies, betas, *, seed: int = 0) -> tuple[np.ndarray, SwapStats]:
    """Replay neighbour swaps on given replica energies [n_rounds, R] (energies[t, i] is the energy at
    temperature i in round t, e.g. fresh samples); even pairs on even rounds, odd pairs on odd rounds.

    Returns (walker_at [n_rounds + 1, R]: which walker holds temperature i after each round, stats).
    With independent exact samples per round, stats.acceptance[i] estimates
    E[min(1, exp((b_i - b_{i+1})(E_i - E_{i+1})))] under the product of the two Boltzmann distributions.
    """
    E = finite_array(energies, "energies", ndim=2)
    b = finite_array(betas, "betas", ndim=1, shape=(E.shape[1],), nonnegative=True)
    R = b.shape[0]
    rng = np.random.default_rng(seed)
    walker_at = np.arange(R)
    path = [walker_at.copy()]
    stats = SwapStats(attempts=np.zeros(max(R - 1, 0)), accepts=np.zeros(max(R - 1, 0)))
    trips = _RoundTrips(R)
    trips.visit(walker_at)
    for t in range(E.shape[0]):
        pairs = np.arange(t % 2, R - 1, 2)
        p = swap_probability(b[pairs], b[pairs + 1], E[t, pairs], E[t, pairs + 1])
        acc = rng.random(pairs.size) < p
        stats.attempts[pairs] += 1
        stats.accepts[pairs] += acc
        sw = pairs[acc]
        walker_at[sw], walker_at[sw + 1] = walker_at[sw + 1].copy(), walker_at[sw].copy()
        trips.visit(walker_at)
        path.append(walker_at.copy())
    stats.round_trips = trips.trips
    stats.up_visits, stats.labelled_visits = trips.up_visits, trips.labelled
    return np.array(path), stats
