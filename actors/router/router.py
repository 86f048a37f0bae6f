"""The router: predictor + Beta posteriors per (model, domain) + energy + Boltzmann selection -> a
per-prompt propensity to call the strong model; its ablations; a JSON/npz state for Serve. No Ray.

Energy of prompt i and model m (actors/router/energy.py, weights from `EnergyConfig`):

    cost        price of a call / the largest price
    quality     mu_m(d_i) + rho * [m = strong] * (p_i - pbar(d_i))
                mu = Beta posterior mean of model m's reward in the prompt's domain d_i (KMeans
                cluster of its embedding), p_i = predictor's P(strong better | prompt), pbar = the
                predictor's mean over the domain's training prompts: the posteriors carry the domain
                level (and learn online from feedback), the predictor the prompt's deviation from it
    latency     latency_s / the largest latency
    uncertainty posterior standard deviation of mu_m(d_i)
    context     max(0, prompt tokens / context window - 1)

The score of a prompt is the Boltzmann probability of the strong model at temperature T
(actors/router/boltzmann.py). Ablations (`score(..., method=...)`):

    energy      the above (T > 0)
    energy_t0   the argmin of the same energy (T = 0): a hard 0/1 decision, one operating point
    thompson    posteriors only, one Thompson draw per prompt: theta_strong(d) - theta_weak(d)
    predictor   p_i alone
    (random     RouteLLM's random router: actors.router.metrics.random_scores)
"""
from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from actors.common.errors import InputError, UnknownName
from actors.common.storage import atomic_write_bytes, atomic_write_json
from actors.router.boltzmann import Decision, boltzmann
from actors.router.config import DomainConfig, EnergyConfig, ModelCard, PredictorConfig
from actors.router.energy import EnergyTerms, EnergyWeights, energies
from actors.router.posterior import BetaPosterior
from actors.router.predictor import Domains, StrongWinPredictor, fit_domains, fit_predictor, strong_better

__all__ = ["METHODS", "Router", "fit_router", "load_router", "save_router"]

METHODS = ("energy", "energy_t0", "thompson", "predictor")
STATE_VERSION = 1


