"""Pydantic models of the router's evaluation (configs/router/*.yaml, `jobs.route_eval --set ...`).

Every numeric field is bounded; unknown keys are errors (Strict). Defaults are what `jobs.route_eval`
runs when no preset is given, and what docs/router.md reports.

Costs: `cost` is the relative price of one call. The defaults are RouteLLM's blended prices in USD
per million tokens (GPT-4 24.7, Mixtral-8x7B 0.24, from the RouteLLM blog) taken as the price of a call
of average length; only their ratio matters to the energy (costs are divided by the largest).
Latency and context windows are not in the shared data: the defaults make the latency term a
constant per model and the context term zero for every prompt of the shared files (all fit).
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from actors.common.config import Strict, WorkerConfig
from actors.common.errors import InputError

__all__ = ["ABLATIONS", "Ablation", "DomainConfig", "EmbeddingConfig", "EnergyConfig", "EvalConfig", "ModelCard",
           "PlantedKind", "PredictorConfig", "PredictorKind", "RouteEvalSpec", "TEAblationConfig", "TEFeatureConfig",
           "TE_METHODS"]

PredictorKind = Literal["logistic", "mlp"]
Ablation = Literal["energy_t0", "thompson", "predictor", "random", "energy_te", "energy_recency"]
ABLATIONS: tuple[str, ...] = ("energy_t0", "thompson", "predictor", "random")   # the default set (offline too)
TE_METHODS: tuple[str, ...] = ("energy_te", "energy_recency")   # online only: the TE feature and its TE-free control
PlantedKind = Literal["swap", "weak_down"]
Device = Literal["cpu", "cuda"]


class ModelCard(Strict):
    """One candidate model: its name (as in the data's metadata), price per call, latency, context."""

    name: str = Field(min_length=1, max_length=200)
    cost: float = Field(ge=0, le=1e9)                        # relative price of one call
    latency_s: float = Field(1.0, ge=0, le=3600)             # typical seconds per answer
    context_tokens: int = Field(32_768, ge=1, le=100_000_000)


class PredictorConfig(Strict):
    """embedding -> P(strong better than weak): L2-regularised logistic regression or a small MLP."""

    kind: PredictorKind = "logistic"
    C: float = Field(1.0, gt=0, le=1e6)                      # inverse L2 strength (logistic)
    hidden: int = Field(64, ge=1, le=4096)                   # MLP hidden units
    alpha: float = Field(1e-3, ge=0, le=100)                 # MLP L2 penalty
    max_iter: int = Field(2000, ge=10, le=100_000)
    seed: int = Field(0, ge=0, le=2**32 - 1)
    prompt_stats: bool = False      # append features.prompt_stats (standardised on the training rows) to the input


class DomainConfig(Strict):
    """Domains = KMeans clusters of the prompt embeddings (not keywords); Beta priors per (model, domain)."""

    n_domains: int = Field(16, ge=1, le=1024)
    seed: int = Field(0, ge=0, le=2**32 - 1)
    prior_alpha: float = Field(1.0, gt=0, le=1e6)
    prior_beta: float = Field(1.0, gt=0, le=1e6)


class EnergyConfig(Strict):
    """E = w_cost*cost - w_quality*quality + w_latency*latency + w_uncertainty*sd + w_context*mismatch.

    quality(strong) = mu_strong(domain) + rho * (P(strong better | prompt) - mean P over the domain),
    quality(weak) = mu_weak(domain): the Beta posteriors carry the domain level, the predictor the
    prompt's deviation from it. `temperature` is the Boltzmann T of the score (T = 0: argmin)."""

    w_cost: float = Field(1.0, ge=0, le=1e6)
    w_quality: float = Field(4.0, ge=0, le=1e6)
    w_latency: float = Field(0.05, ge=0, le=1e6)
    w_uncertainty: float = Field(1.0, ge=-1e6, le=1e6)      # < 0: optimism under uncertainty
    w_context: float = Field(10.0, ge=0, le=1e6)
    rho: float = Field(1.0, ge=0, le=100)
    temperature: float = Field(0.25, ge=0, le=1e6)


class EmbeddingConfig(Strict):
    """Prompt features: the bundled all-MiniLM-L6-v2; cache_dir None -> $ATTRACTOR_EMBEDDING_CACHE or
    ~/.cache/attractor/embeddings; cache false -> encode every run."""

    cache: bool = True
    cache_dir: str | None = Field(None, max_length=4096)
    device: Device = "cpu"
    batch_size: int = Field(64, ge=1, le=4096)


class EvalConfig(Strict):
    """The RouteLLM protocol (10 equal-count score bins, 10 random repeats) plus bootstrap CIs."""

    n_folds: int = Field(5, ge=2, le=100)
    n_bins: int = Field(10, ge=2, le=1000)
    cpt_levels: tuple[float, ...] = (0.2, 0.5, 0.8)
    quality_target: float = Field(0.95, gt=0, le=1)         # share of the strong model's performance
    n_bootstrap: int = Field(1000, ge=0, le=100_000)
    confidence: float = Field(0.95, gt=0, lt=1)
    random_repeats: int = Field(10, ge=1, le=10_000)
    seed: int = Field(0, ge=0, le=2**32 - 1)

    @model_validator(mode="after")
    def _levels(self) -> EvalConfig:
        if not self.cpt_levels or any(not 0 < x < 1 for x in self.cpt_levels):
            raise ValueError(f"cpt_levels must be non-empty values in (0, 1), got {list(self.cpt_levels)}")
        return self


class TEFeatureConfig(Strict):
    """The online TE routing signal (actors/router/te_signal.py): per domain, TE from the trailing mean
    of the strong model's advantage surprise (the domain's recent quality) to the surprise itself
    (the routing outcome) over a sliding window; E_strong -= weight * clip(TE / te_scale, 0, 1) * recent
    advantage. The window's minimum (te_signal.min_window) is checked where the feature is built."""

    weight: float = Field(1.0, ge=0, le=1e6)        # w_te, in the energy's units (w_quality is 4)
    window: int = Field(96, ge=1, le=100_000)       # the domain's last decisions the TE is estimated on
    smooth: int = Field(8, ge=1, le=10_000)         # trailing-mean length of the quality series
    every: int = Field(16, ge=1, le=100_000)        # recompute a domain's TE every `every` new decisions
    te_scale: float = Field(0.05, gt=0, le=100)     # nats at which the gate saturates
    k: int = Field(4, ge=1, le=100)                 # KSG neighbours
    k_hist: int = Field(1, ge=1, le=16)             # outcome history length
    delay: int = Field(1, ge=1, le=100)             # quality -> outcome delay
    seed: int = Field(0, ge=0, le=2**32 - 1)        # KSG tie-breaking noise

    def min_window(self) -> int:
        """The shortest window the TE can be estimated on: the trailing mean's `smooth` samples, the
        embedding's history and delay, k + 1 neighbours on each side, plus slack."""
        return self.smooth + max(self.k_hist, self.delay) + 2 * (self.k + 1) + 8

    @model_validator(mode="after")
    def _window(self) -> TEFeatureConfig:
        if self.window < self.min_window():
            raise InputError("window", f"window {self.window} is too short for smooth={self.smooth}, k={self.k}, "
                             f"k_hist={self.k_hist}, delay={self.delay}", f">= {self.min_window()}")
        return self


class TEAblationConfig(Strict):
    """`jobs.route_eval --te-ablation`: the router fitted on a seeded `train_share` of the routes, then
    online on streams drawn (seeded, with replacement) from each benchmark's other routes: as recorded
    (stationary) and with a planted switch in up to `planted_domains` of the most frequent domains of
    the stream holding at most `max_planted_share` of it (every other block of `period` requests: `swap` exchanges the strong and weak rewards,
    `weak_down` zeroes the weak model's). Methods energy / energy_te / energy_recency on the same
    streams; bootstrap over stream positions (all seeds together) for the CIs."""

    seeds: int = Field(5, ge=1, le=1000)
    n_stream: int = Field(4000, ge=100, le=10_000_000)
    train_share: float = Field(0.5, gt=0, lt=1)
    planted_domains: int = Field(4, ge=1, le=1024)
    max_planted_share: float = Field(0.5, gt=0, le=1)   # planted domains hold at most this share of the stream
    period: int = Field(1000, ge=2, le=10_000_000)
    kind: PlantedKind = "swap"
    n_bootstrap: int = Field(200, ge=0, le=100_000)


class RouteEvalSpec(Strict):
    """What `jobs.route_eval` runs: models, features, predictor, domains, energy, protocol, ablations."""

    name: str = Field("route_eval", min_length=1, max_length=200)
    strong: ModelCard = Field(default_factory=lambda: ModelCard(
        name="gpt-4-1106-preview", cost=24.7, latency_s=1.0, context_tokens=128_000))
    weak: ModelCard = Field(default_factory=lambda: ModelCard(
        name="mistralai/Mixtral-8x7B-Instruct-v0.1", cost=0.24, latency_s=1.0, context_tokens=32_768))
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    predictor: PredictorConfig = Field(default_factory=PredictorConfig)
    domains: DomainConfig = Field(default_factory=DomainConfig)
    energy: EnergyConfig = Field(default_factory=EnergyConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    ablations: tuple[Ablation, ...] = ABLATIONS
    online: bool = False                 # posteriors also learn from the evaluated fold's bandit feedback
    te: TEFeatureConfig = Field(default_factory=TEFeatureConfig)               # energy_te / energy_recency
    te_ablation: TEAblationConfig = Field(default_factory=TEAblationConfig)    # --te-ablation
    max_rows: int | None = Field(None, ge=10, le=10_000_000)   # seeded subsample per file (tests, smoke runs)
    workers: WorkerConfig = Field(default_factory=lambda: WorkerConfig(num_gpus=0))

    @field_validator("weak")
    @classmethod
    def _distinct(cls, weak: ModelCard, info: ValidationInfo) -> ModelCard:
        strong = info.data.get("strong")
        if strong is not None and strong.name == weak.name:
            raise ValueError(f"weak names the strong model {weak.name!r}; the two must differ")
        return weak

    @model_validator(mode="after")
    def _te_online(self) -> RouteEvalSpec:
        te = [a for a in self.ablations if a in TE_METHODS]
        if te and not self.online:
            raise InputError("online", f"ablations {te} learn from feedback and need online", "true (--online)")
        return self
