"""Pydantic models for the transfer-entropy subsystem's YAML (configs/te/*.yaml) and calls.

Names and defaults follow JIDT's TransferEntropyCalculatorKraskov so results can be compared with it:
k_hist/k_tau (destination history), l_hist/l_tau (source history), delay u (source sample at
t+1-u predicts the destination at t+1), k = 4 neighbours, KSG algorithm 1, each embedded column
z-scored, Gaussian noise of 1e-8 standard deviations added to break ties. The building blocks
(Strict, WorkerConfig, validated) come from actors.common.config and are re-exported here.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from actors.common.config import Auto, Strict, WorkerConfig, validated
from actors.common.errors import InputError

__all__ = ["Algorithm", "Backend", "Correction", "Mode", "NetworkConfig", "RagwitzConfig", "SignificanceConfig", "SurrogateMethod",
           "TENetworkSpec", "TEParams", "WorkerConfig", "validated"]

Algorithm = Literal[1, 2]                              # KSG algorithm (JIDT ...Kraskov1 / ...Kraskov2)
Backend = Literal["auto", "cpu", "torch", "triton"]   # KSG path; auto: triton on CUDA, else cpu (batched.py)
SurrogateMethod = Literal["permutation", "circular"]
Correction = Literal["max", "fdr", "none"]            # max-statistic (FWER), Benjamini-Hochberg, none
Mode = Literal["bivariate", "multivariate"]           # multivariate: greedy, small N (multivariate.py)


class TEParams(Strict):
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
    algorithm: Algorithm = 1
    normalise: bool = True                    # z-score every embedded column (ddof=1, as JIDT)
    noise: float = Field(1e-8, ge=0, le=1)    # Gaussian noise, in standard deviations; 0 = off
    seed: int = Field(0, ge=0)                # seed of that noise
    theiler: int = Field(0, ge=0, le=100_000)  # exclude neighbours with |i - j| <= theiler
    workers: int = Field(1, ge=-1, le=1024)   # cKDTree query threads (-1 = all cores)
    backend: Backend = "auto"


class SignificanceConfig(Strict):
    """Surrogate test: shuffle (or circularly shift) the source past, keep the destination."""

    n_surrogates: int = Field(100, ge=1, le=100_000)
    method: SurrogateMethod = "permutation"
    min_shift: int | None = Field(None, ge=1)  # circular: shifts in [min_shift, n - min_shift]; None -> n // 10
    seed: int = Field(1, ge=0)
    alpha: float = Field(0.05, gt=0, lt=1)


class RagwitzConfig(Strict):
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


class NetworkConfig(Strict):
    """A bivariate TE network: every ordered pair, best lag, surrogate p-values, network correction."""

    params: TEParams = Field(default_factory=TEParams)
    significance: SignificanceConfig = Field(default_factory=SignificanceConfig)
    lags: tuple[int, int] | None = None       # inclusive u range searched; None -> params.delay
    correction: Correction = "max"
    mode: Mode = "bivariate"
    ragwitz: RagwitzConfig | None = None      # auto-embed each destination (and source) first
    # multivariate only: screen each inclusion round to the M candidates with the largest linear partial
    # correlation (re-run in every surrogate round, so the max-statistic test stays valid); None = off
    screen: int | None = Field(None, ge=1)

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


class TENetworkSpec(Strict):
    """The te_network job: which columns of the input, the network settings, how to shard pairs."""

    name: str = "te_network"
    columns: list[str] | None = None          # None -> every numeric column of the input
    max_samples: int | None = Field(None, ge=2)  # keep only the first rows
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    # common's defaults (num_gpus "auto"): one GPU-pinned TEEstimator per GPU running the Triton kernel
    # on a GPU cluster, as README and docs/te.md promise; CPU estimators (one per num_cpus) elsewhere
    workers: WorkerConfig = Field(default_factory=WorkerConfig)
    # "auto": chosen from the problem (actors.te.pool.resolve_pairs_per_task): whole targets per task on a
    # device, each task about one full kernel launch; on the CPU about 1e7 neighbour-search row-visits
    pairs_per_task: int | Auto = Field("auto", union_mode="left_to_right")

    @model_validator(mode="after")
    def _pairs_per_task(self) -> TENetworkSpec:
        if isinstance(self.pairs_per_task, int) and not 1 <= self.pairs_per_task <= 100_000:
            raise InputError("pairs_per_task", f"{self.pairs_per_task} is out of range", "'auto' or 1..100000")
        return self

