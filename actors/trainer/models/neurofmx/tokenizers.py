"""Modality tokenizers with one contract: `Tokens(tokens[B, T, D], t0[B], dt, mask[B, T], metadata)`.

Token i of a regular tokenizer covers the time window [t0 + i*dt, t0 + (i+1)*dt) (seconds from the
trial start) and depends on the samples of that window only, so modalities of different rates line up
by time: a 10 ms spike bin, a 20 ms LFP patch (5 samples at 250 Hz), a 20 ms EEG patch (4 at 200 Hz).
`mask` is True for real tokens (False: padding past a trial's length, or no event). Event tokens are
irregular: their times are `metadata["times"]` [B, T] (the centre of the spike's bin) and `dt` is the
time resolution. `Tokens.times()` gives every token's time (window centres for regular tokens), which
is what the model's time encoding uses to align modalities.

- `BinnedSpikeTokenizer`: counts [B, T_bins, N] -> log1p -> sum of `bins_per_token` bins -> Linear.
- `EventSpikeTokenizer`: one token per spike (a count c in a bin gives c tokens) = unit embedding of
  its neuron; at most `max_events` per trial, earliest first (`metadata["truncated"]` counts the rest).
- `PatchTokenizer` (LFP, EEG): samples [B, S, C] -> non-overlapping patches of `patch` samples ->
  Linear(patch * C -> D); a trailing partial patch is zero-padded and still valid.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["BinnedSpikeTokenizer", "EventSpikeTokenizer", "PatchTokenizer", "Tokens", "sinusoidal_time"]


@dataclass
class Tokens:
    tokens: Tensor                 # [B, T, D]
    t0: Tensor                     # [B] start of token 0 (s)
    dt: float                      # seconds per token (regular) or time resolution (events)
    mask: Tensor                   # [B, T] bool, True = a real token
    metadata: dict[str, Any] = field(default_factory=dict)

    def times(self, dtype: torch.dtype | None = None) -> Tensor:
        """[B, T] time of each token (s): metadata["times"] if given, else its window's centre; in `dtype`
        (default t0's; float64 puts a centre that lies on another grid's window boundary exactly on it)."""
        dtype = dtype or self.t0.dtype
        if "times" in self.metadata:
            return self.metadata["times"].to(dtype)
        T = self.tokens.shape[1]
        i = torch.arange(T, device=self.tokens.device, dtype=dtype)
        return self.t0.to(dtype)[:, None] + (i[None, :] + 0.5) * self.dt

    def window(self, time: float | Tensor) -> Tensor:
        """Index of the regular token whose window holds `time` (floor((time - t0) / dt), in float64 so a
        time on a window boundary is not rounded below it), per trial: a scalar time gives [B]; times
        [B, n] (trial b's in row b) give [B, n]."""
        t = torch.as_tensor(time, device=self.t0.device).double()
        t0 = self.t0.double()
        t0 = t0 if t.dim() == 0 else t0.reshape(-1, *([1] * (t.dim() - 1)))
        return torch.floor((t - t0) / self.dt + 1e-9).long()


def sinusoidal_time(times: Tensor, dim: int, min_period: float = 0.005, max_period: float = 10.0) -> Tensor:
    """[..., ] seconds -> [..., dim] sin/cos features with periods geometric in [min_period, max_period]."""
    half = dim // 2
    periods = torch.logspace(torch.log10(torch.tensor(min_period)), torch.log10(torch.tensor(max_period)), half,
                             device=times.device, dtype=torch.float64)
    ang = 2 * torch.pi * times.to(torch.float64)[..., None] / periods
    out = torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1)
    if dim % 2:
        out = torch.cat([out, torch.zeros_like(out[..., :1])], dim=-1)
    return out.to(times.dtype if times.is_floating_point() else torch.float32)


def _lengths_mask(lengths: Tensor | None, B: int, T: int, per_token: int, device: torch.device) -> Tensor:
    """Tokens holding at least one real sample: token i is valid iff i * per_token < length."""
    if lengths is None:
        return torch.ones(B, T, dtype=torch.bool, device=device)
    i = torch.arange(T, device=device)
    return (i[None, :] * per_token) < lengths.to(device)[:, None]


