"""Synthetic neural datasets with ground truth (no real recordings can be downloaded here).

- Lorenz spiking (LFADS recipe): Euler-integrated Lorenz (sigma=10, rho=28, beta=8/3, dt=0.006) from
  burned-in random starts, one trajectory per condition; latents z-scored over the whole set;
  log-rate = log(base) + gain * z @ W with W ~ U(-1, 1) of shape 3 x N; Poisson counts per 10 ms bin.
  Repeats of a condition share latents and rates; only their spikes differ.
- Chaotic RNN (LFADS synthetic data): tau dx/dt = -x + g J tanh(x), J ~ N(0, 1/N), Euler with dt = the
  bin width; rates = (tanh(x) + 1) / 2 * max_rate; one x0 ~ N(0, x0_std^2) per condition.
- LFP / EEG driven by the same latents: channel = signal_std * (latents @ M, unit variance per channel,
  optionally Gaussian-smoothed) + noise_std * (1/f^exponent noise, unit variance), sampled at the
  field's own rate over the same trial (latents linearly interpolated in time); the clean signal is
  shared by the repeats of a condition, the noise is drawn per trial.

Everything is drawn from one `numpy.random.Generator` seeded by the spec, in a fixed order.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from actors.neuro.config import ChaoticRNNConfig, FieldConfig, LorenzConfig, NeuroDataSpec

__all__ = ["NeuroData", "chaotic_rnn_states", "field_channels", "lorenz_euler", "lorenz_latents", "make_dataset",
           "pink_noise", "poisson_spikes", "split_trials", "trial_samples"]


def lorenz_euler(x0: np.ndarray, n_steps: int, dt: float, sigma: float = 10.0, rho: float = 28.0,
                 beta: float = 8.0 / 3.0) -> np.ndarray:
    """Forward-Euler Lorenz trajectories from x0 [..., 3]: [..., n_steps + 1, 3] (x0 included)."""
    x0 = np.asarray(x0, dtype=np.float64)
    out = np.empty(x0.shape[:-1] + (n_steps + 1, 3))
    s = x0.copy()
    out[..., 0, :] = s
    for i in range(n_steps):
        x, y, z = s[..., 0], s[..., 1], s[..., 2]
        d = np.stack([sigma * (y - x), x * (rho - z) - y, x * y - beta * z], axis=-1)
        s = s + dt * d
        out[..., i + 1, :] = s
    return out


def lorenz_latents(cfg: LorenzConfig, rng: np.random.Generator) -> np.ndarray:
    """One burned-in Lorenz trajectory per condition, sampled once per bin: [C, n_bins, 3] (raw units)."""
    starts = rng.normal(0.0, cfg.init_std, size=(cfg.n_conditions, 3)) + np.array([0.0, 0.0, cfg.rho - 1.0])
    s = lorenz_euler(starts, cfg.burn_in_steps, cfg.dt, cfg.sigma, cfg.rho, cfg.beta)[:, -1]
    traj = lorenz_euler(s, (cfg.n_bins - 1) * cfg.steps_per_bin, cfg.dt, cfg.sigma, cfg.rho, cfg.beta)
    return traj[:, ::cfg.steps_per_bin]


def _stays_active(J: np.ndarray, g: float, a: float, x: np.ndarray, steps: int = 1000, last: int = 100) -> bool:
    """Whether the network still moves after `steps` Euler steps from the starts x (a finite N = 50
    network at g = 1.5 often settles on a fixed point; the LFADS data need a chaotic one)."""
    moves = 0.0
    for i in range(steps):
        nxt = x + a * (-x + g * np.tanh(x) @ J.T)
        if i >= steps - last:
            moves += float(np.abs(nxt - x).mean()) / last
        x = nxt
    return moves > 0.01


def chaotic_rnn_states(cfg: ChaoticRNNConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(states x [C, T, N], the connectivity J): Euler steps of tau dx/dt = -x + g J tanh(x), one per bin.

    With `require_active`, J is redrawn (at most `max_redraws` times) until four random starts still
    move after 1,000 steps (mean |dx| per step > 0.01 over the last 100): a chaotic network."""
    n = cfg.n_units
    a = cfg.dt / cfg.tau
    for _ in range(cfg.max_redraws + 1):
        J = rng.normal(0.0, 1.0 / np.sqrt(n), size=(n, n))
        if not cfg.require_active or _stays_active(J, cfg.g, a, rng.normal(0.0, 1.0, size=(4, n))):
            break
    x = rng.normal(0.0, cfg.x0_std, size=(cfg.n_conditions, n))
    step = lambda x: x + a * (-x + cfg.g * np.tanh(x) @ J.T)   # noqa: E731
    for _ in range(cfg.burn_in_steps):
        x = step(x)
    n_bins = int(round(cfg.trial_s / cfg.dt))
    out = np.empty((cfg.n_conditions, n_bins, n))
    for t in range(n_bins):
        out[:, t] = x
        x = step(x)
    return out, J


