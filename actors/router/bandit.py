"""Online routing with bandit feedback: Thompson sampling on Beta posteriors, regret against the
oracle, and drift detection that re-opens exploration when a model's quality changes.

A stream is a sequence of requests, each with a domain and, for replay, the reward every model
would have earned (recorded data: RouteLLM rows have both models' scores) — the router sees only the
reward of the model it called. The router maximises utility u_k = quality_k - cost_weight * cost_k:
at each request it draws quality_k ~ Beta(alpha_kd, beta_kd) (Thompson) and calls the argmax.

Regret is the pseudo-regret against the oracle that knows the mean quality of every (model, domain)
at that time: sum_t [max_k u*(k, d_t) - u*(chosen_t, d_t)]. Thompson's is O(log T) for fixed means,
so the log-log slope of cumulative regret is well below 1 (`regret_slope`).

Drift: a two-sided Page-Hinkley test per (model, domain) on the rewards the router observes. At an
alarm the posterior of that (model, domain) is reset to the prior, so Thompson explores it again;
the detection delay (observations of that pair after the planted change) is measured by the tests.

    stream = synthetic_stream(20000, means, seed=0)                       # or replay_stream(rewards, domains)
    res = replay(stream, ThompsonRouter(n_models=3, n_domains=4, costs=c, cost_weight=0.2, seed=1))
    res.cumulative_regret, regret_slope(res.cumulative_regret), res.alarms
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from actors.common.errors import InputError
from actors.router.checks import finite_array, positive_int
from actors.router.posterior import BetaPosterior

__all__ = [
    "Alarm", "BanditStream", "PageHinkley", "ReplayResult", "ThompsonRouter", "regret_slope", "replay",
    "replay_stream", "synthetic_stream",
]


class PageHinkley:
    """Two-sided Page-Hinkley change detector on a stream of values in [0, 1].

    m_t = sum_i (x_i - xbar_i - delta) (and the mirror sum for decreases); an alarm when m_t minus its
    running minimum exceeds `threshold`. `delta` is the tolerated drift per step, `threshold` trades
    detection delay against false alarms; `min_obs` observations are needed before any alarm.
    """

    def __init__(self, delta: float = 0.1, threshold: float = 15.0, min_obs: int = 20):
        if not (np.isfinite(delta) and delta >= 0):
            raise InputError("delta", f"{delta!r} is out of range", ">= 0")
        if not (np.isfinite(threshold) and threshold > 0):
            raise InputError("threshold", f"{threshold!r} is out of range", "> 0")
        self.delta, self.threshold = float(delta), float(threshold)
        self.min_obs = positive_int(min_obs, "min_obs", minimum=1)
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.up = self.up_min = 0.0
        self.down = self.down_min = 0.0

    def update(self, x: float) -> bool:
        """Feed one observation; True when a change (up or down) is detected (the detector then resets)."""
        self.n += 1
        self.mean += (x - self.mean) / self.n
        self.up += x - self.mean - self.delta
        self.down += self.mean - x - self.delta
        self.up_min = min(self.up_min, self.up)
        self.down_min = min(self.down_min, self.down)
        if self.n >= self.min_obs and max(self.up - self.up_min, self.down - self.down_min) > self.threshold:
            self.reset()
            return True
        return False


@dataclass(frozen=True)
class BanditStream:
    """domains [T] ints, rewards [T, K] in [0, 1] (what each model would earn), true_means [T, K]
    (the oracle's expected quality of each model for request t: the synthetic means, or per-domain
    empirical means for replayed data)."""

    domains: np.ndarray
    rewards: np.ndarray
    true_means: np.ndarray

    def __post_init__(self) -> None:
        r = finite_array(self.rewards, "rewards", ndim=2)
        if r.shape[1] == 0:
            raise InputError("K", "no models (rewards has 0 columns)", ">= 1")
        if r.size and (r.min() < 0 or r.max() > 1):
            raise InputError("rewards", "rewards must lie in [0, 1]", ">= 0 and <= 1")
        d = np.asarray(self.domains)
        if d.shape != (r.shape[0],) or not np.issubdtype(d.dtype, np.integer) or (d.size and d.min() < 0):
            raise InputError("domains", f"need {r.shape[0]} non-negative integer domains", "ints >= 0")
        object.__setattr__(self, "rewards", r)
        object.__setattr__(self, "domains", d.astype(np.int64))
        object.__setattr__(self, "true_means", finite_array(self.true_means, "true_means", ndim=2, shape=r.shape))

    @property
    def n_domains(self) -> int:
        return int(self.domains.max()) + 1 if self.domains.size else 1


def synthetic_stream(n: int, means, *, seed: int = 0, change: tuple[int, int, int, float] | None = None,
                     domain_probs=None) -> BanditStream:
    """Bernoulli rewards: request t has domain d_t ~ domain_probs and model k succeeds with means[k, d_t].
    `change` = (t0, model, domain, new_mean) plants a change of that model's quality from request t0 on."""
    n = positive_int(n, "n")
    mu = finite_array(means, "means", ndim=2)
    if mu.size == 0 or mu.min() < 0 or mu.max() > 1:
        raise InputError("means", "need [K >= 1, D >= 1] means in [0, 1]", ">= 0 and <= 1")
    K, D = mu.shape
    rng = np.random.default_rng(seed)
    probs = np.full(D, 1 / D) if domain_probs is None else finite_array(domain_probs, "domain_probs", shape=(D,))
    domains = rng.choice(D, size=n, p=probs / probs.sum())
    true = mu.T[domains].copy()                               # [n, K]
    if change is not None:
        t0, k, d, new = change
        if not (0 <= t0 < n and 0 <= k < K and 0 <= d < D and 0 <= new <= 1):
            raise InputError("change", f"{change} is outside the stream", "(t0 < n, model < K, domain < D, mean in [0, 1])")
        hit = (np.arange(n) >= t0) & (domains == d)
        true[hit, k] = new
    rewards = (rng.random((n, K)) < true).astype(np.float64)
    return BanditStream(domains=domains, rewards=rewards, true_means=true)


