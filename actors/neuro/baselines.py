"""The baselines NeuroFMX is compared with, each fit on the training trials only.

Every baseline maps a test trial's held-in spikes (the first N_in columns) to expected counts per bin
for every neuron [T, N] and to per-bin features [T, F] (for the latent probes):
- `smoothing`: each held-in neuron's spikes convolved with a Gaussian (sigma chosen among the
  candidates by the Poisson likelihood of held-out neurons on the training trials); the held-out
  neurons from a Poisson GLM of the smoothed held-in rates (fit on the training trials), as in NLB.
- `psth_oracle`: the condition's trial-averaged PSTH over the training trials, Gaussian-smoothed
  (sigma by two-fold cross-validation on the training trials). It reads the test trial's condition
  label: an oracle no single-trial method has.
- `gru_sae`: an LFADS-like sequential autoencoder: a bidirectional GRU encoder of the held-in spikes
  -> initial condition g0 -> an autonomous GRU generator -> low-dimensional factors -> log-rates of every
  neuron; Poisson NLL, Adam.
- `ndt`: an NDT-like masked transformer: bins of held-in spikes -> transformer encoder -> log-rates of
  every neuron; 25% of the bins masked in training, Poisson NLL on the masked held-in bins and on every
  bin of the held-out neurons.
- `cebra`: CEBRA-Time (Schneider, Lee & Mathis 2023; the `cebra` package from PyPI): a convolutional
  encoder (offset10-model) of the held-in spikes trained self-supervised with InfoNCE, positives 10 bins
  apart in time, no labels; its embedding is the per-bin feature, and since CEBRA has no rate output,
  the rates of every neuron are a Poisson GLM of the embedding fit on the training trials (its readout
  in any table).
Torch models train with a seeded generator on one thread unless told otherwise.
"""
from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d
from torch import nn

from actors.neuro.metrics import fit_glm_readout, fit_poisson_glm, poisson_nll, predict_poisson_glm

__all__ = ["BaselineFit", "GRUSAE", "NDT", "fit_cebra", "fit_psth_oracle", "fit_smoothing", "gaussian_smooth", "train_sequence_model"]


@dataclass
class BaselineFit:
    name: str
    counts: np.ndarray            # [n_test, T, N] expected counts per bin
    features: np.ndarray          # [n_test, T, F]
    train_features: np.ndarray    # [n_train, T, F] (probes are fit on these)
    info: dict
    own_rates: bool = True        # False: `counts` already are the GLM readout of `features` (no twin row)


def gaussian_smooth(counts: np.ndarray, sigma_bins: float) -> np.ndarray:
    """Gaussian smoothing along time (axis 1), reflecting at the trial's ends."""
    x = np.asarray(counts, dtype=np.float64)
    return gaussian_filter1d(x, sigma_bins, axis=1, mode="reflect") if sigma_bins > 0 else x


def fit_smoothing(spikes_train: np.ndarray, spikes_test_in: np.ndarray, n_in: int, bin_s: float,
                  sigmas_ms: list[float]) -> BaselineFit:
    """Smoothing + GLM to the held-out neurons (module docstring). spikes_train: [n, T, N] every neuron;
    spikes_test_in: [m, T, n_in] held-in only."""
    y_tr = spikes_train.astype(np.float64)
    n, T, N = y_tr.shape
    best = None
    scores = {}
    for s_ms in sigmas_ms:
        sm = gaussian_smooth(y_tr[..., :n_in], s_ms / 1000 / bin_s)
        if N > n_in:
            W, b = fit_poisson_glm(sm.reshape(-1, n_in), y_tr[..., n_in:].reshape(-1, N - n_in))
            pred = predict_poisson_glm(sm.reshape(-1, n_in), W, b)
            score = -poisson_nll(y_tr[..., n_in:].reshape(-1, N - n_in), pred)
        else:
            W, b = None, None
            # no held-out neurons: leave-one-trial-half-out likelihood of the held-in smoothing
            score = -poisson_nll(y_tr[1::2, :, :n_in], np.maximum(sm[::2][: len(y_tr[1::2])], 1e-9))
        scores[s_ms] = score
        if best is None or score > best[0]:
            best = (score, s_ms, W, b)
    _, s_ms, W, b = best

    def predict(x_in: np.ndarray) -> np.ndarray:
        sm = gaussian_smooth(x_in.astype(np.float64), s_ms / 1000 / bin_s)
        out = np.empty(sm.shape[:2] + (N,))
        out[..., :n_in] = sm
        if N > n_in:
            out[..., n_in:] = predict_poisson_glm(sm, W, b)
        return out

    test = predict(spikes_test_in)
    train = predict(spikes_train[..., :n_in])
    return BaselineFit("smoothing", np.maximum(test, 1e-9), test[..., :n_in], train[..., :n_in],
                       {"sigma_ms": s_ms, "scores": scores})


