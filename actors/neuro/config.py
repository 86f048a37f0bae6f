"""Pydantic specs of the synthetic neural datasets (configs/neuro/*.yaml, `jobs.neuro_data --set ...`)
and of the evaluation (`jobs.neuro_eval`).

Every numeric field is bounded; unknown keys are errors (Strict). The defaults are the LFADS recipes
of issue 14: Lorenz spiking (65 conditions x 20 trials, 100 bins of 10 ms, 30 neurons, 5 Hz base) and
the chaotic RNN (N=50, g=1.5, tau=25 ms, 130 conditions x 10 trials, 30 Hz).
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from actors.common.config import Strict
from actors.common.errors import InputError

__all__ = ["ChaoticRNNConfig", "DatasetKind", "EvalSpec", "FieldConfig", "LorenzConfig", "NeuroDataSpec"]

DatasetKind = Literal["lorenz", "chaotic_rnn"]


class LorenzConfig(Strict):
    """Lorenz latents (Euler, one step per `steps_per_bin`), z-scored, log-rate = log(base) + gain * z @ W."""

    sigma: float = Field(10.0, gt=0, le=1e3)
    rho: float = Field(28.0, gt=0, le=1e3)
    beta: float = Field(8.0 / 3.0, gt=0, le=1e3)
    dt: float = Field(0.006, gt=0, le=0.1)             # Euler step (Lorenz time units)
    steps_per_bin: int = Field(1, ge=1, le=100)        # Euler steps per 10 ms bin
    burn_in_steps: int = Field(1500, ge=0, le=1_000_000)
    init_std: float = Field(10.0, gt=0, le=1e3)        # spread of the random starts before burn-in
    n_conditions: int = Field(65, ge=1, le=100_000)
    trials_per_condition: int = Field(20, ge=1, le=10_000)
    n_bins: int = Field(100, ge=2, le=100_000)
    n_neurons: int = Field(30, ge=2, le=100_000)
    base_rate_hz: float = Field(5.0, gt=0, le=1e4)
    gain: float = Field(1.0, ge=0, le=100)             # multiplies the readout W ~ U(-1, 1)


class ChaoticRNNConfig(Strict):
    """tau dx/dt = -x + g J tanh(x), J ~ N(0, 1/N) (LFADS synthetic data); rates = (tanh x + 1)/2 * max."""

    n_units: int = Field(50, ge=2, le=100_000)
    g: float = Field(1.5, ge=0, le=100)
    tau: float = Field(0.025, gt=0, le=10)
    dt: float = Field(0.01, gt=0, le=1)                # Euler step = bin width (s)
    trial_s: float = Field(1.0, gt=0, le=1000)
    n_conditions: int = Field(130, ge=1, le=100_000)
    trials_per_condition: int = Field(10, ge=1, le=10_000)
    max_rate_hz: float = Field(30.0, gt=0, le=1e4)
    x0_std: float = Field(1.0, ge=0, le=100)
    burn_in_steps: int = Field(0, ge=0, le=1_000_000)
    require_active: bool = True                         # redraw J until the network does not settle
    max_redraws: int = Field(50, ge=0, le=10_000)


class FieldConfig(Strict):
    """A continuous modality (LFP or EEG): channels = linear mix of the z-scored latents + 1/f noise."""

    n_channels: int = Field(16, ge=1, le=10_000)
    rate_hz: float = Field(250.0, gt=0, le=100_000)   # sampling rate; the trial length is the spikes'
    signal_std: float = Field(1.0, ge=0, le=1e6)       # std of the latent-driven part per channel
    noise_std: float = Field(1.0, ge=0, le=1e6)        # std of the 1/f noise per channel
    exponent: float = Field(1.0, ge=0, le=4)           # noise power ~ 1/f^exponent
    smooth_ms: float = Field(0.0, ge=0, le=10_000)     # Gaussian low-pass of the signal (EEG: volume conduction)
    n_sources: int = Field(0, ge=0, le=10_000)         # 0 = every latent; k = only the first k latent dims


class NeuroDataSpec(Strict):
    """One synthetic dataset with its ground truth, split into train / test trials and held-in / held-out
    neurons (the last `round(heldout_fraction * N)` neuron columns are held out, as in NLB)."""

    dataset: DatasetKind = "lorenz"
    seed: int = Field(0, ge=0, le=2**32 - 1)
    lorenz: LorenzConfig = Field(default_factory=LorenzConfig)
    chaotic_rnn: ChaoticRNNConfig = Field(default_factory=ChaoticRNNConfig)
    lfp: FieldConfig | None = Field(default_factory=lambda: FieldConfig(n_channels=16, rate_hz=250.0))
    eeg: FieldConfig | None = Field(default_factory=lambda: FieldConfig(n_channels=8, rate_hz=200.0, noise_std=2.0,
                                                                        smooth_ms=20.0))
    test_fraction: float = Field(0.2, ge=0, lt=1)      # held-out trials per condition
    heldout_fraction: float = Field(0.25, ge=0, lt=1)  # held-out neurons (co-bps)
    shard_size: int = Field(1000, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _rates_fit_the_trial(self) -> NeuroDataSpec:
        bin_s = self.bin_s
        for name in ("lfp", "eeg"):
            f = getattr(self, name)
            if f is not None and f.rate_hz * bin_s < 1 - 1e-9:
                raise InputError(f"{name}.rate_hz", f"{f.rate_hz} Hz is below the spike bin rate {1 / bin_s:g} Hz",
                                 f">= {1 / bin_s:g}")
        return self

    @property
    def bin_s(self) -> float:
        return 0.01 if self.dataset == "lorenz" else self.chaotic_rnn.dt

    @property
    def n_bins(self) -> int:
        return self.lorenz.n_bins if self.dataset == "lorenz" else int(round(self.chaotic_rnn.trial_s / self.chaotic_rnn.dt))

    @property
    def n_neurons(self) -> int:
        return self.lorenz.n_neurons if self.dataset == "lorenz" else self.chaotic_rnn.n_units


class EvalSpec(Strict):
    """`jobs.neuro_eval`: which baselines to fit and how long, the probes, the dropout test."""

    seed: int = Field(0, ge=0, le=2**32 - 1)
    smoothing_sigmas_ms: list[float] = Field(default_factory=lambda: [20.0, 40.0, 60.0, 80.0, 120.0],
                                             min_length=1, max_length=32)
    baselines: list[Literal["smoothing", "psth_oracle", "gru_sae", "ndt", "cebra"]] = Field(
        default_factory=lambda: ["smoothing", "psth_oracle", "gru_sae", "ndt", "cebra"])
    baseline_steps: int = Field(1500, ge=1, le=1_000_000)   # optimiser steps of the GRU / NDT baselines
    baseline_hidden: int = Field(64, ge=4, le=4096)
    baseline_lr: float = Field(3e-3, gt=0, le=1)
    baseline_batch: int = Field(64, ge=1, le=100_000)
    cebra_iterations: int = Field(5000, ge=1, le=1_000_000)  # CEBRA-Time training steps (batch 512)
    cebra_dims: int = Field(8, ge=1, le=512)                 # its embedding's dimension
    few_shot_k: list[int] = Field(default_factory=lambda: [1, 5, 10, 25, 50], max_length=16)
    dropout_p: float = Field(0.5, ge=0, le=1)                # modality dropout robustness test
    ridge_alpha: float = Field(1e-2, ge=0, le=1e6)           # latent / few-shot linear probes
    mask_samples: int = Field(4, ge=1, le=1000)              # NeuroFMX: masked-inference partitions averaged
    # NeuroFMX's per-bin features (the probes' and the GLM readout's input): every stream's output (spikes,
    # LFP, EEG; each field's token holding the bin) side by side, or the spikes stream's alone (the tables
    # before 2026-12-05; docs/neurofmx.md)
    feature_streams: Literal["spikes", "all"] = "all"
    readout: Literal["glm", "native"] = "glm"                # rates: Poisson GLM of the features, or the method's own
    # the readout GLM's L2 penalty (scikit-learn PoissonRegressor's alpha), or "cv": per neuron, the one of
    # glm_alphas with the least held-out Poisson NLL in glm_folds-fold CV over the training trials
    glm_alpha: float | Literal["cv"] = "cv"
    glm_alphas: list[float] = Field(default_factory=lambda: [1e-4, 1e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0],
                                   min_length=1, max_length=32)
    glm_folds: int = Field(3, ge=2, le=20)
    device: Literal["cpu", "cuda", "auto"] = "auto"          # NeuroFMX and the learned baselines (auto: CUDA if there)

    @model_validator(mode="after")
    def _penalties(self) -> EvalSpec:
        if self.glm_alpha != "cv" and not 0 <= self.glm_alpha <= 1e3:
            raise InputError("glm_alpha", f"{self.glm_alpha} is out of range", '"cv" or a number in [0, 1000]')
        bad = [a for a in self.glm_alphas if not 0 <= a <= 1e3]
        if bad:
            raise InputError("glm_alphas", f"{bad} out of range", "numbers in [0, 1000]")
        return self
