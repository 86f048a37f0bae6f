"""Perceiver-IO fusion across modalities (Jaegle et al. 2021) with torch's scaled_dot_product_attention.

One fusion block: the latent array reads every modality's tokens (cross-attention in, keys = the
concatenated streams, masked tokens excluded), thinks (self-attention + MLP over the latents) and writes
back (cross-attention out: each stream's tokens query the latents). A learned null key/value is
always attendable, so a sample whose keys are all masked gets a defined output, and a masked key has
exactly zero attention weight: changing it changes nothing.

`AlignedExchange` (model.cfg.fusion_aligned) sits beside it: the latents summarise the whole trial, so a
stream learns what another modality says about one instant only through that summary; the exchange adds
the other modalities' tokens of the same instant directly (docs/neurofmx.md measures what it adds).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["AlignedExchange", "Attention", "MLP", "PerceiverFusion"]


class Attention(nn.Module):
    """Multi-head attention (pre-norm on both sides), keys masked by `key_mask` [B, Lk] (True = attend)."""

    def __init__(self, d_model: int, n_heads: int, null_key: bool = True):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not a multiple of n_heads {n_heads}")
        self.h = n_heads
        self.q_norm, self.kv_norm = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.q, self.kv, self.out = nn.Linear(d_model, d_model), nn.Linear(d_model, 2 * d_model), nn.Linear(d_model, d_model)
        self.null = nn.Parameter(torch.zeros(1, 1, 2 * d_model)) if null_key else None

    def forward(self, x: Tensor, context: Tensor, key_mask: Tensor | None = None) -> Tensor:
        B, Lq, D = x.shape
        q = self.q(self.q_norm(x))
        kv = self.kv(self.kv_norm(context))
        if key_mask is None:
            key_mask = torch.ones(B, context.shape[1], dtype=torch.bool, device=x.device)
        if self.null is not None:
            kv = torch.cat([self.null.expand(B, 1, -1).to(kv.dtype), kv], dim=1)
            key_mask = torch.cat([torch.ones(B, 1, dtype=torch.bool, device=x.device), key_mask], dim=1)
        # a masked key's value is zeroed too: its weight is 0, and 0 * (a non-finite value) would not be
        kv = torch.where(key_mask[..., None], kv, torch.zeros((), dtype=kv.dtype, device=kv.device))
        k, v = kv.chunk(2, dim=-1)
        heads = lambda t: t.reshape(B, t.shape[1], self.h, D // self.h).transpose(1, 2)   # noqa: E731
        y = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), attn_mask=key_mask[:, None, None, :])
        return self.out(y.transpose(1, 2).reshape(B, Lq, D))


class MLP(nn.Module):
    def __init__(self, d_model: int, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, mult * d_model), nn.GELU(),
                                 nn.Dropout(dropout), nn.Linear(mult * d_model, d_model))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class PerceiverFusion(nn.Module):
    """latents <- latents + CrossAttn(latents, streams); latents <- latents + SelfAttn + MLP (x n_self);
    each stream <- stream + CrossAttn(stream, latents) + MLP."""

    def __init__(self, d_model: int, n_heads: int = 4, n_self: int = 1, dropout: float = 0.0, mlp_mult: int = 4):
        super().__init__()
        self.cross_in = Attention(d_model, n_heads)
        self.mlp_in = MLP(d_model, mlp_mult, dropout)
        self.self_attn = nn.ModuleList(Attention(d_model, n_heads, null_key=False) for _ in range(n_self))
        self.self_mlp = nn.ModuleList(MLP(d_model, mlp_mult, dropout) for _ in range(n_self))
        self.cross_out = Attention(d_model, n_heads, null_key=False)
        self.mlp_out = MLP(d_model, mlp_mult, dropout)

    def forward(self, latents: Tensor, streams: list[Tensor], key_masks: list[Tensor],
                compiled: bool = False) -> tuple[Tensor, list[Tensor]]:
        """`compiled`: through torch.compile (model.cfg.compile on CUDA; one graph that every fusion block
        of a shape shares: the blocks are arguments of one compiled function)."""
        if compiled:
            return _compiled_fusion()(self, latents, streams, key_masks)
        return self._fuse(latents, streams, key_masks)

    def _fuse(self, latents: Tensor, streams: list[Tensor], key_masks: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        keys = torch.cat(streams, dim=1)
        mask = torch.cat(key_masks, dim=1)
        latents = latents + self.cross_in(latents, keys, mask)
        latents = latents + self.mlp_in(latents)
        for attn, mlp in zip(self.self_attn, self.self_mlp):
            latents = latents + attn(latents, latents)
            latents = latents + mlp(latents)
        out = []
        for s in streams:
            s = s + self.cross_out(s, latents)
            out.append(s + self.mlp_out(s))
        return latents, out


_compiled_fuse: Callable | None = None


def _compiled_fusion() -> Callable:
    global _compiled_fuse
    if _compiled_fuse is None:
        _compiled_fuse = torch.compile(PerceiverFusion._fuse, dynamic=False)
    return _compiled_fuse


class AlignedExchange(nn.Module):
    """Time-aligned cross-modal exchange, beside the Perceiver: each stream's token adds a projection of
    every other stream's token that covers the same instant. The latent array is one summary of the
    whole trial; this path carries what another modality says about *this* moment (the LFP at a hidden
    spike bin). Only visible source tokens contribute (a hidden or dropped token adds exactly zero), so,
    as in the Perceiver, no hidden data reaches any output."""

    def __init__(self, d_model: int, streams: list[str]):
        super().__init__()
        self.streams = list(streams)
        self.norm = nn.ModuleDict({s: nn.LayerNorm(d_model) for s in self.streams})
        self.proj = nn.ModuleDict({s: nn.Linear(d_model, d_model) for s in self.streams})

    def forward(self, xs: dict[str, Tensor], align: dict[tuple[str, str], tuple[Tensor, Tensor]]) -> dict[str, Tensor]:
        """xs: stream -> [B, T, D]; align[(target, source)] = (index [B, T_target] into the source's tokens,
        weight [B, T_target] in {0, 1}: the source token is real and visible)."""
        msg = {s: self.proj[s](self.norm[s](xs[s])) for s in self.streams}
        out = dict(xs)
        for (tgt, src), (idx, w) in align.items():
            y = torch.gather(msg[src], 1, idx[..., None].expand(-1, -1, msg[src].shape[-1]))
            out[tgt] = out[tgt] + w[..., None].to(y.dtype) * y
        return out
