"""NeuroFMX's objectives on known cases and its curriculum: Poisson NLL against scipy, the forecast
horizons picked by hand, InfoNCE's closed form for orthonormal pairs and a brute-force sum, DDPM's
alpha_bar and the Bayes-optimal denoiser's MSE for Gaussian data, stage transitions and weights,
modality dropout's rate and its at-least-one rule."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import poisson

from actors.trainer.models.neurofmx.curriculum import STAGE_WEIGHTS, Curriculum, modality_dropout, sample_rng
from actors.trainer.models.neurofmx.losses import (
    ddpm_alpha_bar,
    diffuse,
    forecast_nll,
    info_nce,
    masked_mse,
    poisson_nll,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")   # tests/trainer/conftest.py


def test_poisson_nll_matches_scipy_and_weights_broadcast():
    rng = np.random.default_rng(0)
    lam = rng.uniform(0.01, 3.0, size=(2, 5, 3))
    y = rng.poisson(lam).astype(float)
    ref = -poisson.logpmf(y, lam)
    got = poisson_nll(torch.tensor(np.log(lam)), torch.tensor(y))
    assert math.isclose(float(got), ref.mean(), rel_tol=1e-12)
    w = np.zeros((2, 5, 1), bool)
    w[0, 1] = w[1, 3] = True                                   # two bins, every neuron
    got_w = poisson_nll(torch.tensor(np.log(lam)), torch.tensor(y), torch.tensor(w))
    assert math.isclose(float(got_w), np.concatenate([ref[0, 1], ref[1, 3]]).mean(), rel_tol=1e-12)
    assert float(poisson_nll(torch.zeros(2, 2), torch.ones(2, 2), torch.zeros(2, 2, dtype=torch.bool))) == 0.0
    assert math.isclose(float(masked_mse(torch.ones(2, 4, 3), torch.zeros(2, 4, 3), torch.tensor(w[:, :4]))), 1.0)


def test_forecast_nll_scores_each_horizon_after_the_cutoff():
    rng = np.random.default_rng(1)
    lam = rng.uniform(0.1, 2.0, size=(3, 10, 2))
    y = rng.poisson(lam).astype(float)
    cutoff = np.array([4, 8, 2])
    mean, per_h = forecast_nll(torch.tensor(np.log(lam)), torch.tensor(y), torch.tensor(cutoff), [1, 3],
                               valid=torch.tensor([True, True, False]))
    nll = -poisson.logpmf(y, lam)
    h1 = np.concatenate([nll[0, 4], nll[1, 8]]).mean()        # horizon 1 = the first hidden bin
    h3 = nll[0, 6].mean()                                       # sample 1's bin 10 is past the end
    assert math.isclose(float(per_h[1]), h1, rel_tol=1e-12) and math.isclose(float(per_h[3]), h3, rel_tol=1e-12)
    assert math.isclose(float(mean), (h1 + h3) / 2, rel_tol=1e-12)


def test_info_nce_closed_form_and_brute_force():
    M, tau = 6, 0.2
    eye = torch.eye(M, dtype=torch.float64)
    expect = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + (M - 1)))   # cos = 1 on the diagonal, 0 off
    assert math.isclose(float(info_nce(eye, 3.0 * eye, tau)), expect, rel_tol=1e-12)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 4, generator=g, dtype=torch.float64), torch.randn(5, 4, generator=g, dtype=torch.float64)
    cos = np.array([[float(a[i] @ b[j] / (a[i].norm() * b[j].norm())) for j in range(5)] for i in range(5)]) / 0.5
    rows = [-(cos[i, i] - np.log(np.exp(cos[i]).sum())) for i in range(5)]
    cols = [-(cos[j, j] - np.log(np.exp(cos[:, j]).sum())) for j in range(5)]
    assert math.isclose(float(info_nce(a, b, 0.5)), 0.5 * (np.mean(rows) + np.mean(cols)), rel_tol=1e-10)


def test_ddpm_schedule_and_the_optimal_gaussian_denoiser():
    ab = ddpm_alpha_bar(100, 1e-4, 0.02)
    betas = np.linspace(1e-4, 0.02, 100)
    assert np.allclose(ab.numpy(), np.cumprod(1 - betas), rtol=1e-12)
    # x0 ~ N(0, s^2): E[eps | x_t] = sqrt(1 - ab) x_t / (ab s^2 + 1 - ab), and the minimum MSE of an
    # epsilon-predictor is ab s^2 / (ab s^2 + 1 - ab)
    g = torch.Generator().manual_seed(0)
    s, n = 1.7, 400_000
    for t in (5, 50, 99):
        a = ab[t]
        x0 = s * torch.randn(n, generator=g, dtype=torch.float64)
        eps = torch.randn(n, generator=g, dtype=torch.float64)
        xt = diffuse(x0, eps, a)
        best = (1 - a).sqrt() * xt / (a * s**2 + 1 - a)
        expect = float(a * s**2 / (a * s**2 + 1 - a))
        assert math.isclose(float(masked_mse(best, eps)), expect, rel_tol=0.02)
        if t > 5:   # at t = 5 alpha_bar ~ 1: eps is barely in x_t and predicting 0 is almost optimal
            assert float(masked_mse(torch.zeros(n, dtype=torch.float64), eps)) > expect


def test_curriculum_stages_and_weights():
    c = Curriculum(stage2_step=200, stage3_step=400)
    assert [c.stage(s) for s in (0, 199, 200, 399, 400, 10**6)] == [1, 1, 2, 2, 3, 3]
    assert c.weights(0) == {"masked": 1.0, "reconstruction": 0.5, "contrastive": 0.0, "forecast": 0.0, "diffusion": 0.0}
    assert c.weights(250) == {"masked": 0.5, "reconstruction": 0.3, "contrastive": 1.0, "forecast": 0.0, "diffusion": 0.0}
    assert c.weights(400) == {"masked": 0.3, "reconstruction": 0.0, "contrastive": 0.8, "forecast": 0.5, "diffusion": 0.2}
    assert STAGE_WEIGHTS[3] == {"masked": 0.3, "contrastive": 0.8, "forecast": 0.5, "diffusion": 0.2}
    b = Curriculum(stage2_step=100, stage3_step=300, blend_steps=10)
    half = b.weights(104)                                      # 5 of 10 blend steps into stage 2
    assert math.isclose(half["masked"], 0.75) and math.isclose(half["contrastive"], 0.5)
    assert b.weights(109) == b.weights(150) == Curriculum(100, 300).weights(150)
    assert math.isclose(b.weights(300)["forecast"], 0.05) and math.isclose(b.weights(300)["reconstruction"], 0.27)
    skip = Curriculum(stage2_step=50, stage3_step=50)
    assert skip.stage(49) == 1 and skip.stage(50) == 3
    with pytest.raises(ValueError):
        Curriculum(stage2_step=10, stage3_step=5)


def test_modality_dropout_rate_and_at_least_one_kept():
    present = np.ones(3, bool)
    kept = np.array([modality_dropout(present, 0.1, sample_rng(7, 3, i)) for i in range(8_000)])
    assert kept.any(axis=1).all()
    # P(a given modality dropped) = p - P(all three drawn dropped and it is the one re-kept) = p - p^3/3
    assert np.allclose(1 - kept.mean(axis=0), 0.1 - 0.001 / 3, atol=0.015)   # 4.5 standard errors
    again = np.array([modality_dropout(present, 0.1, sample_rng(7, 3, i)) for i in range(100)])
    assert np.array_equal(again, kept[:100])                   # seeded by (seed, step, sample)
    always = np.array([modality_dropout(present, 1.0, sample_rng(0, 0, i)) for i in range(300)])
    assert (always.sum(axis=1) == 1).all() and np.allclose(always.mean(0), 1 / 3, atol=0.1)
    partial = modality_dropout(np.array([False, True, False]), 1.0, sample_rng(0, 0, 0))
    assert partial.tolist() == [False, True, False]            # only a present modality is re-kept
