"""The TE routing signal of the online mode: per domain, transfer entropy from the domain's recent
quality series to its routing outcomes, gating a recency feature of the energy. No Ray.

Per domain d (the router's KMeans cluster) and per observed decision t of that domain (bandit
feedback: only the called model's reward r_t is seen) the routing outcome is the strong model's
*advantage surprise*

    s_t = sign(c_t) * (r_t - mu_{c_t}(d))      sign = +1 if the strong model was called, -1 otherwise

(mu = the posterior mean the decision used): s > 0 says "the strong model looks better than the
posteriors think, relative to the weak one", whichever model answered. The domain's recent quality
series is its trailing mean q_t = mean(s_{t-m+1..t}) (m = `smooth`). Over a sliding window of the
last `window` decisions of the domain, recomputed every `every` new ones,

    TE_d = TE(q -> s)     (actors.te.transfer_entropy, KSG, k_hist / delay / k from the config)

is how much the recent quality predicts the next outcome beyond the outcome's own last value. For a
stationary domain (i.i.d. outcomes given the posteriors) it is 0 up to estimator bias; when the
domain's quality persists away from the posterior (a drift, a switch, a lagged driver) it is > 0.
The feature of the strong model is

    f_d = g_d * a_d,   g_d = clip(TE_d / te_scale, 0, 1),   a_d = mean of the last `smooth` s of d

and enters the energy as E_strong -= weight * f_d (a recency correction of the posterior, switched on
by the TE gate). `gate="always"` (g = 1) is the TE-free control of the ablation: the same recency
term without the TE signal, so an ablation separates the value of TE from the value of recency.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from actors.common.errors import InputError
from actors.router.config import TEFeatureConfig

__all__ = ["TEFeature", "advantage_surprise", "check_config", "min_window", "pair_te", "quality_series", "window_te"]


def min_window(cfg: TEFeatureConfig) -> int:
    """The shortest window the TE of the config can be estimated on (TEFeatureConfig.min_window)."""
    return cfg.min_window()


def check_config(cfg: TEFeatureConfig) -> TEFeatureConfig:
    """InputError naming `te.window` when the window is too short for the estimator (a config built
    with model_construct skips the model's own check)."""
    need = min_window(cfg)
    if cfg.window < need:
        raise InputError("te.window", f"window {cfg.window} is too short for smooth={cfg.smooth}, k={cfg.k}, "
                         f"k_hist={cfg.k_hist}, delay={cfg.delay}", f">= {need}")
    return cfg


def advantage_surprise(chosen: int, strong: int, reward: float, mean: float) -> float:
    """s = +-(reward - posterior mean of the called model): + when the strong model was called."""
    return float(reward - mean) if chosen == strong else float(mean - reward)


def quality_series(s: np.ndarray, smooth: int) -> np.ndarray:
    """Trailing means q_t = mean(s[max(0, t-smooth+1) .. t])."""
    s = np.asarray(s, np.float64)
    c = np.concatenate([[0.0], np.cumsum(s)])
    i = np.arange(1, s.size + 1)
    lo = np.maximum(0, i - smooth)
    return (c[i] - c[lo]) / (i - lo)


def pair_te(source: np.ndarray, target: np.ndarray, cfg: TEFeatureConfig) -> float:
    """TE(source -> target) in nats by the TE engine (actors.te.transfer_entropy: KSG, k / k_hist / delay /
    seed of the config, cpu backend); 0 when a series is constant where it is used (no information)."""
    from actors.te import transfer_entropy

    x, y = np.asarray(source, np.float64), np.asarray(target, np.float64)
    if x.size and y.size and (np.ptp(x) == 0 or np.ptp(y[:-1]) == 0 or np.ptp(y[1:]) == 0):
        return 0.0
    try:
        return float(transfer_entropy(x, y, k=cfg.k, k_hist=cfg.k_hist, delay=cfg.delay, seed=cfg.seed,
                                      backend="cpu").te)
    except InputError as exc:               # constant over the embedded rows only
        if "constant" in exc.message:
            return 0.0
        raise


def window_te(s: np.ndarray, cfg: TEFeatureConfig) -> float:
    """TE(q -> s) in nats on one window of outcomes, q = quality_series(s, smooth); the first
    `smooth - 1` samples (where the trailing mean is shorter) are dropped."""
    s = np.asarray(s, np.float64)
    if s.size < min_window(cfg):
        raise InputError("te.window", f"{s.size} outcomes are too few", f">= {min_window(cfg)}")
    q = quality_series(s, cfg.smooth)[cfg.smooth - 1:]
    return pair_te(q, s[cfg.smooth - 1:], cfg)


@dataclass
class TEFeature:
    """The per-domain sliding windows, TE values, gates and the strong model's feature."""

    n_domains: int
    cfg: TEFeatureConfig
    gate_mode: str = "te"                   # "te" (g from TE) or "always" (g = 1: recency without TE)
    windows: list = field(init=False)
    te: np.ndarray = field(init=False)
    since: np.ndarray = field(init=False)   # decisions of each domain since its last TE estimate
    seen: np.ndarray = field(init=False)    # decisions of each domain so far
    history: list = field(init=False)       # (domain, n observed in d, TE) per recomputation

    def __post_init__(self) -> None:
        if self.n_domains < 1:
            raise InputError("n_domains", f"{self.n_domains}", ">= 1")
        if self.gate_mode not in ("te", "always"):
            raise InputError("gate_mode", f"{self.gate_mode!r}", "te or always")
        check_config(self.cfg)
        self.windows = [deque(maxlen=self.cfg.window) for _ in range(self.n_domains)]
        self.te = np.zeros(self.n_domains)
        self.since = np.zeros(self.n_domains, np.int64)
        self.seen = np.zeros(self.n_domains, np.int64)
        self.history = []

    def gate(self, d: int) -> float:
        if self.gate_mode == "always":
            return 1.0
        return float(np.clip(self.te[d] / self.cfg.te_scale, 0.0, 1.0))

    def recent(self, d: int) -> float:
        w = self.windows[d]
        if not w:
            return 0.0
        m = min(self.cfg.smooth, len(w))
        return float(np.mean(list(w)[-m:]))

    def value(self, d: int) -> float:
        """f_d = g_d * a_d (0 until the domain has `smooth` outcomes)."""
        if len(self.windows[d]) < self.cfg.smooth:
            return 0.0
        return self.gate(d) * self.recent(d)

    def observe(self, d: int, s: float) -> None:
        """Append one outcome of domain d; recompute its TE once the window is full, every `every`."""
        self.windows[d].append(float(s))
        self.since[d] += 1
        self.seen[d] += 1
        if self.gate_mode == "te" and len(self.windows[d]) == self.cfg.window and self.since[d] >= self.cfg.every:
            self.since[d] = 0
            self.te[d] = window_te(np.fromiter(self.windows[d], np.float64), self.cfg)
            self.history.append((int(d), int(self.seen[d]), float(self.te[d])))
