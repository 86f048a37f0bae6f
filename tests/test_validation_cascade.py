"""Cascade trainer: utility near the real-trained baseline on a clean pair, a drop and localized rows
under planted label noise, resume after an interruption with identical metrics, a regression target,
checkpointed models that predict what the metrics say, bad config fields named."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from actors.common.errors import InputError
from actors.validation.cascade import (
    cascade_label_issues,
    climb,
    localize_with_cascade,
    prepare,
    train_cascade,
)
from actors.validation.cascade_checkpoints import load_model
from actors.validation.cascade_config import CascadeConfig, default_ladder
from actors.validation.localize import localize, precision_at_k
from actors.validation.planted import plant

# A short ladder keeps the tests fast; the default 18-rung ladder is checked for shape only.
SHORT = {"rungs": [{"kind": "linear", "c": 0.1}, {"kind": "hgb", "depth": 2, "iterations": 30},
                   {"kind": "mlp", "width": 16}], "patience": 2, "mlp_epochs": 60, "cv_folds": 4}


def _real_baseline(real, label, model) -> float:
    """Train-real-test-real: 5-fold CV of an independent sklearn pipeline on the real table."""
    X, y = real.drop(columns=label), real[label]
    return float(cross_val_score(make_pipeline(StandardScaler(), model), X, y, cv=5).mean())


def test_default_ladder_grows_linear_hgb_mlp():
    ladder = default_ladder()
    assert len(ladder) == 18 and len(CascadeConfig().rungs) == 18
    kinds = [r.kind for r in ladder]
    assert kinds == sorted(kinds, key=["linear", "hgb", "mlp"].index)
    widths = [r.width for r in ladder if r.kind == "mlp"]
    assert widths == sorted(widths) and len(set(widths)) == len(widths)


def test_clean_pair_utility_near_real_baseline():
    pair = plant(case="clean", dataset="breast_cancer", seed=3)
    res = train_cascade(pair.real, pair.synth, "target", SHORT)
    baseline = _real_baseline(pair.real, "target", LogisticRegression(max_iter=5000))
    best = res.rungs[res.best]
    assert res.task == "classification" and res.metric == "accuracy"
    assert best.utility >= baseline - 0.03, (best.utility, baseline)
    assert best.learnability >= 0.9
    assert res.oof.shape == (len(pair.synth), 2)
    np.testing.assert_allclose(res.oof.sum(axis=1), 1.0, atol=1e-6)


def test_label_noise_drops_utility_and_cascade_probs_localize_rows():
    clean = train_cascade(*_pair("clean", "high"), "target", SHORT)
    noisy = plant(case="label_noise", severity="high", dataset="breast_cancer", seed=3)
    res = train_cascade(noisy.real, noisy.synth, "target", SHORT)
    # 40% of the binary labels flipped: learnability and utility both fall well below the clean pair's
    assert res.rungs[res.best].utility < clean.rungs[clean.best].utility - 0.05
    assert max(r.learnability for r in res.rungs) < 0.75 < min(r.learnability for r in clean.rungs)
    medium = plant(case="label_noise", severity="medium", dataset="breast_cancer", seed=3)
    res = train_cascade(medium.real, medium.synth, "target", SHORT)
    score, issues, reasons, suggested = cascade_label_issues(res)
    assert precision_at_k(score, medium.rows) >= 0.85        # 43 planted of 284 rows (chance: 0.15)
    assert np.isin(np.flatnonzero(issues), medium.rows).mean() >= 0.85
    # localize's own source (a logistic model on real + other synthetic folds) does no better here
    own = localize(medium.real, medium.synth, label="target").scores["label_issue"]
    assert precision_at_k(score, medium.rows) >= precision_at_k(own, medium.rows)
    # out-of-fold models fit on synthetic rows alone: the noisy labels mislead them more
    alone = train_cascade(medium.real, medium.synth, "target", {**SHORT, "oof_with_real": False})
    assert precision_at_k(cascade_label_issues(alone)[0], medium.rows) < precision_at_k(score, medium.rows)
    # a suggested label undoes the planted flip (binary: the other class is the original one)
    flipped = [i for i in suggested if i in set(medium.rows)]
    assert flipped and all(suggested[i] != medium.synth["target"][i] for i in flipped)
    loc = localize_with_cascade(medium.real, medium.synth, res)
    assert set(loc.flagged["label_issue"]) == set(np.flatnonzero(issues))
    assert any("label_issue" in r.kind for r in loc.rows)


def _pair(case, severity):
    p = plant(case=case, severity=severity, dataset="breast_cancer", seed=3)
    return p.real, p.synth


class _Stop(Exception):
    pass


def test_resume_skips_finished_rungs_with_identical_metrics(tmp_path):
    real, synth = _pair("clean", "high")
    cfg = {**SHORT, "patience": 3}
    full = train_cascade(real, synth, "target", cfg, out_dir=tmp_path / "full")

    def interrupt(event):
        if event["status"] == "done" and event["rung"] == 1:
            raise _Stop
    with pytest.raises(_Stop):
        train_cascade(real, synth, "target", cfg, out_dir=tmp_path / "cut", on_event=interrupt)
    assert not (tmp_path / "cut" / "rung_02.json").exists()
    events = list(climb(real, synth, "target", cfg, out_dir=tmp_path / "cut"))
    status = {e["rung"]: e["status"] for e in events if e["status"] in ("done", "resumed")}
    assert status == {0: "resumed", 1: "resumed", 2: "done"}
    again = events[-1]["result"]
    assert again.resumed == [0, 1]
    for a, b in zip(full.rungs, again.rungs):
        assert (a.model, a.utility, a.learnability, a.epochs) == (b.model, b.utility, b.learnability, b.epochs)
    np.testing.assert_array_equal(full.oof, again.oof)
    # a different seed is a different run: nothing is reused
    other = train_cascade(real, synth, "target", {**cfg, "seed": 1}, out_dir=tmp_path / "cut")
    assert other.resumed == []


def test_regression_target_and_checkpointed_models(tmp_path):
    pair = plant(case="clean", dataset="diabetes", seed=2)
    cfg = CascadeConfig(**{**SHORT, "patience": 3})
    res = train_cascade(pair.real, pair.synth, "target", cfg, out_dir=tmp_path)
    assert res.task == "regression" and res.metric == "r2" and res.oof.shape == (len(pair.synth),)
    baseline = _real_baseline(pair.real.assign(sex=(pair.real.sex == "a").astype(float)), "target",
                              LinearRegression())
    assert abs(res.rungs[0].utility - baseline) < 0.1, (res.rungs[0].utility, baseline)
    data, _, _ = prepare(pair.real, pair.synth, "target", cfg)
    for i, rung in enumerate(res.rungs):   # every saved model reproduces its recorded utility (sklearn's r2)
        model = load_model(tmp_path, i, cfg.rungs[i], cfg, data.F_real.shape[1], 0)
        assert r2_score(data.y_real, model.predict(data.F_real)) == pytest.approx(rung.utility, abs=1e-9)
    assert res.rungs[2].epochs is not None and res.rungs[2].epochs <= cfg.mlp_epochs


def test_classification_checkpoint_accuracy(tmp_path):
    real, synth = _pair("clean", "high")
    cfg = CascadeConfig(**SHORT)
    res = train_cascade(real, synth, "target", cfg, out_dir=tmp_path)
    data, _, _ = prepare(real, synth, "target", cfg)
    for i, rung in enumerate(res.rungs):
        model = load_model(tmp_path, i, cfg.rungs[i], cfg, data.F_real.shape[1], 2)
        assert accuracy_score(data.y_real, model.predict(data.F_real)) == pytest.approx(rung.utility)


@pytest.mark.parametrize("overrides,field", [
    ({"patience": 0}, "patience"),
    ({"holdout": 0.95}, "holdout"),
    ({"cv_folds": 1}, "cv_folds"),
    ({"rungs": [{"kind": "mlp", "width": 0}]}, "rungs.0.width"),
    ({"rungs": [{"kind": "forest"}]}, "rungs.0.kind"),
    ({"rungs": [{"kind": "linear"}], "patience": 2}, "patience"),
    ({"task": "regression"}, "task"),
])
def test_bad_config_names_the_field(overrides, field):
    real, synth = _pair("clean", "high")
    with pytest.raises(InputError) as err:
        train_cascade(real, synth, "target", **overrides)
    assert err.value.field == field


def test_missing_label_names_the_field():
    real, synth = _pair("clean", "high")
    with pytest.raises(InputError) as err:
        train_cascade(real, synth, "nope")
    assert err.value.field == "label"


@pytest.mark.slow
def test_ray_tasks_equal_in_process(ray_cluster):
    from actors.validation.pool import train_cascade_on_cluster

    real, synth = _pair("label_noise", "medium")
    local = train_cascade(real, synth, "target", SHORT)   # the engine: every rung in this process
    assert ray_cluster.is_initialized()
    # the pool's runner: every rung a Ray task, the MLP rung on a (fake) GPU slot
    remote = train_cascade_on_cluster(real, synth, "target", {**SHORT, "num_gpus": 1})
    assert [(r.utility, r.learnability) for r in remote.rungs] == [(r.utility, r.learnability) for r in local.rungs]
    np.testing.assert_allclose(remote.oof, local.oof, atol=1e-12)


def test_job_trains_from_the_ci_preset(tmp_path, capsys):
    from jobs.cascade import main

    rc = main(["train", "--planted", "label_noise", "--severity", "medium", "--seed", "3", "--no-ray",
               "--config", "configs/validation/cascade_ci.yaml", "--out", str(tmp_path)])
    assert rc == 0
    doc = json.loads((tmp_path / "cascade.json").read_text())
    assert [r["model"] for r in doc["rungs"]] == ["linear(C=0.1)", "hgb(depth=2,iter=30)", "mlp(2x16)"]
    issues = json.loads((tmp_path / "label_issues.json").read_text())
    assert issues["planted"] == 43 and issues["precision_at_k"] >= 0.75
    bad = tmp_path / "bad.yaml"
    bad.write_text("patience: 0\n")
    capsys.readouterr()
    assert main(["train", "--planted", "label_noise", "--no-ray", "--config", str(bad), "--out", str(tmp_path)]) == 2
    assert "patience" in capsys.readouterr().err


def test_cuda_device_without_cuda_names_the_field():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is visible: the error path does not apply (test_mlp_on_cuda covers the device)")
    real, synth = _pair("clean", "high")
    with pytest.raises(InputError) as err:
        train_cascade(real, synth, "target", SHORT, device="cuda")
    assert err.value.field == "device"


@pytest.mark.gpu
def test_mlp_on_cuda_matches_cpu_and_checkpoints_load_on_cpu(tmp_path):
    real, synth = _pair("clean", "high")
    cpu = train_cascade(real, synth, "target", {**SHORT, "patience": 3})
    cfg = CascadeConfig(**{**SHORT, "patience": 3, "device": "cuda"})
    gpu = train_cascade(real, synth, "target", cfg, out_dir=tmp_path)
    assert gpu.rungs[2].utility == pytest.approx(cpu.rungs[2].utility, abs=0.03)   # float32 on another device
    data, _, _ = prepare(real, synth, "target", cfg)
    model = load_model(tmp_path, 2, cfg.rungs[2], cfg, data.F_real.shape[1], 2)
    assert accuracy_score(data.y_real, model.predict(data.F_real)) == pytest.approx(gpu.rungs[2].utility)