@dataclass
class Router:
    """A fitted router over `cards` (model order of every [N, K] array); `strong` indexes the model the
    predictor speaks for."""

    cards: list[ModelCard]
    strong: int
    predictor: StrongWinPredictor
    domains: Domains
    posterior: BetaPosterior
    p_domain_mean: np.ndarray          # [n_domains] mean predictor output of the domain's training prompts
    energy: EnergyConfig = field(default_factory=EnergyConfig)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.cards]

    @property
    def weights(self) -> EnergyWeights:
        e = self.energy
        return EnergyWeights(w_cost=e.w_cost, w_quality=e.w_quality, w_latency=e.w_latency,
                             w_uncertainty=e.w_uncertainty, w_context=e.w_context)

    def model_index(self, name: str) -> int:
        if name not in self.names:
            raise UnknownName("model", name, self.names)
        return self.names.index(name)

    # -- features -> energy terms
    def features(self, E: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(P(strong better), domain) per row of the embeddings (with the predictor's prompt statistics
        appended when it uses them; the domains see the embedding columns only)."""
        return self.predictor.predict(E), self.domains.assign(np.asarray(E)[:, :self.predictor.dim])

    def terms(self, p: np.ndarray, domain: np.ndarray, n_tokens: np.ndarray,
              quality: np.ndarray | None = None, models: Sequence[int] | None = None) -> EnergyTerms:
        """The five [N, K] factors for prompts with predictor output p, domain and token count.
        `quality` [K, n_domains] replaces the posterior means (a Thompson draw); `models` restricts
        the columns to a subset of the cards."""
        cols = np.arange(len(self.cards)) if models is None else np.asarray(models, np.int64)
        if cols.size == 0:
            raise InputError("models", "no candidate models (K = 0)", ", ".join(self.names))
        p, domain = np.asarray(p, np.float64), np.asarray(domain, np.int64)
        n_tokens = np.asarray(n_tokens, np.float64)
        n = p.shape[0]
        cost, latency, ctx = self._card_arrays()
        a, b = self.posterior.alpha[:, domain].T, self.posterior.beta[:, domain].T   # [N, K]
        s = a + b
        q = a / s if quality is None else np.asarray(quality, np.float64)[:, domain].T.copy()
        q[:, self.strong] += self.energy.rho * (p - self.p_domain_mean[domain])
        sd = np.sqrt(a * b / (s * s * (s + 1.0)))                    # BetaPosterior.var() of the rows used
        mismatch = np.maximum(0.0, n_tokens[:, None] / ctx[None, :] - 1.0)
        return EnergyTerms(cost=np.broadcast_to(cost, (n, cost.size))[:, cols], quality=q[:, cols],
                           latency=np.broadcast_to(latency, (n, latency.size))[:, cols], uncertainty=sd[:, cols],
                           context_mismatch=mismatch[:, cols])

    def _card_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(cost / max cost, latency / max latency, context windows), computed once per router."""
        cached = self.__dict__.get("_cards_cache")
        if cached is None or cached[0] is not self.cards:
            price = np.array([c.cost for c in self.cards], np.float64)
            lat = np.array([c.latency_s for c in self.cards], np.float64)
            ctx = np.array([c.context_tokens for c in self.cards], np.float64)
            arrays = (price / price.max() if price.max() > 0 else price, lat / lat.max() if lat.max() > 0 else lat, ctx)
            cached = (self.cards, arrays)
            self.__dict__["_cards_cache"] = cached
        return cached[1]

    def decide(self, E: np.ndarray, n_tokens: np.ndarray, *, temperature: float | None = None,
               models: Sequence[int] | None = None) -> tuple[EnergyTerms, np.ndarray, Decision, np.ndarray, np.ndarray]:
        """(terms, energies [N, K], Boltzmann decision, p, domain) for embedded prompts."""
        p, d = self.features(E)
        t = self.terms(p, d, n_tokens, models=models)
        en = energies(t, self.weights)
        T = self.energy.temperature if temperature is None else temperature
        return t, en, boltzmann(en, T), p, d

    # -- scores (propensity to call the strong model) for the threshold sweep
    def score(self, E: np.ndarray, n_tokens: np.ndarray, method: str = "energy",
              rng: np.random.Generator | None = None) -> np.ndarray:
        """Per-prompt propensity to call the strong model under `method` (see the module docstring)."""
        if method not in METHODS:
            raise UnknownName("method", method, list(METHODS))
        p, d = self.features(E)
        if method == "predictor":
            return p
        if method == "thompson":
            rng = rng if rng is not None else np.random.default_rng(0)
            a, b = self.posterior.alpha[:, d], self.posterior.beta[:, d]      # [K, N]: one draw per prompt
            theta = rng.beta(a, b)
            weak = 1 - self.strong if len(self.cards) == 2 else None
            if weak is None:
                return theta[self.strong] - np.delete(theta, self.strong, axis=0).max(axis=0)
            return theta[self.strong] - theta[weak]
        en = energies(self.terms(p, d, n_tokens), self.weights)
        T = 0.0 if method == "energy_t0" else self.energy.temperature
        return boltzmann(en, T).p[:, self.strong]

    def feedback(self, model: int | str, domain: int, reward: float) -> None:
        """One observed reward in [0, 1] of `model` on a prompt of `domain` (conjugate update)."""
        self.posterior.update(model, int(domain), reward)


def fit_router(E: np.ndarray, gain: np.ndarray, reward: np.ndarray, cards: Sequence[ModelCard], strong: int, *,
               predictor: PredictorConfig | None = None, domains: DomainConfig | None = None,
               energy: EnergyConfig | None = None) -> Router:
    """Fit on training routes only: E [N, d] embeddings, gain [N] (strong - weak, summed over the
    route's rows), reward [N, K] each model's mean reward in [0, 1] on the route."""
    domains = domains or DomainConfig()
    reward = np.asarray(reward, np.float64)
    if reward.shape != (E.shape[0], len(cards)):
        raise InputError("reward", f"shape {reward.shape}, expected {(E.shape[0], len(cards))}", "[N, K]")
    pred = fit_predictor(E, strong_better(gain), predictor)
    dom = fit_domains(E[:, :pred.dim], domains)
    d = dom.assign(E[:, :pred.dim])
    post = BetaPosterior(len(cards), dom.n_domains, prior_alpha=domains.prior_alpha, prior_beta=domains.prior_beta,
                         models=[c.name for c in cards])
    for m in range(len(cards)):
        post.update_many(np.full(d.size, m), d, reward[:, m])
    p = pred.predict(E)
    counts = np.bincount(d, minlength=dom.n_domains)
    pbar = np.where(counts > 0, np.bincount(d, weights=p, minlength=dom.n_domains) / np.maximum(counts, 1),
                    float(p.mean()))
    return Router(list(cards), int(strong), pred, dom, post, pbar, energy or EnergyConfig())


# -- state on disk: arrays in router.npz, the rest in router.json (no pickle)
def save_router(router: Router, directory: str | Path) -> Path:
    """Write DIR/router.json and DIR/router.npz atomically; returns DIR."""
    directory = Path(directory)
    arrays = {"centroids": router.domains.centroids, "alpha": router.posterior.alpha, "beta": router.posterior.beta,
              "p_domain_mean": router.p_domain_mean}
    for i, (w, b) in enumerate(zip(router.predictor.weights, router.predictor.biases)):
        arrays[f"W{i}"], arrays[f"b{i}"] = w, b
    if router.predictor.n_stats:
        arrays["stats_mean"], arrays["stats_scale"] = router.predictor.stats_mean, router.predictor.stats_scale
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(directory / "router.npz", buf.getvalue())
    atomic_write_json(directory / "router.json", {
        "version": STATE_VERSION, "cards": [c.model_dump() for c in router.cards], "strong": router.strong,
        "energy": router.energy.model_dump(), "predictor": {"kind": router.predictor.kind,
                                                            "base_rate": router.predictor.base_rate,
                                                            "dim": router.predictor.dim,
                                                            "layers": len(router.predictor.weights)},
        "posterior": {"prior_alpha": router.posterior.prior_alpha, "prior_beta": router.posterior.prior_beta}})
    return directory


def load_router(directory: str | Path) -> Router:
    """The router saved by `save_router` (InputError naming `model` when the files are missing or foreign)."""
    directory = Path(directory)
    meta_path, npz_path = directory / "router.json", directory / "router.npz"
    if not (meta_path.is_file() and npz_path.is_file()):
        raise InputError("model", f"{directory} holds no router.json + router.npz", "a directory written by "
                         "jobs.route_eval (DIR/router)")
    meta = json.loads(meta_path.read_text())
    if meta.get("version") != STATE_VERSION:
        raise InputError("model", f"router state version {meta.get('version')!r}", str(STATE_VERSION))
    with np.load(npz_path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    cards = [ModelCard.model_validate(c) for c in meta["cards"]]
    pm = meta["predictor"]
    pred = StrongWinPredictor(pm["kind"], [arrays[f"W{i}"] for i in range(pm["layers"])],
                              [arrays[f"b{i}"] for i in range(pm["layers"])], float(pm["base_rate"]), int(pm["dim"]),
                              arrays.get("stats_mean"), arrays.get("stats_scale"))
    post = BetaPosterior(len(cards), arrays["alpha"].shape[1], prior_alpha=meta["posterior"]["prior_alpha"],
                         prior_beta=meta["posterior"]["prior_beta"], models=[c.name for c in cards])
    post.alpha, post.beta = arrays["alpha"].astype(np.float64), arrays["beta"].astype(np.float64)
    return Router(cards, int(meta["strong"]), pred, Domains(arrays["centroids"]), post, arrays["p_domain_mean"],
                  EnergyConfig.model_validate(meta["energy"]))
