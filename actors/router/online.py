"""The router's online mode on a stream of decisions with bandit feedback, with or without the TE
feature (actors/router/te_signal.py). No Ray.

One step per request t (domain d_t, predictor output p_t): the energies of the router's five terms,
for `energy_te` / `energy_recency` minus weight * f_d on the strong model's column, the Boltzmann
probability of the strong model (the score, computed before the request's own feedback), a choice
drawn from the Boltzmann distribution (argmin at T = 0), the chosen model's reward only, the
conjugate posterior update, and the TE feature's outcome s_t.

    run = online_stream(router, p, d, n_tokens, reward, "energy_te", spec.te, rng)
    run.scores, run.choices, run.rewards, run.feature.te
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from actors.common.budget import checkpoint
from actors.common.errors import UnknownName
from actors.router.config import TEFeatureConfig
from actors.router.router import Router
from actors.router.te_signal import TEFeature, advantage_surprise

__all__ = ["ONLINE_METHODS", "OnlineRun", "online_stream"]

ONLINE_METHODS = ("energy", "energy_t0", "energy_te", "energy_recency")


@dataclass
class OnlineRun:
    """Per step: the score (P(strong) before feedback), the chosen model, its reward, the TE feature
    value used; the feature's state at the end (None without it)."""

    scores: np.ndarray
    choices: np.ndarray
    rewards: np.ndarray
    feature_values: np.ndarray
    feature: TEFeature | None


def online_stream(router: Router, p: np.ndarray, domain: np.ndarray, n_tokens: np.ndarray, reward: np.ndarray,
                  method: str, te: TEFeatureConfig, rng: np.random.Generator) -> OnlineRun:
    """Run `router` (its posteriors are updated in place) over the stream in the given order.

    The energies are `energies(router.terms(...), router.weights)` and the probabilities `boltzmann`'s
    (tests/test_router_te.py checks both to 1e-12), computed per step on K numbers: the prompt-only
    terms once for the whole stream, the posterior terms of the request's domain at its step."""
    if method not in ONLINE_METHODS:
        raise UnknownName("method", method, list(ONLINE_METHODS))
    p, domain = np.asarray(p, np.float64), np.asarray(domain, np.int64)
    n_tokens, reward = np.asarray(n_tokens, np.float64), np.asarray(reward, np.float64)
    n, strong = p.shape[0], router.strong
    feature = None
    if method in ("energy_te", "energy_recency"):
        feature = TEFeature(router.domains.n_domains, te, gate_mode="te" if method == "energy_te" else "always")
    T = 0.0 if method == "energy_t0" else float(router.energy.temperature)
    w = router.weights
    cost, latency, ctx = router._card_arrays()
    K = cost.size
    dev = np.zeros((n, K))
    dev[:, strong] = router.energy.rho * (p - router.p_domain_mean[domain])
    mismatch = np.maximum(0.0, n_tokens[:, None] / ctx[None, :] - 1.0)
    post = router.posterior
    scores, values = np.empty(n), np.zeros(n)
    choices, got = np.empty(n, np.int64), np.empty(n)
    for t in range(n):
        if t % 256 == 0:
            checkpoint()
        d = int(domain[t])
        a, b = post.alpha[:, d], post.beta[:, d]
        sab = a + b
        mu = a / sab
        sd = np.sqrt(a * b / (sab * sab * (sab + 1.0)))
        en = (w.w_cost * cost - w.w_quality * (mu + dev[t]) + w.w_latency * latency + w.w_uncertainty * sd
              + w.w_context * mismatch[t])
        if feature is not None:
            values[t] = feature.value(d)
            en[strong] -= te.weight * values[t]
        if T > 0:
            x = -en / T
            top = x.max()
            logp = x - (top + np.log(np.sum(np.exp(x - top))))
            prob = np.exp(logp)
        else:
            ties = en == en.min()
            prob = ties / ties.sum()
        scores[t] = prob[strong]
        cdf = np.cumsum(prob)
        u = rng.random(1)[0] * cdf[-1]
        c = int(min(int((cdf <= u).sum()), K - 1))
        choices[t], got[t] = c, reward[t, c]
        router.feedback(c, d, got[t])
        if feature is not None:
            feature.observe(d, advantage_surprise(c, strong, got[t], float(mu[c])))
    return OnlineRun(scores, choices, got, values, feature)