def poisson_spikes(rates_hz: np.ndarray, bin_s: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson counts with mean rate * bin width, int32, same shape as the rates."""
    return rng.poisson(np.asarray(rates_hz, dtype=np.float64) * bin_s).astype(np.int32)


def pink_noise(rng: np.random.Generator, n_samples: int, n_channels: int, exponent: float = 1.0) -> np.ndarray:
    """[n_samples, n_channels] noise with power spectral density ~ 1/f^exponent, zero mean, unit variance
    (FFT method: complex Gaussian amplitudes scaled by f^(-exponent/2), the DC bin zeroed)."""
    n_freq = n_samples // 2 + 1
    f = np.fft.rfftfreq(n_samples)
    scale = np.zeros(n_freq)
    scale[1:] = f[1:] ** (-exponent / 2.0)
    spec = (rng.normal(size=(n_freq, n_channels)) + 1j * rng.normal(size=(n_freq, n_channels))) * scale[:, None]
    x = np.fft.irfft(spec, n=n_samples, axis=0)
    x -= x.mean(axis=0, keepdims=True)
    sd = x.std(axis=0, keepdims=True)
    return x / np.where(sd > 0, sd, 1.0)


def _gaussian_smooth(x: np.ndarray, sigma_samples: float, axis: int) -> np.ndarray:
    if sigma_samples <= 0:
        return x
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(x, sigma_samples, axis=axis, mode="nearest")


def field_channels(latents: np.ndarray, bin_s: float, cfg: FieldConfig, rng: np.random.Generator,
                   condition: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A continuous modality driven by per-condition latents [C, T, K].

    Returns (recordings [n_trials, S, channels] with per-trial 1/f noise, the clean signal
    [C, S, channels], the mixing matrix M [K', channels]); `condition` maps trials to conditions
    (default: one trial per condition). S = round(T * bin_s * rate_hz); sample j sits at time
    j / rate_hz from the trial start, and bin t's latent at (t + 0.5) * bin_s (its centre).
    """
    C, T, K = latents.shape
    src = latents[..., :cfg.n_sources] if cfg.n_sources else latents
    k = src.shape[-1]
    M = rng.normal(size=(k, cfg.n_channels))
    n_samples = int(round(T * bin_s * cfg.rate_hz))
    t_field = np.arange(n_samples) / cfg.rate_hz
    t_bins = (np.arange(T) + 0.5) * bin_s
    interp = np.empty((C, n_samples, k))
    for c in range(C):
        for j in range(k):
            interp[c, :, j] = np.interp(t_field, t_bins, src[c, :, j])
    signal = interp @ M
    signal = _gaussian_smooth(signal, cfg.smooth_ms * 1e-3 * cfg.rate_hz, axis=1)
    sd = signal.reshape(-1, cfg.n_channels).std(axis=0)
    signal = cfg.signal_std * signal / np.where(sd > 0, sd, 1.0)
    condition = np.arange(C) if condition is None else np.asarray(condition)
    noise = np.stack([pink_noise(rng, n_samples, cfg.n_channels, cfg.exponent) for _ in range(len(condition))])
    recordings = signal[condition] + cfg.noise_std * noise
    return recordings.astype(np.float32), signal.astype(np.float32), M


def split_trials(condition: np.ndarray, test_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean is_test per trial: round(test_fraction * repeats) random repeats of every condition."""
    is_test = np.zeros(len(condition), dtype=bool)
    for c in np.unique(condition):
        idx = np.flatnonzero(condition == c)
        k = int(round(test_fraction * len(idx)))
        if k:
            is_test[rng.choice(idx, size=k, replace=False)] = True
    return is_test


@dataclass
class NeuroData:
    """A generated dataset: per-trial arrays (first axis = trial) and the ground truth."""

    spikes: np.ndarray           # [n, T, N] int32 counts per bin
    rates_hz: np.ndarray         # [n, T, N] true rates (Hz)
    latents: np.ndarray          # [n, T, K] true latents (z-scored; Lorenz state or RNN state)
    condition: np.ndarray        # [n] condition index
    is_test: np.ndarray          # [n] held-out trials
    heldout: np.ndarray          # [N] held-out neurons (the last columns)
    bin_s: float
    fields: dict[str, np.ndarray] = field(default_factory=dict)        # name -> [n, S, C] recordings
    field_signal: dict[str, np.ndarray] = field(default_factory=dict)  # name -> [n_conditions, S, C] clean
    field_rate_hz: dict[str, float] = field(default_factory=dict)
    readout: np.ndarray | None = None                                  # Lorenz W [K, N]
    dataset: str = "lorenz"

    @property
    def n_trials(self) -> int:
        return len(self.condition)

    @property
    def expected_counts(self) -> np.ndarray:
        return self.rates_hz * self.bin_s

    def arrays(self) -> dict[str, np.ndarray]:
        """Everything as named arrays (the ground-truth npz)."""
        out = {"spikes": self.spikes, "rates_hz": self.rates_hz, "latents": self.latents,
               "condition": self.condition, "is_test": self.is_test, "heldout": self.heldout,
               "bin_s": np.float64(self.bin_s)}
        for name, x in self.fields.items():
            out[name] = x
            out[f"{name}_signal"] = self.field_signal[name]
            out[f"{name}_rate_hz"] = np.float64(self.field_rate_hz[name])
        if self.readout is not None:
            out["readout"] = self.readout
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], dataset: str = "lorenz") -> NeuroData:
        names = [k[: -len("_rate_hz")] for k in arrays if k.endswith("_rate_hz")]
        return cls(spikes=arrays["spikes"], rates_hz=arrays["rates_hz"], latents=arrays["latents"],
                   condition=arrays["condition"], is_test=arrays["is_test"].astype(bool),
                   heldout=arrays["heldout"].astype(bool), bin_s=float(arrays["bin_s"]),
                   fields={n: arrays[n] for n in names}, field_signal={n: arrays[f"{n}_signal"] for n in names},
                   field_rate_hz={n: float(arrays[f"{n}_rate_hz"]) for n in names},
                   readout=arrays.get("readout"), dataset=dataset)


def _zscore(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(-1, x.shape[-1])
    sd = flat.std(axis=0)
    return (x - flat.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def make_dataset(spec: NeuroDataSpec) -> NeuroData:
    """The dataset `spec` describes, drawn from `spec.seed` (the same spec gives the same arrays)."""
    rng = np.random.default_rng(spec.seed)
    readout = None
    if spec.dataset == "lorenz":
        cfg = spec.lorenz
        z = _zscore(lorenz_latents(cfg, rng))                               # [C, T, 3]
        readout = rng.uniform(-1.0, 1.0, size=(3, cfg.n_neurons))
        cond_rates = np.exp(np.log(cfg.base_rate_hz) + cfg.gain * z @ readout)
        repeats = cfg.trials_per_condition
    else:
        cfg = spec.chaotic_rnn
        x, _ = chaotic_rnn_states(cfg, rng)
        cond_rates = (np.tanh(x) + 1.0) / 2.0 * cfg.max_rate_hz
        z = _zscore(x)
        repeats = cfg.trials_per_condition
    n_cond = z.shape[0]
    condition = np.repeat(np.arange(n_cond), repeats)
    rates = cond_rates[condition]
    spikes = poisson_spikes(rates, spec.bin_s, rng)
    n_neurons = rates.shape[-1]
    heldout = np.zeros(n_neurons, dtype=bool)
    n_out = int(round(spec.heldout_fraction * n_neurons))
    if n_out:
        heldout[n_neurons - n_out:] = True
    is_test = split_trials(condition, spec.test_fraction, rng)
    data = NeuroData(spikes=spikes, rates_hz=rates.astype(np.float32), latents=z[condition].astype(np.float32),
                     condition=condition, is_test=is_test, heldout=heldout, bin_s=spec.bin_s,
                     readout=readout, dataset=spec.dataset)
    for name in ("lfp", "eeg"):
        fcfg = getattr(spec, name)
        if fcfg is None:
            continue
        rec, clean, _ = field_channels(z, spec.bin_s, fcfg, rng, condition)
        data.fields[name] = rec
        data.field_signal[name] = clean
        data.field_rate_hz[name] = fcfg.rate_hz
    return data


def trial_samples(data: NeuroData, which: np.ndarray) -> list[dict[str, np.ndarray]]:
    """One sample per trial in `which` (indices): the model's inputs, float32, no ground truth
    (spikes [T, N] with every neuron, each field [S, C]; trial and condition ids as int64 scalars)."""
    out = []
    for i in which:
        s = {"spikes": data.spikes[i].astype(np.float32), "trial": np.int64(i),
             "condition": np.int64(data.condition[i])}
        for name, x in data.fields.items():
            s[name] = x[i].astype(np.float32)
        out.append(s)
    return out
