"""NeuroFMX: modality tokenizers -> shared Mamba layers per stream -> Perceiver-IO fusion every
`fusion_every` layers (and after the last; with `fusion_aligned` also a time-aligned exchange of the
streams' tokens) -> per-modality heads (Poisson log-rates for spikes, samples for LFP / EEG).

Streams: one per modality (spikes, lfp, eeg), each a token sequence on its own time grid; with the
event tokenizer the spike events are their own input stream and the spikes stream is a grid of bin
queries that only reads the latents. Every stream gets its tokens' absolute times (sinusoidal
features) and a modality embedding, so the latents see all modalities on one time axis. A hidden token
(masked-modelling target, forecast future, dropped modality) is replaced by the stream's mask
embedding before the backbone and is not a key of the fusion: its data never reaches any output.

The training forward (`model(batch, step)`, the trainer's contract) draws its masks per sample from
(seed, step, batch["trial"]) — not from the batch composition — and returns {"loss", the five loss
terms, "stage", "tokens"}. `predict(batch, active=...)` is the evaluation path (each spike bin's rate
from a pass that hides it; the other modalities visible).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from actors.common.errors import InputError
from actors.trainer.models.neurofmx.config import NeuroFMXConfig
from actors.trainer.models.neurofmx.curriculum import Curriculum, modality_dropout, sample_rng
from actors.trainer.models.neurofmx.losses import (
    ddpm_alpha_bar,
    diffuse,
    forecast_nll,
    info_nce,
    masked_mse,
    poisson_nll,
)
from actors.trainer.models.neurofmx.mamba import Mamba2Block, MambaBlock
from actors.trainer.models.neurofmx.perceiver import AlignedExchange, PerceiverFusion
from actors.trainer.models.neurofmx.tokenizers import (
    BinnedSpikeTokenizer,
    EventSpikeTokenizer,
    PatchTokenizer,
    Tokens,
    sinusoidal_time,
)

__all__ = ["Encoded", "NeuroFMX", "Plan"]

LOG_RATE_MIN, LOG_RATE_MAX = -12.0, 6.0


@dataclass
class Plan:
    """What one training step hides, per sample (tensors on the model's device)."""

    stage: int
    active: Tensor                 # [B, M] modality shown as input
    targets: Tensor                # [B, M] modality scored
    forecast: Tensor               # [B] forecasting sample
    cutoff: Tensor                 # [B] first hidden bin of a forecasting sample
    hidden: dict[str, Tensor]      # modality -> [B, T_tokens] hidden tokens (spikes: on the bin-token grid)
    rngs: list[np.random.Generator]


@dataclass
class Encoded:
    tokens: dict[str, Tokens]      # stream -> its tokens (times, masks)
    keys: dict[str, Tensor]        # stream -> [B, T] visible tokens (fusion keys)
    pre: dict[str, Tensor]         # stream -> [B, T, D] before the first fusion (unimodal)
    out: dict[str, Tensor]         # stream -> [B, T, D] final (normed)
    latents: Tensor                # [B, n_latents, D]


class _Denoiser(nn.Module):
    def __init__(self, d_model: int, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * d_model + dim, 2 * d_model), nn.GELU(), nn.Linear(2 * d_model, dim))

    def forward(self, h: Tensor, y_t: Tensor, t_emb: Tensor) -> Tensor:
        return self.net(torch.cat([h, y_t, t_emb], dim=-1))


