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

__all__ = ["ABLATIONS", "Ablation", "DomainConfig", "EmbeddingConfig", "EnergyConfig", "EvalConfig", "ModelCard",
           "PredictorConfig", "PredictorKind", "RouteEvalSpec"]

PredictorKind = Literal["logistic", "mlp"]
Ablation = Literal["energy_t0", "thompson", "predictor", "random"]
ABLATIONS: tuple[str, ...] = ("energy_t0", "thompson", "predictor", "random")
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
    max_rows: int | None = Field(None, ge=10, le=10_000_000)   # seeded subsample per file (tests, smoke runs)
    workers: WorkerConfig = Field(default_factory=lambda: WorkerConfig(num_gpus=0))

    @field_validator("weak")
    @classmethod
    def _distinct(cls, weak: ModelCard, info: ValidationInfo) -> ModelCard:
        strong = info.data.get("strong")
        if strong is not None and strong.name == weak.name:
            raise ValueError(f"weak names the strong model {weak.name!r}; the two must differ")
        return weak
