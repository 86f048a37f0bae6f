"""NeuroFMX: a multimodal foundation model for neural recordings (docs/neurofmx.md), registered with the
trainer as "neurofmx".

    from actors.trainer import build_model
    model = build_model("neurofmx", {"d_model": 64, "n_layers": 2, "spikes": {"n_neurons": 30, "n_heldout": 7}})
    out = model({"spikes": counts, "lfp": lfp, "eeg": eeg, "trial": ids}, step)   # {"loss", ...}
    pred = model.predict({"spikes": counts, "lfp": lfp, "eeg": eeg})             # log_rates, features, ...

Modules: config (NeuroFMXConfig), tokenizers (the (tokens, t0, dt, mask, metadata) contract), mamba
(S6 and SSD selective scans: pure torch + mamba_ssm kernels where they import), perceiver (Perceiver-IO
fusion), losses, curriculum (3 stages, modality dropout), model (NeuroFMX).
"""
from __future__ import annotations

from typing import Any

from actors.common.config import validated
from actors.trainer.models.neurofmx.config import NeuroFMXConfig
from actors.trainer.models.neurofmx.model import NeuroFMX
from actors.trainer.registry import register_model

__all__ = ["NeuroFMX", "NeuroFMXConfig", "build_neurofmx"]


@register_model("neurofmx")
def build_neurofmx(cfg: dict[str, Any]) -> NeuroFMX:
    """The registered factory: cfg is validated as a NeuroFMXConfig (errors name model.cfg.<field>)."""
    return NeuroFMX(validated(NeuroFMXConfig, cfg, prefix="model.cfg."))
