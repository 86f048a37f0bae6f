"""Beta(alpha, beta) posteriors of answer quality per (model, domain): conjugate updates, credible
intervals and Thompson draws.

Quality is a success probability (the strong/weak answer was judged good), so a Beta prior is
conjugate: a reward r in [0, 1] adds r to alpha and 1 - r to beta (fractional rewards are the usual
"Bernoulli trick" generalisation). The posterior variance is the router's uncertainty term; a
Thompson draw per (model, domain) is the online mode's exploration. `discount` < 1 forgets old
evidence geometrically (alpha, beta shrink toward the prior before each update), so the posterior
tracks a model whose quality drifts.

    post = BetaPosterior(n_models=2, n_domains=3, models=["weak", "strong"])
    post.update("strong", 1, 1.0)
    lo, hi = post.interval(0.95)          # equal to scipy.stats.beta(alpha, beta).interval(0.95)
    draw = post.thompson(np.random.default_rng(0))   # [n_models, n_domains]
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import special

from actors.common.errors import InputError, UnknownName
from actors.router.checks import finite_array, positive_int

__all__ = ["BetaPosterior"]


class BetaPosterior:
    """alpha, beta: float64 arrays [n_models, n_domains]; models addressed by index or by name."""

    def __init__(self, n_models: int, n_domains: int = 1, *, prior_alpha: float = 1.0, prior_beta: float = 1.0,
                 models: Sequence[str] | None = None, discount: float = 1.0):
        self.n_models = positive_int(n_models, "n_models")
        self.n_domains = positive_int(n_domains, "n_domains")
        for name, v in (("prior_alpha", prior_alpha), ("prior_beta", prior_beta)):
            if not np.isfinite(v) or v <= 0:
                raise InputError(name, f"{v} is not a positive finite number", "> 0")
        if not (np.isfinite(discount) and 0 < discount <= 1):
            raise InputError("discount", f"{discount} is out of range", "> 0 and <= 1")
        if models is not None:
            models = [str(m) for m in models]
            if len(models) != self.n_models or len(set(models)) != len(models):
                raise InputError("models", f"expected {self.n_models} distinct names, got {models}")
        self.models = models
        self.prior_alpha = float(prior_alpha)
        self.prior_beta = float(prior_beta)
        self.discount = float(discount)
        self.alpha = np.full((self.n_models, self.n_domains), self.prior_alpha)
        self.beta = np.full((self.n_models, self.n_domains), self.prior_beta)

    # -- addressing
    def model_index(self, model: int | str) -> int:
        """The row of `model` (an index, or a name from `models`)."""
        if isinstance(model, str):
            if self.models is None or model not in self.models:
                raise UnknownName("model", model, self.models or "model indices")
            return self.models.index(model)
        if isinstance(model, bool) or not isinstance(model, (int, np.integer)) or not 0 <= model < self.n_models:
            raise InputError("model", f"{model!r} is not a model index", f"0 .. {self.n_models - 1}")
        return int(model)

    def _domain(self, domain) -> int:
        if isinstance(domain, bool) or not isinstance(domain, (int, np.integer)) or not 0 <= domain < self.n_domains:
            raise InputError("domain", f"{domain!r} is not a domain index", f"0 .. {self.n_domains - 1}")
        return int(domain)

    # -- learning
    def update(self, model: int | str, domain: int, reward: float) -> None:
        """One observed reward in [0, 1] for (model, domain): alpha += r, beta += 1 - r."""
        m, d = self.model_index(model), self._domain(domain)
        r = float(reward)
        if not (np.isfinite(r) and 0.0 <= r <= 1.0):
            raise InputError("reward", f"{reward!r} is not in [0, 1]", ">= 0 and <= 1")
        if self.discount < 1.0:
            self._forget()
        self.alpha[m, d] += r
        self.beta[m, d] += 1.0 - r

    def update_many(self, models, domains, rewards) -> None:
        """Batch update (same as calling `update` in order when discount == 1)."""
        rewards = finite_array(rewards, "reward", ndim=1)
        if rewards.size and (rewards.min() < 0 or rewards.max() > 1):
            raise InputError("reward", "rewards must lie in [0, 1]", ">= 0 and <= 1")
        m = np.array([self.model_index(x) for x in np.atleast_1d(models)], dtype=np.int64)
        d = np.array([self._domain(x) for x in np.atleast_1d(domains)], dtype=np.int64)
        if not (m.shape == d.shape == rewards.shape):
            raise InputError("reward", f"models, domains and rewards differ in length ({m.size}, {d.size}, "
                             f"{rewards.size})")
        if self.discount < 1.0:
            for mi, di, r in zip(m, d, rewards):
                self._forget()
                self.alpha[mi, di] += r
                self.beta[mi, di] += 1.0 - r
            return
        np.add.at(self.alpha, (m, d), rewards)
        np.add.at(self.beta, (m, d), 1.0 - rewards)

    def _forget(self) -> None:
        g = self.discount
        self.alpha = self.prior_alpha + g * (self.alpha - self.prior_alpha)
        self.beta = self.prior_beta + g * (self.beta - self.prior_beta)

    # -- summaries
    def mean(self) -> np.ndarray:
        """Posterior mean alpha / (alpha + beta), [n_models, n_domains]."""
        return self.alpha / (self.alpha + self.beta)

    def var(self) -> np.ndarray:
        """Posterior variance ab / ((a+b)^2 (a+b+1)): the router's uncertainty term."""
        s = self.alpha + self.beta
        return self.alpha * self.beta / (s * s * (s + 1.0))

    def interval(self, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Equal-tailed credible interval, the same numbers as scipy.stats.beta.interval(confidence)."""
        if not (np.isfinite(confidence) and 0 < confidence < 1):
            raise InputError("confidence", f"{confidence!r} is out of range", "> 0 and < 1")
        q = (1.0 - confidence) / 2.0
        return special.betaincinv(self.alpha, self.beta, q), special.betaincinv(self.alpha, self.beta, 1.0 - q)

    def thompson(self, rng: np.random.Generator) -> np.ndarray:
        """One posterior draw of every (model, domain) quality, [n_models, n_domains]."""
        return rng.beta(self.alpha, self.beta)

    def state(self) -> dict:
        """JSON-able snapshot (Serve feedback endpoints, checkpoints)."""
        return {"alpha": self.alpha.tolist(), "beta": self.beta.tolist(), "models": self.models,
                "prior_alpha": self.prior_alpha, "prior_beta": self.prior_beta, "discount": self.discount}

    @classmethod
    def from_state(cls, state: dict) -> BetaPosterior:
        """The inverse of `state()`."""
        alpha = finite_array(state["alpha"], "alpha", ndim=2)
        beta = finite_array(state["beta"], "beta", ndim=2, shape=alpha.shape)
        post = cls(alpha.shape[0], alpha.shape[1], prior_alpha=state.get("prior_alpha", 1.0),
                   prior_beta=state.get("prior_beta", 1.0), models=state.get("models"),
                   discount=state.get("discount", 1.0))
        if np.any(alpha <= 0) or np.any(beta <= 0):
            raise InputError("alpha", "alpha and beta must be > 0", "> 0")
        post.alpha, post.beta = alpha.copy(), beta.copy()
        return post