def fit_psth_oracle(spikes_train: np.ndarray, cond_train: np.ndarray, cond_test: np.ndarray, bin_s: float,
                    sigmas_ms: list[float]) -> BaselineFit:
    """Condition PSTHs of the training trials, smoothed (sigma by 2-fold CV on the training trials)."""
    y = spikes_train.astype(np.float64)
    conds = np.unique(np.concatenate([cond_train, cond_test]))

    def psth(trials: np.ndarray, labels: np.ndarray, s_ms: float) -> dict[int, np.ndarray]:
        out = {}
        overall = trials.mean(0)
        for c in conds:
            sel = trials[labels == c]
            out[int(c)] = gaussian_smooth((sel.mean(0) if len(sel) else overall)[None], s_ms / 1000 / bin_s)[0]
        return out

    half = np.zeros(len(y), bool)
    for c in np.unique(cond_train):   # alternate the repeats of each condition between the folds
        idx = np.flatnonzero(cond_train == c)
        half[idx[::2]] = True
    scores = {}
    for s_ms in [0.0, *sigmas_ms]:
        nll = 0.0
        for a, b in ((half, ~half), (~half, half)):
            p = psth(y[a], cond_train[a], s_ms)
            pred = np.stack([p[int(c)] for c in cond_train[b]])
            nll += poisson_nll(y[b], np.maximum(pred, 1e-9))
        scores[s_ms] = -nll
    s_best = max(scores, key=scores.get)
    p = psth(y, cond_train, s_best)
    test = np.stack([p[int(c)] for c in cond_test])
    train = np.stack([p[int(c)] for c in cond_train])
    return BaselineFit("psth_oracle", np.maximum(test, 1e-9), test, train, {"sigma_ms": s_best, "scores": scores,
                                                                           "uses_condition_labels": True})


class GRUSAE(nn.Module):
    """LFADS-like: bi-GRU encoder -> g0 -> autonomous GRU generator -> factors -> log-rates."""

    def __init__(self, n_in: int, n_out: int, hidden: int = 64, n_factors: int = 8, g0_dropout: float = 0.1):
        super().__init__()
        self.enc = nn.GRU(n_in, hidden, batch_first=True, bidirectional=True)
        self.g0 = nn.Linear(2 * hidden, hidden)
        self.drop = nn.Dropout(g0_dropout)
        self.gen = nn.GRUCell(1, hidden)
        self.factors = nn.Linear(hidden, n_factors)
        self.readout = nn.Linear(n_factors, n_out)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, h = self.enc(torch.log1p(x))
        g = torch.tanh(self.g0(self.drop(torch.cat([h[0], h[1]], dim=-1))))
        zero = x.new_zeros(x.shape[0], 1)
        fs = []
        for _ in range(x.shape[1]):
            g = self.gen(zero, g)
            fs.append(self.factors(g))
        f = torch.stack(fs, dim=1)
        return self.readout(f), f