class NeuroFMX(nn.Module):
    def __init__(self, cfg: NeuroFMXConfig):
        super().__init__()
        self.cfg = cfg
        D, sp = cfg.d_model, cfg.spikes
        self.modalities = cfg.modalities
        self.streams = ["spikes"] + (["events"] if sp.tokenizer == "events" else []) + self.modalities[1:]
        self.curriculum = Curriculum(cfg.curriculum.stage2_step, cfg.curriculum.stage3_step, cfg.curriculum.blend_steps)
        tok: dict[str, nn.Module] = {}
        if sp.tokenizer == "binned":
            tok["spikes"] = BinnedSpikeTokenizer(sp.n_heldin, D, sp.bin_s, sp.bins_per_token)
        else:
            tok["events"] = EventSpikeTokenizer(sp.n_heldin, D, sp.bin_s, sp.max_events)
        for m in self.modalities[1:]:
            f = getattr(cfg, m)
            tok[m] = PatchTokenizer(f.n_channels, D, f.rate_hz, f.patch, modality=m)
        self.tokenizers = nn.ModuleDict(tok)
        self.mask_emb = nn.Parameter(0.02 * torch.randn(len(self.streams), D))
        self.stream_emb = nn.Parameter(0.02 * torch.randn(len(self.streams), D))
        self.time_proj = nn.Linear(D, D)
        self.norms = nn.ModuleList(nn.LayerNorm(D) for _ in range(cfg.n_layers))
        self.mixers = self._mixer_stack(cfg)
        self.mixers_rev = self._mixer_stack(cfg) if cfg.bidirectional else None
        self.fusions = nn.ModuleList(PerceiverFusion(D, cfg.n_heads, cfg.n_self, cfg.dropout, cfg.mlp_mult)
                                     for _ in range(-(-cfg.n_layers // cfg.fusion_every)))
        self.aligned = nn.ModuleList(AlignedExchange(D, self.modalities) for _ in self.fusions) if cfg.fusion_aligned \
            else None
        self.latents = nn.Parameter(0.02 * torch.randn(cfg.n_latents, D))
        self.final_norm = nn.LayerNorm(D)
        self.spike_head = nn.Linear(D, sp.bins_per_token * sp.n_neurons)
        with torch.no_grad():
            self.spike_head.weight.mul_(0.1)
            self.spike_head.bias.fill_(math.log(0.1))   # ~0.1 spikes per bin at the start
        self.field_heads = nn.ModuleDict({m: nn.Linear(D, getattr(cfg, m).patch * getattr(cfg, m).n_channels)
                                          for m in self.modalities[1:]})
        self.proj = nn.ModuleDict({m: nn.Linear(D, cfg.proj_dim) for m in self.modalities})
        dims = {"spikes": sp.bins_per_token * sp.n_neurons}
        dims.update({m: getattr(cfg, m).patch * getattr(cfg, m).n_channels for m in self.modalities[1:]})
        self.denoisers = nn.ModuleDict({m: _Denoiser(D, dims[m]) for m in self.modalities})
        self.register_buffer("alpha_bar", ddpm_alpha_bar(cfg.diffusion_steps, cfg.beta_start, cfg.beta_end).float(),
                             persistent=False)

    @staticmethod
    def _mixer_stack(cfg: NeuroFMXConfig) -> nn.ModuleList:
        if cfg.mixer == "mamba2":
            scan = cfg.scan if cfg.scan in ("auto", "chunked", "triton") else "auto"
            return nn.ModuleList(Mamba2Block(cfg.d_model, cfg.d_state, cfg.expand, cfg.d_conv, cfg.headdim, cfg.chunk,
                                             scan=scan, conv=cfg.conv, compile=cfg.compile)
                                 for _ in range(cfg.n_layers))
        return nn.ModuleList(MambaBlock(cfg.d_model, cfg.d_state, cfg.expand, cfg.d_conv, scan=cfg.scan, conv=cfg.conv)
                             for _ in range(cfg.n_layers))

    # -- the trainer's hooks --------------------------------------------------------------------
    def fsdp_units(self) -> list[nn.Module]:
        return [*self.mixers, *(self.mixers_rev or []), *self.fusions]

    # -- inputs ---------------------------------------------------------------------------------
    def _inputs(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """The batch's modalities as float tensors, shapes checked against the config."""
        cfg = self.cfg
        device = self.latents.device
        out: dict[str, Tensor] = {}
        for m in self.modalities:
            if m not in batch:
                raise InputError(f"batch.{m}", f"the batch has no {m!r} field (fields: {sorted(batch)})",
                                 f"the modalities of the config: {', '.join(self.modalities)}")
            x = torch.as_tensor(batch[m], device=device).float()
            want = cfg.spikes.n_neurons if m == "spikes" else getattr(cfg, m).n_channels
            if x.dim() != 3 or x.shape[-1] != want:
                raise InputError(f"batch.{m}", f"shape {list(x.shape)} is not [batch, time, {want}]",
                                 f"[batch, time, {want}] (model.cfg.{m})")
            out[m] = x
        T, bin_s = out["spikes"].shape[1], cfg.spikes.bin_s
        for m in self.modalities[1:]:
            f = getattr(cfg, m)
            want = int(round(T * bin_s * f.rate_hz))
            if out[m].shape[1] != want:
                raise InputError(f"batch.{m}", f"{out[m].shape[1]} samples for {T} bins of {bin_s} s at {f.rate_hz} Hz",
                                 f"{want} samples (model.cfg.{m}.rate_hz)")
        return out

    def _n_tokens(self, m: str, data: dict[str, Tensor]) -> int:
        if m == "spikes":
            return -(-data["spikes"].shape[1] // self.cfg.spikes.bins_per_token)
        return self.tokenizers[m].n_tokens(data[m].shape[1])

    def _token_dt(self, m: str) -> float:
        return self.cfg.spikes.bin_s * self.cfg.spikes.bins_per_token if m == "spikes" else self.tokenizers[m].dt

    # -- encoder --------------------------------------------------------------------------------
    def encode(self, data: dict[str, Tensor], active: Tensor, hidden: dict[str, Tensor] | None = None) -> Encoded:
        """Tokenize, hide, run the backbone. active: [B, M] bool; hidden: modality -> [B, T_tokens] bool."""
        cfg, D = self.cfg, self.cfg.d_model
        counts = data["spikes"][..., :cfg.spikes.n_heldin]
        B, T_bins, _ = counts.shape
        device = counts.device
        hidden = hidden or {}
        tokens: dict[str, Tokens] = {}
        keys: dict[str, Tensor] = {}
        xs: dict[str, Tensor] = {}

        def place(name: str, tk: Tokens, visible: Tensor) -> None:
            i = self.streams.index(name)
            x = torch.where(visible[..., None], tk.tokens, self.mask_emb[i].to(tk.tokens.dtype))
            time = sinusoidal_time(tk.times(), D).to(x.dtype)
            xs[name] = x + self.time_proj(time) + self.stream_emb[i]
            tokens[name], keys[name] = tk, visible

        def hid(m: str, T: int) -> Tensor:
            h = hidden.get(m)
            return torch.zeros(B, T, dtype=torch.bool, device=device) if h is None else h.to(device)

        spike_on = active[:, 0].to(device)
        if cfg.spikes.tokenizer == "binned":
            tk = self.tokenizers["spikes"](counts)
            place("spikes", tk, tk.mask & spike_on[:, None] & ~hid("spikes", tk.tokens.shape[1]))
        else:
            k = cfg.spikes.bins_per_token
            n_tok = -(-T_bins // k)
            grid = Tokens(torch.zeros(B, n_tok, D, device=device), torch.zeros(B, device=device), cfg.spikes.bin_s * k,
                          torch.ones(B, n_tok, dtype=torch.bool, device=device), {"modality": "spikes", "kind": "grid"})
            place("spikes", grid, torch.zeros(B, n_tok, dtype=torch.bool, device=device))
            hidden_bins = hid("spikes", n_tok).repeat_interleave(k, dim=1)[:, :T_bins]
            shown = counts * (~hidden_bins & spike_on[:, None])[..., None]    # hidden bins' spikes never enter
            tk = self.tokenizers["events"](shown)
            place("events", tk, tk.mask)
        for j, m in enumerate(self.modalities[1:], start=1):
            tk = self.tokenizers[m](data[m])
            place(m, tk, tk.mask & active[:, j].to(device)[:, None] & ~hid(m, tk.tokens.shape[1]))

        names = list(self.streams)
        align = self._alignment(tokens, keys) if self.aligned is not None else {}
        latents = self.latents.expand(B, -1, -1)
        pre: dict[str, Tensor] = {}
        fusion = 0
        groups = self._stack(xs)
        for layer in range(cfg.n_layers):
            groups = [(group, self._mix(layer, x)) for group, x in groups]
            if (layer + 1) % cfg.fusion_every == 0 or layer == cfg.n_layers - 1:
                xs = self._unstack(groups)
                if not pre:
                    pre = dict(xs)
                latents, outs = self.fusions[fusion](latents, [xs[n] for n in names], [keys[n] for n in names],
                                                     compiled=cfg.compile and latents.is_cuda)
                xs = dict(zip(names, outs))
                if self.aligned is not None:
                    xs = self.aligned[fusion](xs, align)
                groups = self._stack(xs) if layer < cfg.n_layers - 1 else []
                fusion += 1
        out = {n: self.final_norm(x) for n, x in xs.items()}
        return Encoded(tokens, keys, pre, out, latents)

    def _alignment(self, tokens: dict[str, Tokens], keys: dict[str, Tensor]) -> dict[tuple[str, str], tuple[Tensor, Tensor]]:
        """For each ordered pair of modality streams: the source token whose window holds each target
        token's centre, and whether it exists and is visible (event tokens, irregular, take no part)."""
        align = {}
        for tgt in self.modalities:
            centre = tokens[tgt].times(torch.float64)   # float64: a centre on a window boundary rounds one way
            for src in self.modalities:
                if src == tgt:
                    continue
                idx = tokens[src].window(centre)
                n = tokens[src].tokens.shape[1]
                inside = (idx >= 0) & (idx < n)
                idx = idx.clamp(0, n - 1)
                align[(tgt, src)] = (idx, inside & torch.gather(keys[src], 1, idx))
        return align

    @staticmethod
    def _stack(xs: dict[str, Tensor]) -> list[tuple[list[str], Tensor]]:
        """Streams of one length concatenated along the batch: the (shared) Mamba layers then run once
        per length instead of once per modality (one kernel launch per op; the same result)."""
        groups: dict[int, list[str]] = {}
        for n, x in xs.items():
            groups.setdefault(x.shape[1], []).append(n)
        return [(names, torch.cat([xs[n] for n in names]) if len(names) > 1 else xs[names[0]])
                for names in groups.values()]

    @staticmethod
    def _unstack(groups: list[tuple[list[str], Tensor]]) -> dict[str, Tensor]:
        return {n: part for names, x in groups for n, part in zip(names, x.chunk(len(names)))}

    def _mix(self, layer: int, x: Tensor) -> Tensor:
        """One residual Mamba layer; bidirectional: plus a second Mamba over the time-reversed input."""
        mixer = self.mixers[layer]
        if self.cfg.mixer == "mamba2" and self.mixers_rev is None:
            return mixer(x, pre_norm=self.norms[layer], residual=True)   # norm and skip inside its compiled halves
        h = self.norms[layer](x)
        y = mixer(h)
        if self.mixers_rev is not None:
            y = y + self.mixers_rev[layer](h.flip(1)).flip(1)
        return x + y

    def decode(self, enc: Encoded, data: dict[str, Tensor]) -> dict[str, Tensor]:
        """Spike log-rates [B, T_bins, N] (every neuron) and each field's samples [B, S, C]."""
        sp = self.cfg.spikes
        h = self.spike_head(enc.out["spikes"])
        B, n_tok, _ = h.shape
        T_bins = data["spikes"].shape[1]
        out = {"log_rates": h.reshape(B, n_tok * sp.bins_per_token, sp.n_neurons)[:, :T_bins].clamp(LOG_RATE_MIN,
                                                                                                     LOG_RATE_MAX)}
        for m in self.modalities[1:]:
            f = getattr(self.cfg, m)
            y = self.field_heads[m](enc.out[m])
            out[m] = y.reshape(B, y.shape[1] * f.patch, f.n_channels)[:, :data[m].shape[1]]
        return out

    # -- evaluation -----------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, batch: dict[str, Any], active: Tensor | np.ndarray | list[str] | None = None,
                passes: int | None = None, samples: int = 1, feature_streams: str = "spikes") -> dict[str, Tensor]:
        """Rates and features of every bin. active: None (every modality), a list of modality names, or
        [B, M] bool. With `passes` = K > 1 (default round(1 / mask_ratio), 4 for 25%) the spike tokens are
        split into K seeded groups and group k is hidden in pass k: each bin's rates and features come
        from the pass that hid it, as in training, so a bin's own spikes never shape its own rate (a
        model also trained to reconstruct visible tokens would otherwise copy them). `samples` = S
        repeats this with S different seeded partitions and averages each bin's rates (and features)
        over them. K = 1: one pass, nothing hidden. Returns log_rates, rates (counts per bin), features
        (per bin: the spikes stream's output [B, T, D], or with `feature_streams="all"` every stream's —
        spikes, then each field's token that holds the bin's centre — concatenated, [B, T, D x streams]),
        latents (of the last pass) and each field's reconstruction (of the last pass; fields are never
        hidden here)."""
        if feature_streams not in ("spikes", "all"):
            raise InputError("feature_streams", repr(feature_streams), "spikes or all")
        data = self._inputs(batch)
        B, T_bins = data["spikes"].shape[:2]
        device = data["spikes"].device
        if active is None:
            act = torch.ones(B, len(self.modalities), dtype=torch.bool, device=device)
        elif isinstance(active, (list, tuple)):
            unknown = [m for m in active if m not in self.modalities]
            if unknown:
                raise InputError("active", f"unknown modalities {unknown}", ", ".join(self.modalities))
            act = torch.tensor([[m in active for m in self.modalities]] * B, device=device)
        else:
            act = torch.as_tensor(np.asarray(active), device=device).bool()
        if passes is None:
            passes = max(1, int(round(1.0 / self.cfg.mask_ratio))) if self.cfg.mask_ratio > 0 else 1
        k = self.cfg.spikes.bins_per_token
        n_tok = self._n_tokens("spikes", data)
        passes = max(1, min(int(passes), n_tok))
        samples = max(1, int(samples)) if passes > 1 else 1
        rates = feats = None
        out: dict[str, Tensor] = {}
        for s in range(samples):
            group = np.zeros(n_tok, np.int64)
            if passes > 1:
                group[np.random.default_rng([self.cfg.seed, 7, s]).permutation(n_tok)] = np.arange(n_tok) % passes
            bin_group = torch.as_tensor(group, device=device).repeat_interleave(k)[:T_bins]
            for g in range(passes):
                hide = torch.as_tensor(group == g, device=device)[None].expand(B, -1) if passes > 1 else None
                enc = self.encode(data, act, None if hide is None else {"spikes": hide})
                dec = self.decode(enc, data)
                f = enc.out["spikes"].repeat_interleave(k, dim=1)[:, :T_bins]
                if feature_streams == "all":
                    f = torch.cat([f, *(self._per_bin(enc, m, T_bins) for m in self.modalities[1:])], dim=-1)
                r = torch.exp(dec["log_rates"])
                if rates is None:
                    rates, feats = torch.zeros_like(r), torch.zeros_like(f)
                bins = bin_group == g
                rates[:, bins] += r[:, bins] / samples
                feats[:, bins] += f[:, bins] / samples
                out = {**dec, "latents": enc.latents}
        out.update({"rates": rates, "log_rates": torch.log(rates), "features": feats})
        return out

    def _per_bin(self, enc: Encoded, stream: str, T_bins: int) -> Tensor:
        """[B, T_bins, D]: the output of `stream`'s token whose window holds each spike bin's centre (the
        streams share one time axis; a field's tokens may be longer or shorter than a bin)."""
        tk, t0 = enc.tokens[stream], enc.tokens["spikes"].t0
        centre = t0[:, None] + (torch.arange(T_bins, device=t0.device, dtype=t0.dtype) + 0.5) * self.cfg.spikes.bin_s
        idx = tk.window(centre).clamp(0, tk.tokens.shape[1] - 1)
        x = enc.out[stream]
        return torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1]))

    # -- training -------------------------------------------------------------------------------
    def plan(self, data: dict[str, Tensor], step: int, ids: list[int]) -> Plan:
        """The step's per-sample modality choices and hidden tokens (see module docstring)."""
        cfg = self.cfg
        stage = self.curriculum.stage(step)
        M = len(self.modalities)
        B, T_bins = data["spikes"].shape[:2]
        n_tok = {m: self._n_tokens(m, data) for m in self.modalities}
        active = np.zeros((B, M), bool)
        targets = np.zeros((B, M), bool)
        forecast = np.zeros(B, bool)
        cutoff = np.zeros(B, np.int64)
        hidden = {m: np.zeros((B, n_tok[m]), bool) for m in self.modalities}
        rngs = [sample_rng(cfg.seed, step, i) for i in ids]
        lo = min(T_bins - 1, max(1, int(math.ceil(cfg.forecast_min_context * T_bins))))
        for b, rng in enumerate(rngs):
            if stage == 1:
                active[b, rng.integers(M)] = True
                targets[b] = active[b]
            elif stage == 2:
                active[b, rng.choice(M, size=min(2, M), replace=False)] = True
                targets[b] = active[b]
            else:
                active[b] = modality_dropout(np.ones(M, bool), cfg.modality_dropout, rng)
                targets[b] = True
                forecast[b] = rng.random() < cfg.forecast_fraction
            if forecast[b]:
                cutoff[b] = rng.integers(lo, T_bins)
                t_cut = cutoff[b] * cfg.spikes.bin_s
                for m in self.modalities:   # a token is hidden when its window ends after the cutoff
                    ends = (np.arange(n_tok[m]) + 1) * self._token_dt(m)
                    hidden[m][b] = ends > t_cut + 1e-9
            else:
                for m in self.modalities:
                    hidden[m][b] = rng.random(n_tok[m]) < cfg.mask_ratio
        device = data["spikes"].device
        tt = lambda a: torch.as_tensor(a, device=device)   # noqa: E731
        return Plan(stage, tt(active), tt(targets), tt(forecast), tt(cutoff), {m: tt(h) for m, h in hidden.items()}, rngs)

    def _ids(self, batch: dict[str, Any], B: int) -> list[int]:
        if "trial" in batch:
            return [int(i) for i in np.asarray(torch.as_tensor(batch["trial"]).cpu()).reshape(-1)]
        return list(range(B))

    def forward(self, batch: dict[str, Any], step: int) -> dict[str, Tensor]:
        cfg = self.cfg
        data = self._inputs(batch)
        counts = data["spikes"]
        B, T_bins, N = counts.shape
        device = counts.device
        plan = self.plan(data, int(step), self._ids(batch, B))
        enc = self.encode(data, plan.active, plan.hidden)
        pred = self.decode(enc, data)
        weights = self.curriculum.weights(int(step))
        k = cfg.spikes.bins_per_token
        not_fc = ~plan.forecast

        # masked modelling / reconstruction: hidden vs visible tokens of the scored modalities
        def score_masks(j: int, m: str, per: int, length: int) -> tuple[Tensor, Tensor]:
            h = plan.hidden[m].repeat_interleave(per, dim=1)[:, :length]
            tgt = (plan.targets[:, j] & not_fc)[:, None]
            on = plan.active[:, j][:, None]
            return tgt & (~on | h), tgt & on & ~h

        masked_terms, recon_terms = [], []
        hid_bins, vis_bins = score_masks(0, "spikes", k, T_bins)
        n_in = cfg.spikes.n_heldin
        w_hidden = torch.zeros(B, T_bins, N, dtype=torch.bool, device=device)
        w_hidden[..., :n_in] = hid_bins[..., None]
        w_hidden[..., n_in:] = (plan.targets[:, 0] & not_fc)[:, None, None]   # held-out neurons: always hidden
        w_visible = torch.zeros_like(w_hidden)
        w_visible[..., :n_in] = vis_bins[..., None]
        masked_terms.append(poisson_nll(pred["log_rates"], counts, w_hidden))
        recon_terms.append(poisson_nll(pred["log_rates"], counts, w_visible))
        field_hidden = {}
        for j, m in enumerate(self.modalities[1:], start=1):
            hs, vs = score_masks(j, m, getattr(cfg, m).patch, data[m].shape[1])
            field_hidden[m] = hs
            masked_terms.append(masked_mse(pred[m], data[m], hs[..., None]))
            recon_terms.append(masked_mse(pred[m], data[m], vs[..., None]))
        losses = {"masked": torch.stack(masked_terms).mean(), "reconstruction": torch.stack(recon_terms).mean()}

        zero = pred["log_rates"].sum() * 0.0
        losses["contrastive"] = self._contrastive(enc, plan, T_bins * cfg.spikes.bin_s) if weights["contrastive"] else zero
        if weights["forecast"] and plan.forecast.any():
            losses["forecast"], per_h = forecast_nll(pred["log_rates"], counts, plan.cutoff, cfg.forecast_horizons,
                                                     plan.forecast & plan.targets[:, 0])
        else:
            losses["forecast"], per_h = zero, {}
        losses["diffusion"] = self._diffusion(enc, plan, data, hid_bins, field_hidden) if weights["diffusion"] else zero
        loss = sum(weights[name] * value for name, value in losses.items())
        loss = loss + 0.0 * self._touch_heads(enc)
        out = {"loss": loss}
        out.update({name: value.detach() for name, value in losses.items()})
        # the same keys at every step and on every rank (the trainer all-reduces them as one vector): a
        # horizon without a scored sample here reports 0
        out.update({f"forecast_h{h}": per_h[h].detach() if h in per_h else zero.detach() for h in cfg.forecast_horizons})
        out["stage"] = torch.tensor(float(plan.stage), device=device)
        out["tokens"] = torch.tensor(float(sum(t.mask.sum().item() for t in enc.tokens.values())), device=device)
        return out

    def _touch_heads(self, enc: Encoded) -> Tensor:
        """A sum through the projection and denoiser heads, which some stages do not use: added with weight
        0, every parameter is in the graph at every step (zero gradients), as DDP over several ranks
        requires (and the optimizer state exists from the first step). Only heads of the root module:
        the FSDP2 units' parameters are sharded outside their own forward."""
        h = enc.latents[:, 0]
        total = sum(self.proj[m](h).sum() for m in self.modalities)
        t_emb = torch.zeros_like(h)
        for den in self.denoisers.values():
            dim = den.net[-1].out_features
            total = total + den(h, h.new_zeros(h.shape[0], dim), t_emb).sum()
        return total

    def _contrastive(self, enc: Encoded, plan: Plan, trial_s: float) -> Tensor:
        """InfoNCE between the unimodal (pre-fusion) encodings of two active modalities, pooled over
        `contrastive_windows` equal time windows: positives = same trial and window."""
        W = self.cfg.contrastive_windows
        pooled, ok = [], []
        for m in self.modalities:
            s = "events" if m == "spikes" and "events" in enc.pre else m
            times = enc.tokens[s].times()
            win = torch.clamp((times / trial_s * W).long(), 0, W - 1)                 # [B, T]
            onehot = torch.nn.functional.one_hot(win, W).to(enc.pre[s].dtype) * enc.keys[s][..., None]
            count = onehot.sum(1)                                                        # [B, W]
            mean = torch.einsum("btw,btd->bwd", onehot, enc.pre[s]) / count.clamp_min(1.0)[..., None]
            pooled.append(self.proj[m](mean))
            ok.append(count > 0)
        terms = []
        M = len(self.modalities)
        for i in range(M):
            for j in range(i + 1, M):
                rows = (ok[i] & ok[j] & (plan.active[:, i] & plan.active[:, j])[:, None]).reshape(-1)
                if int(rows.sum()) < 2:
                    continue
                a = pooled[i].reshape(-1, pooled[i].shape[-1])[rows]
                b = pooled[j].reshape(-1, pooled[j].shape[-1])[rows]
                terms.append(info_nce(a, b, self.cfg.temperature))
        return torch.stack(terms).mean() if terms else self.latents.sum() * 0.0

    def _diffusion(self, enc: Encoded, plan: Plan, data: dict[str, Tensor], hid_bins: Tensor,
                   field_hidden: dict[str, Tensor]) -> Tensor:
        """DDPM epsilon loss on the hidden tokens' values, conditioned on their final representation:
        spikes as 2 (sqrt(y + 3/8) - sqrt(3/8)) per bin-token (every neuron), fields as patches."""
        cfg, D = self.cfg, self.cfg.d_model
        k = cfg.spikes.bins_per_token
        terms = []
        for m in self.modalities:
            if m == "spikes":
                y = data["spikes"]
                B, T, N = y.shape
                pad = (-T) % k
                y = torch.nn.functional.pad(y, (0, 0, 0, pad)).reshape(B, -1, k * N)
                y0 = 2.0 * (torch.sqrt(y + 0.375) - math.sqrt(0.375))
                sel = plan.hidden["spikes"] & (plan.targets[:, 0] & ~plan.forecast)[:, None]
                sel = sel | ((~plan.active[:, 0]) & plan.targets[:, 0] & ~plan.forecast)[:, None]
            else:
                f = getattr(cfg, m)
                x = data[m]
                B, S, C = x.shape
                pad = (-S) % f.patch
                y0 = torch.nn.functional.pad(x, (0, 0, 0, pad)).reshape(B, -1, f.patch * C)
                sel = field_hidden[m].reshape(B, -1)[:, ::f.patch][:, :y0.shape[1]]
            rows = torch.nonzero(sel)
            if len(rows) == 0:
                continue
            # per-sample random streams: t and eps depend on (seed, step, sample), not on the batch
            t_idx = np.empty(len(rows), np.int64)
            eps = np.empty((len(rows), y0.shape[-1]), np.float32)
            rows_np = rows.cpu().numpy()
            for b in np.unique(rows_np[:, 0]):
                pick = rows_np[:, 0] == b
                rng = plan.rngs[b]
                t_idx[pick] = rng.integers(0, cfg.diffusion_steps, size=int(pick.sum()))
                eps[pick] = rng.standard_normal((int(pick.sum()), y0.shape[-1]), dtype=np.float32)
            t = torch.as_tensor(t_idx, device=y0.device)
            e = torch.as_tensor(eps, device=y0.device)
            target = y0[rows[:, 0], rows[:, 1]]
            y_t = diffuse(target, e, self.alpha_bar[t])
            h = enc.out[m][rows[:, 0], rows[:, 1]]
            t_emb = sinusoidal_time(t.float() / cfg.diffusion_steps, D, min_period=1e-3, max_period=4.0).to(h.dtype)
            terms.append(masked_mse(self.denoisers[m](h, y_t, t_emb), e))
        return torch.stack(terms).mean() if terms else self.latents.sum() * 0.0