class BinnedSpikeTokenizer(nn.Module):
    def __init__(self, n_neurons: int, d_model: int, bin_s: float, bins_per_token: int = 1):
        super().__init__()
        self.n_neurons, self.bin_s, self.k = n_neurons, bin_s, bins_per_token
        self.proj = nn.Linear(n_neurons * bins_per_token, d_model)

    def n_tokens(self, n_bins: int) -> int:
        return -(-n_bins // self.k)

    def forward(self, counts: Tensor, lengths: Tensor | None = None, t0: Tensor | None = None) -> Tokens:
        B, T, N = counts.shape
        if N != self.n_neurons:
            raise ValueError(f"spikes have {N} neurons, the tokenizer {self.n_neurons}")
        pad = (-T) % self.k
        x = torch.log1p(counts.clamp_min(0))
        if pad:
            x = torch.nn.functional.pad(x, (0, 0, 0, pad))
        x = x.reshape(B, (T + pad) // self.k, self.k * N)
        t0 = torch.zeros(B, device=counts.device) if t0 is None else t0
        return Tokens(self.proj(x), t0, self.bin_s * self.k, _lengths_mask(lengths, B, x.shape[1], self.k, counts.device),
                      {"modality": "spikes", "kind": "binned", "bin_s": self.bin_s, "bins_per_token": self.k,
                       "n_channels": N})


class EventSpikeTokenizer(nn.Module):
    def __init__(self, n_neurons: int, d_model: int, bin_s: float, max_events: int = 512):
        super().__init__()
        self.n_neurons, self.bin_s, self.max_events = n_neurons, bin_s, max_events
        self.unit = nn.Embedding(n_neurons, d_model)

    def forward(self, counts: Tensor, lengths: Tensor | None = None, t0: Tensor | None = None) -> Tokens:
        B, T, N = counts.shape
        if N != self.n_neurons:
            raise ValueError(f"spikes have {N} neurons, the tokenizer {self.n_neurons}")
        c = counts.round().clamp_min(0).long()
        if lengths is not None:
            c = c * (torch.arange(T, device=c.device)[None, :, None] < lengths.to(c.device)[:, None, None])
        E = self.max_events
        units = torch.zeros(B, E, dtype=torch.long, device=c.device)
        times = torch.zeros(B, E, dtype=torch.float32, device=c.device)
        mask = torch.zeros(B, E, dtype=torch.bool, device=c.device)
        truncated = torch.zeros(B, dtype=torch.long, device=c.device)
        t0 = torch.zeros(B, device=c.device) if t0 is None else t0
        for b in range(B):   # bins in time order, neurons in index order within a bin
            flat = c[b].reshape(-1)
            idx = torch.repeat_interleave(torch.arange(T * N, device=c.device), flat)
            n = min(len(idx), E)
            truncated[b] = len(idx) - n
            idx = idx[:n]
            units[b, :n] = idx % N
            times[b, :n] = t0[b] + ((idx // N).float() + 0.5) * self.bin_s
            mask[b, :n] = True
        tokens = self.unit(units) * mask[..., None]
        return Tokens(tokens, t0, self.bin_s, mask,
                      {"modality": "spikes", "kind": "events", "times": times, "units": units, "bin_s": self.bin_s,
                       "truncated": truncated, "n_channels": N})


class PatchTokenizer(nn.Module):
    def __init__(self, n_channels: int, d_model: int, rate_hz: float, patch: int, modality: str = "lfp"):
        super().__init__()
        self.n_channels, self.rate_hz, self.patch, self.modality = n_channels, rate_hz, patch, modality
        self.proj = nn.Linear(n_channels * patch, d_model)

    @property
    def dt(self) -> float:
        return self.patch / self.rate_hz

    def n_tokens(self, n_samples: int) -> int:
        return -(-n_samples // self.patch)

    def forward(self, x: Tensor, lengths: Tensor | None = None, t0: Tensor | None = None) -> Tokens:
        B, S, C = x.shape
        if C != self.n_channels:
            raise ValueError(f"{self.modality} has {C} channels, the tokenizer {self.n_channels}")
        if lengths is not None:
            x = x * (torch.arange(S, device=x.device)[None, :, None] < lengths.to(x.device)[:, None, None])
        pad = (-S) % self.patch
        if pad:
            x = torch.nn.functional.pad(x, (0, 0, 0, pad))
        patches = x.reshape(B, (S + pad) // self.patch, self.patch * C)
        t0 = torch.zeros(B, device=x.device) if t0 is None else t0
        return Tokens(self.proj(patches), t0, self.dt, _lengths_mask(lengths, B, patches.shape[1], self.patch, x.device),
                      {"modality": self.modality, "kind": "patch", "rate_hz": self.rate_hz, "patch": self.patch,
                       "n_channels": C})
