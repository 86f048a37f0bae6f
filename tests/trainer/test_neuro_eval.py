"""The evaluation's metrics on hand-computed cases (R^2, co-bps of the true rates = the ceiling and of
the null = 0, a two-bin co-bps by hand), the ridge probe against scikit-learn, the Poisson GLM of the
smoothing baseline recovering planted weights, the protocol with oracle predictors (fusion gain,
dropout), and jobs.neuro_data -> a 2-step training -> jobs.neuro_eval end to end with its errors."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from actors.neuro import EvalSpec, NeuroDataSpec, bits_per_spike, fit_ridge, make_dataset, predict_ridge, r2
from actors.neuro.baselines import fit_cebra, fit_psth_oracle, train_sequence_model
from actors.neuro.evaluate import evaluate, markdown_table
from actors.neuro.metrics import fit_poisson_glm, fit_poisson_glm_cv, predict_poisson_glm
from configs import preset

pytestmark = pytest.mark.usefixtures("one_torch_thread")   # tests/trainer/conftest.py


def test_r2_by_hand():
    y = np.array([[1.0, 2.0], [2.0, 4.0], [3.0, 9.0]])
    assert r2(y, y) == 1.0
    assert r2(y, np.broadcast_to(y.mean(0), y.shape)) == 0.0
    p = np.array([[1.5, 2.0], [2.0, 5.0], [2.5, 8.0]])
    # column 0: SS_res 0.5, SS_tot 2 -> 0.75; column 1 (mean 5): SS_res 2, SS_tot 26 -> 1 - 2/26
    assert math.isclose(r2(y, p), (0.75 + 1 - 2 / 26) / 2, rel_tol=1e-12)
    assert r2(np.ones((3, 1)), np.ones((3, 1))) == 1.0 and r2(np.ones((3, 1)), np.zeros((3, 1))) == 0.0


def test_co_bps_of_the_true_rates_is_the_ceiling_and_of_the_null_zero():
    rng = np.random.default_rng(0)
    lam = np.exp(rng.normal(-1.5, 0.8, size=(40, 20, 5)))
    y = rng.poisson(lam)
    null = np.broadcast_to(y.reshape(-1, 5).mean(0), y.shape)
    assert bits_per_spike(y, null) == 0.0
    assert bits_per_spike(y, lam) > 0.2                          # real signal: the true rates beat the null
    assert bits_per_spike(y, 0.5 * lam) < bits_per_spike(y, lam)
    assert math.isnan(bits_per_spike(np.zeros((2, 3, 1)), np.ones((2, 3, 1))))
    # by hand: one neuron, bins with counts (1, 0), predicted (0.8, 0.2); null = 0.5 per bin
    y1, lam1 = np.array([[[1], [0]]]), np.array([[[0.8], [0.2]]])
    nll_model = (0.8 - math.log(0.8)) + 0.2
    nll_null = (0.5 - math.log(0.5)) + 0.5
    assert math.isclose(bits_per_spike(y1, lam1), (nll_null - nll_model) / 1 / math.log(2), rel_tol=1e-12)


def test_ridge_probe_matches_scikit_learn():
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 4)) * [1, 10, 0.1, 3] + 5
    Y = X @ rng.normal(size=(4, 2)) + rng.normal(size=(300, 2))
    W, b = fit_ridge(X, Y, alpha=0.05)
    Xs = (X - X.mean(0)) / X.std(0)
    sk = Ridge(alpha=0.05 * 300).fit(Xs, Y)
    assert np.allclose(predict_ridge(X, W, b), sk.predict(Xs), atol=1e-9)
    W0, b0 = fit_ridge(X, X @ [[1.0], [2.0], [0.0], [-1.0]], alpha=0.0)
    assert np.allclose(W0.ravel(), [1, 2, 0, -1], atol=1e-8)


def test_smoothing_glm_recovers_planted_weights():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(20_000, 2))
    Y = rng.poisson(np.exp(X @ np.array([[0.5], [-0.3]]) - 1.0))
    W, b = fit_poisson_glm(X, Y, alpha=0.0)
    assert np.allclose(W.ravel(), [0.5, -0.3], atol=0.04) and abs(b[0] + 1.0) < 0.04


def test_poisson_glm_matches_scikit_learn_with_a_penalty():
    from sklearn.linear_model import PoissonRegressor

    rng = np.random.default_rng(5)
    X = rng.normal(size=(3_000, 5)) * [1.0, 3.0, 0.5, 2.0, 1.0] + 2.0
    Y = rng.poisson(np.exp(0.3 * (X - 2.0) @ rng.normal(size=(5, 3)) - 0.5))
    W, b = fit_poisson_glm(X, Y, alpha=0.01)
    Xs = (X - X.mean(0)) / X.std(0)
    for j in range(Y.shape[1]):
        sk = PoissonRegressor(alpha=0.01, tol=1e-12, max_iter=10_000).fit(Xs, Y[:, j])
        assert np.allclose(predict_poisson_glm(X, W, b)[:, j], sk.predict(Xs), rtol=1e-6)


def _small_data():
    spec = NeuroDataSpec.model_validate({"dataset": "lorenz", "seed": 1,
                                         "lorenz": {"n_conditions": 6, "trials_per_condition": 10, "n_bins": 30,
                                                    "n_neurons": 8, "burn_in_steps": 300},
                                         "lfp": {"n_channels": 3, "rate_hz": 200.0}, "eeg": None})
    return make_dataset(spec)


def test_psth_oracle_approaches_the_truth_with_many_repeats():
    spec = NeuroDataSpec.model_validate({"lorenz": {"n_conditions": 3, "trials_per_condition": 400, "n_bins": 30,
                                                    "n_neurons": 6, "base_rate_hz": 20.0}, "lfp": None, "eeg": None})
    d = make_dataset(spec)
    tr, te = ~d.is_test, d.is_test
    f = fit_psth_oracle(d.spikes[tr], d.condition[tr], d.condition[te], d.bin_s, [20.0])
    assert r2(d.expected_counts[te], f.counts) > 0.9


def test_protocol_with_oracle_predictors():
    """A predictor that returns the true rates and latents when it sees the LFP, and the null
    otherwise: rate and latent R^2 = 1 and co-bps = the ceiling with LFP, fusion gain = the ceiling."""
    d = _small_data()
    mods = ["spikes", "lfp"]
    te_idx, tr_idx = np.flatnonzero(d.is_test), np.flatnonzero(~d.is_test)

    def oracle(fields, active):   # evaluate() passes the test trials, or the training trials, in order
        idx = te_idx if len(fields["spikes_heldin"]) == len(te_idx) else tr_idx
        assert np.array_equal(fields["spikes_heldin"], d.spikes[idx][..., :6])
        counts = d.expected_counts[idx].astype(np.float64)
        feats = d.latents[idx].astype(np.float64)
        sees = np.ones(len(idx), bool) if active is None else active[:, 1]
        counts[~sees] = d.spikes[tr_idx].reshape(-1, 8).mean(0)
        feats[~sees] = 0.0
        return counts, feats

    res = evaluate(d, EvalSpec(baselines=["smoothing"], few_shot_k=[2], dropout_p=0.5, readout="native"), oracle, mods)
    rows = {r["method"]: r for r in res["rows"]}
    assert not any("[native readout]" in m for m in rows)
    full = rows["neurofmx (spikes+lfp)"]
    assert full["rate_r2"] == pytest.approx(1.0) and full["latent_r2"] == pytest.approx(1.0, abs=2e-3)   # ridge shrinks
    assert full["co_bps"] == pytest.approx(res["co_bps_ceiling"]) and full["co_bps_frac"] == pytest.approx(1.0)
    alone = rows["neurofmx (spikes only)"]
    null_bps = bits_per_spike(d.spikes[d.is_test][..., 6:], np.broadcast_to(
        d.spikes[~d.is_test].reshape(-1, 8).mean(0)[6:], (int(d.is_test.sum()), 30, 2)))
    assert alone["co_bps"] == pytest.approx(null_bps)
    assert res["fusion"]["co_bps_gain_spikes_lfp"] == pytest.approx(res["co_bps_ceiling"] - null_bps)
    assert 0 < res["dropout"]["rate_r2_loss_frac"] < 1.5          # some trials lost their LFP
    assert res["targets"]["rate_r2"]["met"] and res["targets"]["co_bps_frac"]["met"]
    assert "| neurofmx (spikes+lfp) | spikes+lfp | 1.000 |" in markdown_table(res)


def test_poisson_glm_per_column_penalties_equal_separate_fits():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(2_000, 4))
    Y = rng.poisson(np.exp(X @ rng.normal(scale=0.4, size=(4, 3)) - 0.7))
    W, b = fit_poisson_glm(X, Y, alpha=np.array([0.0, 0.01, 1.0]))
    for j, a in enumerate([0.0, 0.01, 1.0]):
        Wj, bj = fit_poisson_glm(X, Y[:, j:j + 1], alpha=a)
        np.testing.assert_allclose(W[:, j], Wj[:, 0], atol=1e-9)
        np.testing.assert_allclose(b[j], bj[0], atol=1e-9)
    with pytest.raises(ValueError, match="alpha"):
        fit_poisson_glm(X, Y, alpha=-1.0)


def test_poisson_glm_cv_shrinks_noise_features_and_predicts_new_trials_better():
    """Few trials, one informative feature among 40 noise features: 3-fold CV over trials picks a penalty
    above the grid's smallest for every neuron, and that fit's Poisson NLL on fresh trials (the same
    generative law) is below the least-penalised fit's; a neuron whose rate no feature explains gets the
    strongest penalty (weights shrunk towards 0)."""
    rng = np.random.default_rng(7)

    def trials(n: int) -> tuple[np.ndarray, np.ndarray]:
        X = rng.normal(size=(n, 20, 41))
        lam = np.exp(np.stack([0.8 * X[..., 0] - 1.0, 0.5 * X[..., 0] - 0.5, np.full(X.shape[:2], -1.0)], -1))
        return X, rng.poisson(lam).astype(np.float64)

    X, Y = trials(12)
    groups = np.repeat(np.arange(12), 20)
    grid = [1e-4, 1e-2, 1.0]
    W, b, chosen = fit_poisson_glm_cv(X.reshape(-1, 41), Y.reshape(-1, 3), groups, grid, folds=3)
    assert (chosen > 1e-4).all() and chosen[2] == 1.0
    W0, b0 = fit_poisson_glm(X.reshape(-1, 41), Y.reshape(-1, 3), 1e-4)
    assert np.abs(W[:, 2]).max() < 0.25 * np.abs(W0[:, 2]).max()
    Xn, Yn = trials(400)

    def nll(W: np.ndarray, b: np.ndarray) -> float:
        lam = predict_poisson_glm(Xn, W, b)
        return float((lam - Yn * np.log(lam)).sum())

    assert nll(W, b) < nll(W0, b0)
    with pytest.raises(ValueError, match="folds"):
        fit_poisson_glm_cv(X.reshape(-1, 41), Y.reshape(-1, 3), groups, grid, folds=13)


@pytest.mark.gpu
def test_poisson_glm_on_the_gpu_equals_the_cpu_fit():
    """The readout's Newton steps on CUDA (the eval device) give the CPU fit, and the same CV choice."""
    rng = np.random.default_rng(8)
    X = rng.normal(size=(40, 25, 12))
    Y = rng.poisson(np.exp(0.4 * X[..., :3] - 1.0)).astype(np.float64)
    groups = np.repeat(np.arange(40), 25)
    cpu = fit_poisson_glm_cv(X.reshape(-1, 12), Y.reshape(-1, 3), groups, [1e-4, 1e-2, 1.0])
    gpu = fit_poisson_glm_cv(X.reshape(-1, 12), Y.reshape(-1, 3), groups, [1e-4, 1e-2, 1.0], device="cuda")
    np.testing.assert_array_equal(cpu[2], gpu[2])
    np.testing.assert_allclose(gpu[0], cpu[0], atol=1e-9)
    np.testing.assert_allclose(gpu[1], cpu[1], atol=1e-9)


