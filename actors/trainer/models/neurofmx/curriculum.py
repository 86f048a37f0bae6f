"""The three-stage curriculum and modality dropout.

Stage 1 (unimodal): each sample shows one modality; masked modelling 1.0 + reconstruction 0.5.
Stage 2 (pairwise): two modalities; masked 0.5 + contrastive 1.0 + reconstruction 0.3.
Stage 3 (multimodal): every modality, each dropped with probability p (0.1) keeping at least one;
masked 0.3 + contrastive 0.8 + forecasting 0.5 + diffusion 0.2.

Stage k starts at global step `starts[k-1]`; with `blend_steps > 0` the weights move linearly from the
previous stage's to the new stage's over that many steps after the boundary (what changes at the
boundary is then the sampling of modalities, not the loss scale).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LOSSES", "STAGE_WEIGHTS", "Curriculum", "modality_dropout", "sample_rng"]

LOSSES = ("masked", "reconstruction", "contrastive", "forecast", "diffusion")
STAGE_WEIGHTS: dict[int, dict[str, float]] = {
    1: {"masked": 1.0, "reconstruction": 0.5},
    2: {"masked": 0.5, "contrastive": 1.0, "reconstruction": 0.3},
    3: {"masked": 0.3, "contrastive": 0.8, "forecast": 0.5, "diffusion": 0.2},
}


@dataclass(frozen=True)
class Curriculum:
    stage2_step: int
    stage3_step: int
    blend_steps: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.stage2_step <= self.stage3_step:
            raise ValueError(f"stage steps must satisfy 0 <= stage2 ({self.stage2_step}) <= stage3 ({self.stage3_step})")

    def stage(self, step: int) -> int:
        return 1 if step < self.stage2_step else 2 if step < self.stage3_step else 3

    def weights(self, step: int) -> dict[str, float]:
        """Every loss's weight at `step` (0.0 for the losses the stage does not use)."""
        s = self.stage(step)
        new = {k: STAGE_WEIGHTS[s].get(k, 0.0) for k in LOSSES}
        if s == 1 or self.blend_steps <= 0:
            return new
        start = self.stage2_step if s == 2 else self.stage3_step
        prev_stage = 1 if s == 2 or self.stage2_step == self.stage3_step else 2
        frac = (step - start + 1) / self.blend_steps
        if frac >= 1:
            return new
        old = {k: STAGE_WEIGHTS[prev_stage].get(k, 0.0) for k in LOSSES}
        return {k: (1 - frac) * old[k] + frac * new[k] for k in LOSSES}


def sample_rng(seed: int, step: int, sample_id: int) -> np.random.Generator:
    """The random stream of one sample at one step: masks and modality choices depend on (seed, step,
    sample id) only, not on the batch a sample lands in or the rank that holds it."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(step), int(sample_id) & 0xFFFFFFFFFFFF])


def modality_dropout(present: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """Drop each present modality with probability p; if all would go, keep one present modality chosen
    uniformly (so at least one is always kept). present: [M] bool -> kept [M] bool."""
    present = np.asarray(present, dtype=bool)
    draws = rng.random(len(present))
    kept = present & (draws >= p)
    if present.any() and not kept.any():
        kept[rng.choice(np.flatnonzero(present))] = True
    return kept