class NDT(nn.Module):
    """NDT-like: binned held-in spikes -> Linear + learned positions -> transformer encoder -> log-rates."""

    def __init__(self, n_in: int, n_out: int, T: int, d_model: int = 64, layers: int = 2, heads: int = 4,
                 dropout: float = 0.1):
        super().__init__()
        self.inp = nn.Linear(n_in, d_model)
        self.pos = nn.Parameter(0.02 * torch.randn(T, d_model))
        self.mask_token = nn.Parameter(torch.zeros(d_model))
        layer = nn.TransformerEncoderLayer(d_model, heads, 2 * d_model, dropout, batch_first=True, norm_first=True)
        self.enc = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(d_model, n_out)

    def forward(self, x: torch.Tensor, hide: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.inp(torch.log1p(x))
        if hide is not None:
            h = torch.where(hide[..., None], self.mask_token, h)
        h = self.enc(h + self.pos[: x.shape[1]])
        return self.out(h), h


def train_sequence_model(kind: str, spikes_train: np.ndarray, n_in: int, spikes_test_in: np.ndarray, *,
                         steps: int = 1500, hidden: int = 64, lr: float = 3e-3, batch: int = 64, seed: int = 0,
                         mask_ratio: float = 0.25, device: str = "cpu") -> BaselineFit:
    """Train the GRU SAE (`gru_sae`) or the NDT-like transformer (`ndt`) on the training trials."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    y = torch.as_tensor(spikes_train, dtype=torch.float32)
    n, T, N = y.shape
    if kind == "gru_sae":
        model: nn.Module = GRUSAE(n_in, N, hidden)
    elif kind == "ndt":
        model = NDT(n_in, N, T, d_model=hidden)
    else:
        raise ValueError(f"unknown baseline {kind!r}")
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    losses = []
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, n, (min(batch, n),), generator=g)
        yb = y[idx].to(device)
        x = yb[..., :n_in]
        if kind == "ndt":
            hide = (torch.rand(x.shape[:2], generator=g) < mask_ratio).to(device)
            log_rate, _ = model(x, hide)
            w = torch.zeros_like(yb, dtype=torch.bool)
            w[..., :n_in] = hide[..., None]
            w[..., n_in:] = True
        else:
            log_rate, _ = model(x)
            w = torch.ones_like(yb, dtype=torch.bool)
        log_rate = log_rate.clamp(-12, 6)
        nll = torch.exp(log_rate) - yb * log_rate
        loss = (nll * w).sum() / w.sum()
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()

    @torch.no_grad()
    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        outs, feats = [], []
        xt = torch.as_tensor(x, dtype=torch.float32)
        for i in range(0, len(xt), 256):
            lr_, f = model(xt[i:i + 256].to(device))
            outs.append(torch.exp(lr_.clamp(-12, 6)).cpu().numpy())
            feats.append(f.cpu().numpy())
        return np.concatenate(outs).astype(np.float64), np.concatenate(feats).astype(np.float64)

    test, f_test = run(spikes_test_in)
    _, f_train = run(spikes_train[..., :n_in])
    return BaselineFit(kind, test, f_test, f_train, {"steps": steps, "final_loss": float(np.mean(losses[-50:])),
                                                     "parameters": sum(p.numel() for p in model.parameters())})


@contextlib.contextmanager
def _seeded_cebra_samplers(fixed_seed: int) -> Iterator[None]:
    """CEBRA 0.6.1 seeds each sampler's torch.Generator from the OS (`HasGenerator.__init__` calls
    `generator.seed()`, cebra/distributions/base.py: "do not rely on seeding"), so two fits differ. While
    this is open, the i-th sampler made is seeded with `fixed_seed + i` instead: the baseline repeats
    run to run, and no two samplers draw the same stream."""
    from cebra.distributions import base

    original = base.HasGenerator.__init__
    made = itertools.count()

    def init(self: Any, device: str, seed: int | None = None) -> None:
        original(self, device=device, seed=seed)
        self._seed = fixed_seed + next(made)
        self.generator.manual_seed(self._seed)

    base.HasGenerator.__init__ = init
    try:
        yield
    finally:
        base.HasGenerator.__init__ = original


def fit_cebra(spikes_train: np.ndarray, n_in: int, spikes_test_in: np.ndarray, *, iterations: int = 5000,
              dims: int = 8, glm_alpha: float | str = 1e-4, glm_alphas: tuple[float, ...] = (1e-4,),
              glm_folds: int = 3, seed: int = 0, device: str = "cpu") -> BaselineFit:
    """CEBRA-Time on the training trials' held-in spikes (trials concatenated in time, as CEBRA takes one
    session), each trial embedded on its own (padded at its edges); rates from a Poisson GLM of the
    embedding (module docstring; its penalty `glm_alpha`, or "cv" over `glm_alphas` in `glm_folds` folds).
    Seeded: torch's and numpy's global generators (initialisation, batch order) and, through
    `_seeded_cebra_samplers`, the samplers' own generators."""
    try:
        import cebra
    except ImportError as exc:
        from actors.common.errors import InputError

        raise InputError("baselines", f"cebra is not importable ({exc})",
                         "pip install cebra (the project's `neuro` extra), or leave cebra out of baselines") from exc
    torch.manual_seed(seed)
    np.random.seed(seed)
    cebra_model = cebra.CEBRA(model_architecture="offset10-model", batch_size=512, learning_rate=3e-4, temperature=1.0,
                              output_dimension=dims, max_iterations=iterations, distance="cosine",
                              conditional="time", time_offsets=10, device=device, verbose=False)
    x_train = spikes_train[..., :n_in].astype(np.float32)
    with _seeded_cebra_samplers(seed):
        cebra_model.fit(np.concatenate(list(x_train)))

    def embed(x: np.ndarray) -> np.ndarray:
        return np.stack([cebra_model.transform(trial) for trial in x.astype(np.float32)]).astype(np.float64)

    f_train, f_test = embed(x_train), embed(spikes_test_in)
    loss = np.asarray(cebra_model.state_dict_["loss"], np.float64)
    W, b, chosen = fit_glm_readout(f_train, spikes_train.astype(np.float64), glm_alpha, list(glm_alphas), glm_folds,
                                   seed, device)
    return BaselineFit("cebra", predict_poisson_glm(f_test, W, b), f_test, f_train,
                       {"iterations": iterations, "dims": dims, "first_loss": float(np.mean(loss[:20])),
                        "final_loss": float(np.mean(loss[-20:])), "glm_alpha": float(np.median(chosen)),
                        "parameters": sum(p.numel() for p in cebra_model.solver_.model.parameters()),
                        "version": cebra.__version__}, own_rates=False)