def test_glm_readout_recovers_the_rates_from_the_true_latents():
    """Log-rates are affine in the z-scored Lorenz latents, so a Poisson GLM of the training trials'
    spikes on those latents (the oracle's features) recovers the test rates; the native row is kept."""
    d = make_dataset(NeuroDataSpec.model_validate({
        "dataset": "lorenz", "seed": 1, "lfp": None, "eeg": None,
        "lorenz": {"n_conditions": 6, "trials_per_condition": 10, "n_bins": 30, "n_neurons": 8, "burn_in_steps": 300,
                   "base_rate_hz": 100.0}}))
    te_idx, tr_idx = np.flatnonzero(d.is_test), np.flatnonzero(~d.is_test)

    def latents_only(fields, active):   # features = the true latents; its own rates: the null
        idx = te_idx if len(fields["spikes_heldin"]) == len(te_idx) else tr_idx
        null = np.broadcast_to(d.spikes[tr_idx].reshape(-1, 8).mean(0), (len(idx), 30, 8))
        return null.astype(np.float64), d.latents[idx].astype(np.float64)

    res = evaluate(d, EvalSpec(baselines=["smoothing"], few_shot_k=[2]), latents_only, ["spikes"])
    rows = {r["method"]: r for r in res["rows"]}
    assert rows["neurofmx (spikes)"]["rate_r2"] > 0.9
    assert rows["neurofmx (spikes) [native readout]"]["rate_r2"] < 0.01      # the null's R^2 is ~0
    assert rows["neurofmx (spikes)"]["co_bps_frac"] > 0.8
    assert res["targets"]["rate_r2"]["value"] == rows["neurofmx (spikes)"]["rate_r2"]
    native_smoothing = evaluate(d, EvalSpec(baselines=["smoothing"], few_shot_k=[2], readout="native"))["rows"][1]
    assert rows["smoothing"] == {**native_smoothing, "method": "smoothing"} and "smoothing [GLM readout]" in rows