def replay_stream(rewards, domains, *, seed: int = 0, n: int | None = None) -> BanditStream:
    """A replay of recorded outcomes (e.g. RouteLLM rows: [T, 2] weak/strong scores) in a seeded random
    order, `n` draws with replacement when given (a longer stream than the data); the oracle's means are
    the per-domain empirical means of the recorded rewards."""
    r = finite_array(rewards, "rewards", ndim=2)
    d = np.asarray(domains)
    if d.shape != (r.shape[0],) or not np.issubdtype(d.dtype, np.integer) or (d.size and d.min() < 0):
        raise InputError("domains", f"need {r.shape[0]} non-negative integer domains", "ints >= 0")
    if r.shape[0] == 0:
        raise InputError("rewards", "no recorded rows to replay", ">= 1 row")
    D = int(d.max()) + 1
    means = np.zeros((D, r.shape[1]))
    for j in range(D):
        if np.any(d == j):
            means[j] = r[d == j].mean(axis=0)
    rng = np.random.default_rng(seed)
    order = rng.permutation(r.shape[0]) if n is None else rng.integers(0, r.shape[0], positive_int(n, "n"))
    return BanditStream(domains=d[order].astype(np.int64), rewards=r[order], true_means=means[d[order]])


@dataclass
class Alarm:
    """A detected change: stream position, model, domain, and how many observations of that pair the
    detector had seen since its last reset."""

    t: int
    model: int
    domain: int
    n_obs: int


