"""Pydantic models for the transfer-entropy subsystem's YAML (configs/te/*.yaml) and calls.

Names and defaults follow JIDT's TransferEntropyCalculatorKraskov so results can be compared with it:
k_hist/k_tau (destination history), l_hist/l_tau (source history), delay u (source sample at
t+1-u predicts the destination at t+1), k = 4 neighbours, KSG algorithm 1, each embedded column
z-scored, Gaussian noise of 1e-8 standard deviations added to break ties.
"""
from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from actors.common.errors import from_validation

M = TypeVar("M", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TEParams(_Strict):
    """Embedding and KSG estimator settings for one TE / CMI / MI estimate."""

    k_hist: int = Field(1, ge=1, le=256)      # destination history length (JIDT k)
    k_tau: int = Field(1, ge=1, le=10_000)    # destination embedding delay
    l_hist: int = Field(1, ge=1, le=256)      # source history length (JIDT l)
    l_tau: int = Field(1, ge=1, le=10_000)    # source embedding delay
    delay: int = Field(1, ge=1, le=10_000)    # source-destination delay u
    cond_hist: int = Field(1, ge=1, le=256)   # history length of each conditional source
    cond_tau: int = Field(1, ge=1, le=10_000)
    cond_delay: int = Field(1, ge=1, le=10_000)
    k: int = Field(4, ge=1, le=1_000)         # nearest neighbours in the joint space
    algorithm: Literal[1, 2] = 1              # KSG algorithm (JIDT ...Kraskov1 / ...Kraskov2)
    normalise: bool = True                    # z-score every embedded column (ddof=1, as JIDT)
    noise: float = Field(1e-8, ge=0, le=1)    # Gaussian noise, in standard deviations; 0 = off
    seed: int = Field(0, ge=0)                # seed of that noise
    theiler: int = Field(0, ge=0, le=100_000)  # exclude neighbours with |i - j| <= theiler
    workers: int = Field(1, ge=-1, le=1024)   # cKDTree query threads (-1 = all cores)
    backend: Literal["auto", "cpu", "torch", "triton"] = "auto"  # KSG path; auto: triton on CUDA, else cpu (batched.py)


class SignificanceConfig(_Strict):
    """Surrogate test: shuffle (or circularly shift) the source past, keep the destination."""

    n_surrogates: int = Field(100, ge=1, le=100_000)
    method: Literal["permutation", "circular"] = "permutation"
    min_shift: int | None = Field(None, ge=1)  # circular: shifts in [min_shift, n - min_shift]; None -> n // 10
    seed: int = Field(1, ge=0)
    alpha: float = Field(0.05, gt=0, lt=1)


class RagwitzConfig(_Strict):
    """Ragwitz criterion search: the (history, delay) whose nearest-neighbour forecast errs least."""

    k_range: tuple[int, int] = (1, 5)         # history lengths searched, inclusive
    tau_range: tuple[int, int] = (1, 3)       # embedding delays searched, inclusive
    n_neighbours: int | None = Field(None, ge=1)  # None -> TEParams.k (as JIDT)
    source: bool = False                      # also embed the source by its own Ragwitz search

    @model_validator(mode="after")
    def _ranges(self) -> RagwitzConfig:
        for name in ("k_range", "tau_range"):
            lo, hi = getattr(self, name)
            if lo < 1 or hi < lo:
                raise ValueError(f"{name} must satisfy 1 <= lo <= hi, got {(lo, hi)}")
        return self


class NetworkConfig(_Strict):
    """A bivariate TE network: every ordered pair, best lag, surrogate p-values, network correction."""

    params: TEParams = Field(default_factory=TEParams)
    significance: SignificanceConfig = Field(default_factory=SignificanceConfig)
    lags: tuple[int, int] | None = None       # inclusive u range searched; None -> params.delay
    correction: Literal["max", "fdr", "none"] = "max"  # max-statistic (FWER) or Benjamini-Hochberg
    mode: Literal["bivariate", "multivariate"] = "bivariate"  # multivariate: greedy, small N (multivariate.py)
    ragwitz: RagwitzConfig | None = None      # auto-embed each destination (and source) first

    @model_validator(mode="after")
    def _lags(self) -> NetworkConfig:
        if self.lags is not None:
            lo, hi = self.lags
            if lo < 1 or hi < lo or hi > 10_000:
                raise ValueError(f"lags must satisfy 1 <= lo <= hi <= 10000, got {(lo, hi)}")
        return self

    def lag_values(self) -> list[int]:
        """The source-destination delays u searched for every pair."""
        if self.lags is None:
            return [self.params.delay]
        return list(range(self.lags[0], self.lags[1] + 1))


class WorkerConfig(_Strict):
    """TEEstimator actor resources: CPU actors on a laptop, GPU-pinned ones on a cluster."""

    num_workers: int | Literal["auto"] = "auto"   # auto -> one per GPU, else one per num_cpus
    num_gpus: float | Literal["auto"] = 0          # the CPU path needs none; "auto" -> 1 per GPU
    num_cpus: float = Field(1.0, gt=0)
    max_restarts: int = -1
    max_task_retries: int = 3


class TENetworkSpec(_Strict):
    """The te_network job: which columns of the input, the network settings, how to shard pairs."""

    name: str = "te_network"
    columns: list[str] | None = None          # None -> every numeric column of the input
    max_samples: int | None = Field(None, ge=2)  # keep only the first rows
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    workers: WorkerConfig = Field(default_factory=WorkerConfig)
    pairs_per_task: int = Field(8, ge=1, le=100_000)


def validated(cls: type[M], value: M | dict[str, Any] | None = None, /, *, prefix: str = "",
              **overrides: Any) -> M:
    """`cls` from a model or dict plus keyword overrides; bad fields raise InputError, not pydantic's."""
    if isinstance(value, cls) and not overrides:
        return value
    data = value.model_dump() if isinstance(value, BaseModel) else dict(value or {})
    data.update(overrides)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise from_validation(exc, prefix) from None