def test_sequence_baselines_train_and_predict_shapes():
    d = _small_data()
    tr, te = ~d.is_test, d.is_test
    for kind in ("gru_sae", "ndt"):
        f = train_sequence_model(kind, d.spikes[tr], 6, d.spikes[te][..., :6], steps=3, hidden=8, batch=8)
        assert f.counts.shape == (12, 30, 8) and (f.counts > 0).all()
        assert f.features.shape[:2] == (12, 30) and f.train_features.shape[:2] == (48, 30)


def test_cebra_baseline_is_seeded_learns_and_reads_rates_by_glm():
    """CEBRA-Time on the small Lorenz set: two fits with one seed are identical (its samplers are seeded
    by the baseline), the InfoNCE loss falls, and the rates are the Poisson GLM of the embedding fit on
    the training trials' spikes."""
    d = _small_data()
    tr, te = ~d.is_test, d.is_test
    a, b = (fit_cebra(d.spikes[tr], 6, d.spikes[te][..., :6], iterations=150, dims=4, seed=3) for _ in range(2))
    np.testing.assert_array_equal(a.features, b.features)
    assert a.features.shape == (12, 30, 4) and a.train_features.shape == (48, 30, 4) and a.counts.shape == (12, 30, 8)
    assert a.info["final_loss"] < a.info["first_loss"] - 0.05
    W, bias = fit_poisson_glm(a.train_features.reshape(-1, 4), d.spikes[tr].reshape(-1, 8).astype(np.float64), 1e-4)
    np.testing.assert_allclose(a.counts, predict_poisson_glm(a.features, W, bias), rtol=1e-12)
    other = fit_cebra(d.spikes[tr], 6, d.spikes[te][..., :6], iterations=150, dims=4, seed=4)
    assert np.abs(other.features - a.features).max() > 1e-3


