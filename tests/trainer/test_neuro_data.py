"""The synthetic neural datasets against independent references: scipy's solve_ivp for the Lorenz
Euler integration (first-order convergence), Poisson mean and variance of repeats that share rates,
the readout log-rate formula, 1/f noise slopes by Welch's method, the chaotic RNN's stable fixed point
for g < 1 and sensitivity to initial conditions for g = 1.5, the train/test split per condition."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.signal import welch

from actors.common.errors import InputError
from actors.neuro.config import ChaoticRNNConfig, FieldConfig, LorenzConfig, NeuroDataSpec
from actors.neuro.datasets import (
    chaotic_rnn_states,
    field_channels,
    lorenz_euler,
    make_dataset,
    pink_noise,
    trial_samples,
)


def _lorenz_rhs(_t, s, sigma=10.0, rho=28.0, beta=8.0 / 3.0):
    x, y, z = s
    return [sigma * (y - x), x * (rho - z) - y, x * y - beta * z]


def test_lorenz_euler_matches_solve_ivp_to_first_order():
    x0 = np.array([1.5, -2.0, 20.0])
    horizon = 0.12
    ref = solve_ivp(_lorenz_rhs, (0, horizon), x0, method="DOP853", rtol=1e-12, atol=1e-12).y[:, -1]
    errs = []
    for dt in (0.006, 0.003, 0.0015):
        n = int(round(horizon / dt))
        errs.append(np.linalg.norm(lorenz_euler(x0, n, dt)[-1] - ref))
    assert errs[0] / np.linalg.norm(ref) < 0.05               # dt = 0.006 is close on a short horizon
    for coarse, fine in zip(errs, errs[1:]):
        assert 1.7 < coarse / fine < 2.3                      # forward Euler: error ~ dt


def _small_lorenz(**kw) -> NeuroDataSpec:
    lz = dict(n_conditions=3, trials_per_condition=2000, n_bins=20, n_neurons=8, burn_in_steps=300)
    lz.update(kw)
    return NeuroDataSpec(dataset="lorenz", seed=3, lorenz=LorenzConfig(**lz), lfp=None, eeg=None)


def test_lorenz_rates_follow_the_readout_and_repeats_share_them():
    spec = _small_lorenz(gain=0.7, base_rate_hz=8.0)
    d = make_dataset(spec)
    z = d.latents.reshape(-1, 3).astype(np.float64)           # stored as float32
    assert np.allclose(z.mean(axis=0), 0, atol=1e-5) and np.allclose(z.std(axis=0), 1, atol=1e-5)
    expect = np.log(8.0) + 0.7 * d.latents.astype(np.float64) @ d.readout
    assert np.allclose(np.log(d.rates_hz), expect, atol=1e-5)
    for c in range(3):
        trials = d.rates_hz[d.condition == c]
        assert np.array_equal(trials[0], trials[-1])         # repeats share rates


def test_poisson_counts_have_the_rate_as_mean_and_variance():
    spec = _small_lorenz()
    d = make_dataset(spec)
    lam = d.expected_counts
    z_max, ratios = 0.0, []
    for c in range(3):
        y = d.spikes[d.condition == c].astype(np.float64)     # [2000, T, N] repeats of one rate
        n = len(y)
        lam_c = lam[d.condition == c][0]
        z_max = max(z_max, float(np.abs((y.mean(0) - lam_c) / np.sqrt(lam_c / n)).max()))
        ratios.append(y.var(0, ddof=1).sum() / lam_c.sum())
    assert z_max < 5.5                                        # 480 cells, each ~N(0, 1)
    assert np.allclose(ratios, 1.0, atol=0.03)                # var = mean, pooled over cells


@pytest.mark.parametrize("exponent", [1.0, 2.0])
def test_pink_noise_spectrum_slope(exponent):
    x = pink_noise(np.random.default_rng(0), 2**16, 4, exponent)
    assert np.allclose(x.mean(0), 0, atol=1e-9) and np.allclose(x.std(0), 1, atol=1e-9)
    f, p = welch(x, fs=1.0, nperseg=2048, axis=0)
    band = (f > 0.005) & (f < 0.25)
    slope = np.polyfit(np.log(f[band]), np.log(p[band].mean(axis=1)), 1)[0]
    assert abs(slope + exponent) < 0.1


def test_field_channels_are_the_latent_mix_plus_noise():
    rng = np.random.default_rng(1)
    t = np.arange(50)
    lat = np.stack([np.sin(t / 5.0), np.cos(t / 7.0)], -1)[None].repeat(2, 0)     # [2 conditions, 50, 2]
    cfg = FieldConfig(n_channels=3, rate_hz=300.0, noise_std=0.5, signal_std=2.0)
    rec, clean, M = field_channels(lat, 0.01, cfg, rng, condition=np.array([0, 0, 1]))
    assert rec.shape == (3, 150, 3) and clean.shape == (2, 150, 3)              # 0.5 s at 300 Hz
    assert np.allclose(clean.reshape(-1, 3).std(0), 2.0, rtol=1e-5)
    noise = rec - clean[[0, 0, 1]]
    assert np.allclose(noise.std(axis=1), 0.5, rtol=1e-4)
    assert not np.allclose(noise[0], noise[1])                                    # noise per trial
    # sample j sits at j/300 s and bin t's latent at its centre (t + 0.5) * 10 ms: samples 6 and 9
    # (20 and 30 ms) lie half-way between bins 1-2 and 2-3; each channel is the mix times its own scale
    scale6 = clean[0, 6] / (0.5 * (lat[0, 1] + lat[0, 2]) @ M)
    scale9 = clean[0, 9] / (0.5 * (lat[0, 2] + lat[0, 3]) @ M)
    assert np.allclose(scale6, scale9, rtol=1e-4)


def test_chaotic_rnn_decays_for_small_gain_and_follows_its_equation():
    rng = np.random.default_rng(0)
    calm, _ = chaotic_rnn_states(ChaoticRNNConfig(g=0.5, n_conditions=2, trial_s=2.0, require_active=False), rng)
    assert np.abs(calm[:, -1]).max() < 1e-6                  # x = 0 is the stable fixed point for g < 1
    x, J = chaotic_rnn_states(ChaoticRNNConfig(n_conditions=3), np.random.default_rng(5))
    assert np.allclose(J.std() * np.sqrt(50), 1.0, atol=0.05)                  # J ~ N(0, 1/N)
    # an independent form of the Euler step: x' = (1 - dt/tau) x + (dt/tau) g J tanh(x), dt/tau = 0.4
    nxt = 0.6 * x[:, :-1] + 0.4 * 1.5 * np.einsum("ij,ctj->cti", J, np.tanh(x[:, :-1]))
    assert np.allclose(x[:, 1:], nxt, atol=1e-12)
    for seed in (2, 4):            # J drawn from these seeds first settles on a fixed point: redrawn
        x, _ = chaotic_rnn_states(ChaoticRNNConfig(n_conditions=2, trial_s=10.0), np.random.default_rng(seed))
        assert np.abs(np.diff(x[:, -100:], axis=1)).mean() > 0.01
    x, _ = chaotic_rnn_states(ChaoticRNNConfig(n_conditions=2, trial_s=10.0, require_active=False),
                              np.random.default_rng(4))
    assert np.abs(np.diff(x[:, -100:], axis=1)).mean() < 1e-4


def test_chaotic_rnn_dataset_rates_and_split():
    spec = NeuroDataSpec(dataset="chaotic_rnn", seed=0, chaotic_rnn=ChaoticRNNConfig(n_conditions=10),
                         lfp=FieldConfig(n_channels=4, rate_hz=200.0), eeg=None)
    d = make_dataset(spec)
    assert d.spikes.shape == (100, 100, 50) and d.fields["lfp"].shape == (100, 200, 4)
    assert d.rates_hz.min() >= 0 and d.rates_hz.max() <= 30.0
    assert d.heldout.sum() == 12 and d.heldout[-12:].all()   # round(0.25 * 50), the last columns
    for c in range(10):
        assert d.is_test[d.condition == c].sum() == 2         # round(0.2 * 10) per condition
    again = make_dataset(spec)
    assert np.array_equal(d.spikes, again.spikes) and np.array_equal(d.fields["lfp"], again.fields["lfp"])
    other = make_dataset(spec.model_copy(update={"seed": 1}))
    assert not np.array_equal(d.spikes, other.spikes)
    s = trial_samples(d, np.array([3]))[0]
    assert set(s) == {"spikes", "lfp", "trial", "condition"} and s["spikes"].dtype == np.float32


def test_a_field_slower_than_the_bins_is_refused():
    with pytest.raises(InputError) as e:
        from actors.common.config import validated

        validated(NeuroDataSpec, {"lfp": {"rate_hz": 50.0}})
    assert e.value.field == "lfp.rate_hz"
