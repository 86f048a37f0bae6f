"""The four NeuroFMX objectives as plain functions of predictions and targets.

- masked modelling / reconstruction: Poisson NLL of counts given log-rates (spikes) and mean squared
  error (LFP, EEG) over a weight mask (hidden tokens for masked modelling, visible ones for
  reconstruction);
- multi-horizon forecasting: the Poisson NLL at `cutoff + h - 1` for each horizon h (the context ends
  at bin `cutoff`), averaged over horizons;
- contrastive: symmetric InfoNCE between two views (cosine similarity / temperature, the diagonal is
  the positive);
- denoising diffusion: DDPM's epsilon-prediction loss with a linear beta schedule.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ddpm_alpha_bar", "diffuse", "forecast_nll", "info_nce", "masked_mse", "poisson_nll"]


def poisson_nll(log_rate: Tensor, counts: Tensor, weight: Tensor | None = None) -> Tensor:
    """Mean over the weighted elements of -log Poisson(counts | exp(log_rate)) (with lgamma(y+1));
    the weight broadcasts to the elements (a [B, T, 1] mask weighs every neuron); 0 when all are zero."""
    nll = torch.exp(log_rate) - counts * log_rate + torch.lgamma(counts + 1.0)
    if weight is None:
        return nll.mean()
    w = weight.to(nll.dtype).expand_as(nll)
    return (nll * w).sum() / w.sum().clamp_min(1.0)


def masked_mse(pred: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """Mean squared error over the weighted elements (0 when there are none)."""
    se = (pred - target) ** 2
    if weight is None:
        return se.mean()
    w = weight.to(se.dtype).expand_as(se)
    return (se * w).sum() / w.sum().clamp_min(1.0)


def forecast_nll(log_rate: Tensor, counts: Tensor, cutoff: Tensor, horizons: list[int] | tuple[int, ...],
                 valid: Tensor | None = None) -> tuple[Tensor, dict[int, Tensor]]:
    """Poisson NLL at bin cutoff[b] + h - 1 of every sample b (the first bin after the context is
    horizon 1), averaged over neurons and samples per horizon, then over horizons.

    log_rate, counts: [B, T, N]; cutoff: [B] long; valid: [B] bool (forecasting samples). A horizon
    past the trial's end is left out for that sample. Returns (mean, {h: per-horizon mean})."""
    B, T, _ = counts.shape
    valid = torch.ones(B, dtype=torch.bool, device=counts.device) if valid is None else valid
    per_h: dict[int, Tensor] = {}
    for h in horizons:
        idx = cutoff + h - 1
        ok = valid & (idx < T) & (idx >= 0)
        if not ok.any():
            continue
        rows = torch.nonzero(ok).squeeze(1)
        lr = log_rate[rows, idx[rows]]
        y = counts[rows, idx[rows]]
        per_h[h] = poisson_nll(lr, y)
    if not per_h:
        return log_rate.sum() * 0.0, per_h
    return torch.stack(list(per_h.values())).mean(), per_h


def info_nce(a: Tensor, b: Tensor, temperature: float = 0.1) -> Tensor:
    """Symmetric InfoNCE: rows of a and b [M, D] are paired (a_i with b_i), every other row of the other
    view is a negative. Logits = cos(a_i, b_j) / temperature."""
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    logits = a @ b.T / temperature
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def ddpm_alpha_bar(n_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """alpha_bar_t = prod_{s <= t} (1 - beta_s) for the linear schedule, t = 0..n_steps-1 (float64)."""
    betas = torch.linspace(beta_start, beta_end, n_steps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


def diffuse(x0: Tensor, eps: Tensor, alpha_bar_t: Tensor) -> Tensor:
    """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps (alpha_bar_t broadcast over x0's last dims)."""
    ab = alpha_bar_t.to(x0.dtype)
    while ab.dim() < x0.dim():
        ab = ab[..., None]
    return ab.sqrt() * x0 + (1.0 - ab).sqrt() * eps