def test_eval_device_resolves_auto_and_refuses_missing_cuda():
    import torch

    from actors.common.errors import InputError
    from actors.neuro.evaluate import eval_device

    assert eval_device(EvalSpec(device="cpu")) == "cpu"
    if torch.cuda.is_available():
        assert eval_device(EvalSpec()) == eval_device(EvalSpec(device="cuda")) == "cuda"
    else:
        assert eval_device(EvalSpec()) == "cpu"
        with pytest.raises(InputError, match="device"):
            eval_device(EvalSpec(device="cuda"))


def test_cebra_missing_is_an_input_error(monkeypatch):
    import sys

    from actors.common.errors import InputError

    monkeypatch.setitem(sys.modules, "cebra", None)          # import cebra -> ImportError
    d = _small_data()
    with pytest.raises(InputError, match="baselines"):
        fit_cebra(d.spikes[~d.is_test], 6, d.spikes[d.is_test][..., :6], iterations=2)


def test_data_train_eval_jobs_end_to_end(tmp_path, capsys):
    from actors.trainer.config import TrainSpec
    from actors.trainer.engine import train
    from jobs import neuro_data, neuro_eval

    data_dir = tmp_path / "data"
    assert neuro_data.main(["--config", str(preset("neuro", "lorenz_ci.yaml")), "--out", str(data_dir)]) == 0
    summary = json.loads((data_dir / "summary.json").read_text())
    assert summary["n_train"] == 64 and summary["n_test"] == 16 and (data_dir / "preview.png").stat().st_size > 1000
    layout = summary["layout"]
    from actors.trainer import ShardDataset

    first = ShardDataset(data_dir / "train")._read_shard(0)                 # 32 of the 64 training trials
    assert len(np.unique(first["condition"])) >= 6                         # shuffled: not 4 conditions in order
    assert sorted(ShardDataset(data_dir / "train").load_all()["trial"].tolist()) == np.flatnonzero(
        ~np.load(data_dir / "ground_truth.npz")["is_test"]).tolist()
    cfg = {"d_model": 16, "n_layers": 2, "d_state": 4, "headdim": 8, "chunk": 8, "n_latents": 4, "n_heads": 2,
           "proj_dim": 8, "diffusion_steps": 10, "spikes": {k: layout["spikes"][k] for k in ("n_neurons", "n_heldout")},
           "lfp": {"n_channels": 4, "rate_hz": 250.0, "patch": 5}, "eeg": {"n_channels": 3, "rate_hz": 200.0, "patch": 4}}
    spec = TrainSpec.model_validate({"model": {"name": "neurofmx", "cfg": cfg}, "steps": 2, "batch_size": 8,
                                     "checkpoint": {"every": 2}, "log_every": 1})
    train(spec, data_dir / "train", tmp_path / "run", device="cpu", log=None)
    out = tmp_path / "eval"
    args = ["--checkpoint", str(tmp_path / "run"), "--data", str(data_dir), "--out", str(out),
            "--set", "baseline_steps=2", "baseline_hidden=8", "cebra_iterations=2", "few_shot_k=[1,5]"]
    assert neuro_eval.main(args) == 0
    res = json.loads((out / "results.json").read_text())
    methods = [r["method"] for r in res["rows"]]
    assert methods[:2] == ["true rates (ceiling)", "neurofmx (spikes+lfp+eeg)"]
    assert {"smoothing", "gru_sae", "ndt", "cebra", "psth_oracle (uses condition labels)"} <= set(methods)
    assert "cebra [GLM readout]" not in methods                            # its one row already is that GLM
    assert set(res["targets"]) == {"rate_r2", "latent_r2", "co_bps_frac", "fusion_gain_bps", "dropout_loss_frac"}
    for f in ("results.md", "rates.png", "rate_r2.png", "co_bps.png", "few_shot.png"):
        assert (out / f).stat().st_size > 100
    assert res["checkpoint"]["step"] == 2 and res["eval"]["feature_streams"] == "all"
    # the readout of the spikes stream's features alone; an unknown choice is refused naming the field
    args_all = args[:5] + [str(tmp_path / "eval_sp"), "--set", "baselines=[]", "few_shot_k=[1]", "feature_streams=spikes"]
    assert neuro_eval.main(args_all) == 0
    res_sp = json.loads((tmp_path / "eval_sp" / "results.json").read_text())
    assert res_sp["eval"]["feature_streams"] == "spikes" and res_sp["rows"][1]["method"] == "neurofmx (spikes+lfp+eeg)"
    assert res_sp["rows"][1]["latent_r2"] != res["rows"][1]["latent_r2"]      # other features, other probe
    capsys.readouterr()
    assert neuro_eval.main(args_all[:-1] + ["feature_streams=lfp"]) == 2
    assert "feature_streams" in capsys.readouterr().err
    # a model of another layout, and a directory without a checkpoint, are refused naming --checkpoint
    other = tmp_path / "other"
    assert neuro_data.main(["--config", str(preset("neuro", "lorenz_ci.yaml")), "--out", str(other),
                            "--set", "lorenz.n_neurons=10"]) == 0
    capsys.readouterr()
    assert neuro_eval.main(["--checkpoint", str(tmp_path / "run"), "--data", str(other), "--out", str(tmp_path / "e2")]) == 2
    assert "--checkpoint" in capsys.readouterr().err
    assert neuro_eval.main(["--checkpoint", str(tmp_path), "--data", str(data_dir), "--out", str(tmp_path / "e3")]) == 2
    assert "no complete checkpoint" in capsys.readouterr().err
    assert neuro_eval.main(["--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "e4")]) == 2
    assert "data" in capsys.readouterr().err
    # the weights alone (meta.json + model.pt, no optimizer / RNG files) evaluate; a truncated model.pt does not
    import shutil

    from actors.neuro.evaluate import load_neurofmx
    from actors.trainer import latest_checkpoint

    weights = tmp_path / "weights"
    weights.mkdir()
    for f in ("meta.json", "model.pt"):
        shutil.copy(latest_checkpoint(tmp_path / "run" / "checkpoints") / f, weights / f)
    assert load_neurofmx(weights)[1]["step"] == 2
    (weights / "model.pt").write_bytes((weights / "model.pt").read_bytes()[:-10])
    assert neuro_eval.main(["--checkpoint", str(weights), "--data", str(data_dir), "--out", str(tmp_path / "e5")]) == 2
    assert "manifest" in capsys.readouterr().err


def test_the_glm_newton_step_solves_spd_batches_like_numpy():
    import torch

    from actors.neuro.metrics import _spd_solve

    rng = np.random.default_rng(3)
    A = rng.normal(size=(30, 193, 193))
    H = A @ A.transpose(0, 2, 1) + np.eye(193)               # the size whose batched LU failed on torch 2.13 (CPU)
    b = rng.normal(size=(30, 193, 1))
    x = _spd_solve(torch.as_tensor(H), torch.as_tensor(b)).numpy()
    np.testing.assert_allclose(x, np.linalg.solve(H, b), rtol=1e-8, atol=1e-10)
    v = rng.normal(size=(1, 5, 1))
    singular = torch.as_tensor(v @ v.transpose(0, 2, 1))     # rank 1: a tiny ridge makes it solvable
    y = _spd_solve(singular, torch.as_tensor(v))
    assert torch.isfinite(y).all()
    np.testing.assert_allclose((singular @ y).numpy(), v, rtol=1e-5)