class ThompsonRouter:
    """Thompson sampling over K models per domain with utility quality - cost_weight * cost, optional
    Page-Hinkley drift detection (posterior reset on alarm) and geometric forgetting (`discount`)."""

    def __init__(self, n_models: int, n_domains: int, *, costs=None, cost_weight: float = 0.0, seed: int = 0,
                 drift: PageHinkley | None = None, discount: float = 1.0, prior_alpha: float = 1.0,
                 prior_beta: float = 1.0):
        self.posterior = BetaPosterior(n_models, n_domains, prior_alpha=prior_alpha, prior_beta=prior_beta,
                                       discount=discount)
        K = self.posterior.n_models
        self.costs = np.zeros(K) if costs is None else finite_array(costs, "costs", ndim=1, shape=(K,), nonnegative=True)
        if not (np.isfinite(cost_weight) and cost_weight >= 0):
            raise InputError("cost_weight", f"{cost_weight!r} is out of range", ">= 0")
        self.cost_weight = float(cost_weight)
        self.rng = np.random.default_rng(seed)
        self._template = drift
        self.detectors = ({} if drift is None else
                          {(k, d): PageHinkley(drift.delta, drift.threshold, drift.min_obs)
                           for k in range(K) for d in range(self.posterior.n_domains)})
        self.alarms: list[Alarm] = []
        self.t = 0

    def choose(self, domain: int) -> int:
        """The model to call for a request of `domain`: argmax over a posterior draw of the utility."""
        d = self.posterior._domain(domain)
        theta = self.rng.beta(self.posterior.alpha[:, d], self.posterior.beta[:, d])
        return int(np.argmax(theta - self.cost_weight * self.costs))

    def update(self, domain: int, model: int, reward: float) -> bool:
        """Record the called model's reward; returns True when it raised a drift alarm."""
        self.posterior.update(model, domain, reward)
        alarm = False
        if self.detectors:
            det = self.detectors[(model, domain)]
            n_obs = det.n + 1
            if det.update(float(reward)):
                alarm = True
                self.alarms.append(Alarm(self.t, model, domain, n_obs))
                self.posterior.alpha[model, domain] = self.posterior.prior_alpha
                self.posterior.beta[model, domain] = self.posterior.prior_beta
        self.t += 1
        return alarm


@dataclass
class ReplayResult:
    """Per request: the chosen model, its reward, the instantaneous pseudo-regret and its running sum."""

    choices: np.ndarray
    rewards: np.ndarray
    regret: np.ndarray
    cumulative_regret: np.ndarray
    alarms: list[Alarm] = field(default_factory=list)

    def summary(self) -> dict:
        return {"n": int(self.choices.size), "total_regret": float(self.cumulative_regret[-1]),
                "mean_reward": float(self.rewards.mean()), "slope": regret_slope(self.cumulative_regret),
                "alarms": [a.__dict__ for a in self.alarms]}


def replay(stream: BanditStream, router: ThompsonRouter) -> ReplayResult:
    """Run the router over the stream with bandit feedback (only the called model's reward is shown)."""
    K = stream.rewards.shape[1]
    if K != router.posterior.n_models:
        raise InputError("K", f"stream has {K} models, router {router.posterior.n_models}", str(router.posterior.n_models))
    if stream.n_domains > router.posterior.n_domains:
        raise InputError("domains", f"stream has {stream.n_domains} domains, router {router.posterior.n_domains}")
    n = stream.rewards.shape[0]
    choices = np.empty(n, dtype=np.int64)
    got = np.empty(n)
    util = stream.true_means - router.cost_weight * router.costs[None, :]
    for t in range(n):
        d = int(stream.domains[t])
        k = router.choose(d)
        choices[t] = k
        got[t] = stream.rewards[t, k]
        router.update(d, k, got[t])
    regret = util.max(axis=1) - util[np.arange(n), choices]
    return ReplayResult(choices=choices, rewards=got, regret=regret, cumulative_regret=np.cumsum(regret),
                        alarms=list(router.alarms))


def regret_slope(cumulative_regret, start_frac: float = 0.01, n_points: int = 50) -> float:
    """Least-squares slope of log R(t) on log t over log-spaced t in [start_frac T, T]: 1 is linear
    regret, Thompson's log T regret gives a slope well below 1."""
    R = finite_array(cumulative_regret, "cumulative_regret", ndim=1)
    T = R.size
    if T < 10:
        raise InputError("cumulative_regret", f"{T} points are too few for a slope", ">= 10")
    t = np.unique(np.geomspace(max(1, int(start_frac * T)), T, n_points).astype(int))
    y = R[t - 1]
    if np.any(y <= 0):
        t, y = t[y > 0], y[y > 0]
        if t.size < 2:
            return 0.0
    return float(np.polyfit(np.log(t), np.log(y), 1)[0])
