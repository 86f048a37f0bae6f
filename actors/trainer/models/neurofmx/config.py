"""NeuroFMXConfig: the `model.cfg` mapping of configs/train/neurofmx_*.yaml (validated by the factory;
a bad field is an InputError naming `model.cfg.<field>`)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from actors.common.config import Strict
from actors.common.errors import InputError

__all__ = ["CurriculumSpec", "FieldModality", "NeuroFMXConfig", "SpikeModality"]


class SpikeModality(Strict):
    """Binned spike counts [T, n_neurons]; the last `n_heldout` columns are never input (co-bps)."""

    n_neurons: int = Field(30, ge=1, le=100_000)
    n_heldout: int = Field(0, ge=0, le=100_000)
    bin_s: float = Field(0.01, gt=0, le=10)
    tokenizer: Literal["binned", "events"] = "binned"
    bins_per_token: int = Field(1, ge=1, le=1000)
    max_events: int = Field(1024, ge=1, le=1_000_000)   # event tokenizer: spikes kept per trial

    @model_validator(mode="after")
    def _heldin(self) -> SpikeModality:
        if self.n_heldout >= self.n_neurons:
            raise InputError("n_heldout", f"{self.n_heldout} leaves no held-in neuron of {self.n_neurons}",
                             f"< {self.n_neurons}")
        return self

    @property
    def n_heldin(self) -> int:
        return self.n_neurons - self.n_heldout


class FieldModality(Strict):
    """A continuous recording [S, n_channels] at rate_hz, tokenized in patches of `patch` samples."""

    n_channels: int = Field(16, ge=1, le=100_000)
    rate_hz: float = Field(250.0, gt=0, le=1_000_000)
    patch: int = Field(5, ge=1, le=100_000)


class CurriculumSpec(Strict):
    stage2_step: int = Field(200, ge=0, le=100_000_000)
    stage3_step: int = Field(400, ge=0, le=100_000_000)
    blend_steps: int = Field(0, ge=0, le=100_000_000)

    @model_validator(mode="after")
    def _order(self) -> CurriculumSpec:
        if self.stage3_step < self.stage2_step:
            raise InputError("stage3_step", f"{self.stage3_step} is before stage2_step={self.stage2_step}",
                             f">= {self.stage2_step}")
        return self


class NeuroFMXConfig(Strict):
    d_model: int = Field(64, ge=8, le=16_384)
    n_layers: int = Field(4, ge=1, le=512)
    mixer: Literal["mamba2", "mamba1"] = "mamba2"       # SSD (chunked matmuls) or S6 (per-channel A)
    d_state: int = Field(16, ge=1, le=1024)
    expand: int = Field(2, ge=1, le=16)
    d_conv: int = Field(4, ge=1, le=64)
    headdim: int = Field(16, ge=1, le=1024)              # mamba2
    chunk: int = Field(16, ge=1, le=4096)                # mamba2 chunk length (the torch scan and the Triton kernel)
    scan: Literal["auto", "sequential", "parallel", "cuda", "chunked", "triton"] = "auto"
    # a second Mamba per layer reads each stream backwards in time (BiMamba, as in Vim and Caduceus): a
    # hidden bin's rate then sees its future as well as its past (a causal scan sees only the past)
    bidirectional: bool = False
    # the causal depthwise conv of each Mamba block: nn.Conv1d, shifted multiply-adds, or those compiled
    # (torch.compile; CUDA tensors only, the eager `shifts` elsewhere)
    conv: Literal["conv1d", "shifts", "compiled"] = "conv1d"
    # each layer's LayerNorm, Mamba-2 projection epilogue, conv, SiLU, gate, RMSNorm and skip, and each
    # Perceiver fusion block, through torch.compile (CUDA tensors only; the scan stays mamba_ssm's Triton
    # kernel; eager with the same functions elsewhere)
    compile: bool = False
    n_latents: int = Field(32, ge=1, le=65_536)
    n_heads: int = Field(4, ge=1, le=256)
    n_self: int = Field(1, ge=0, le=64)                  # latent self-attention layers per fusion block
    fusion_every: Literal[1, 2, 4] = 1                   # a fusion block after every 1, 2 or 4 Mamba layers and the last
    # each fusion block also adds to every token a projection of the other modalities' tokens of the same
    # instant (AlignedExchange): the Perceiver's latents summarise the whole trial, this carries the moment
    fusion_aligned: bool = False
    mlp_mult: int = Field(4, ge=1, le=64)                # hidden width of the fusion MLPs / d_model
    dropout: float = Field(0.0, ge=0, lt=1)
    spikes: SpikeModality = Field(default_factory=SpikeModality)
    lfp: FieldModality | None = Field(default_factory=lambda: FieldModality(n_channels=16, rate_hz=250.0, patch=5))
    eeg: FieldModality | None = Field(default_factory=lambda: FieldModality(n_channels=8, rate_hz=200.0, patch=4))
    mask_ratio: float = Field(0.25, ge=0, le=1)
    forecast_horizons: list[int] = Field(default_factory=lambda: [1, 5, 10], min_length=1, max_length=64)
    forecast_fraction: float = Field(0.25, ge=0, le=1)    # stage-3 samples that forecast instead of masking
    forecast_min_context: float = Field(0.5, gt=0, lt=1)  # the context is at least this fraction of the trial
    contrastive_windows: int = Field(4, ge=1, le=10_000)
    temperature: float = Field(0.1, gt=0, le=100)
    proj_dim: int = Field(32, ge=1, le=16_384)
    diffusion_steps: int = Field(100, ge=1, le=100_000)
    beta_start: float = Field(1e-4, gt=0, lt=1)
    beta_end: float = Field(0.02, gt=0, lt=1)
    curriculum: CurriculumSpec = Field(default_factory=CurriculumSpec)
    modality_dropout: float = Field(0.1, ge=0, le=1)
    seed: int = Field(0, ge=0, le=2**32 - 1)

    @model_validator(mode="after")
    def _sizes(self) -> NeuroFMXConfig:
        if self.d_model % self.n_heads:
            raise InputError("n_heads", f"{self.n_heads} does not divide d_model={self.d_model}", "a divisor of d_model")
        if self.mixer == "mamba2" and (self.expand * self.d_model) % self.headdim:
            raise InputError("headdim", f"{self.headdim} does not divide expand * d_model = {self.expand * self.d_model}",
                             "a divisor of expand * d_model")
        mamba1_scans, mamba2_scans = ("auto", "sequential", "parallel", "cuda"), ("auto", "chunked", "triton")
        if self.scan not in (mamba2_scans if self.mixer == "mamba2" else mamba1_scans):
            raise InputError("scan", f"{self.scan!r} is not a {self.mixer} scan",
                             ", ".join(mamba2_scans if self.mixer == "mamba2" else mamba1_scans))
        if self.beta_end < self.beta_start:
            raise InputError("beta_end", f"{self.beta_end} is below beta_start={self.beta_start}", f">= {self.beta_start}")
        return self

    @property
    def modalities(self) -> list[str]:
        return ["spikes"] + [m for m in ("lfp", "eeg") if getattr(self, m) is not None]
