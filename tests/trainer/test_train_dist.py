"""Two ranks on gloo: DDP, FSDP2 and DeepSpeed ZeRO-3 against one process, their exact resume;
Ray Train: a worker killed mid-epoch (SIGKILL of its own PID) is restarted by FailureConfig and the
resumed loss curve equals the uninterrupted one; a tiny Tune run: ASHA (grace 10, reduction 3) stops
the weaker trials at its first rung, and synchronous PBT exploits through the trainer's exact resume
(trials train in the trial process, `inline`). One Ray cluster for the module.

Tolerances: the strategies differ from one process only in the order of float32 sums (gradients
averaged over 2 ranks, ZeRO-3's flat partitions), measured at <= 1e-6 on these losses (~1-10), so
rtol 1e-5; a resumed run repeats the uninterrupted run's operations exactly, so its curve is checked
to 1e-6 (absolute, fp32; it is bitwise equal here).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from actors.common.errors import InputError
from actors.trainer import write_shards
from actors.trainer.config import TrainSpec
from actors.trainer.engine import read_events, read_metrics, train
from actors.trainer.launch import spawn_runs
from tune.trainer import TrainSearchSpec

BASE = {"model": {"name": "mlp_regression", "cfg": {"d_in": 6, "hidden": [8]}}, "steps": 16, "batch_size": 16,
        "checkpoint": {"every": 6, "keep": 3}, "log_every": 1, "report_every": 6,
        "workers": {"num_workers": 2, "num_cpus": 1, "num_gpus": 0}}
STRATEGIES = ("ddp", "fsdp2", "deepspeed_zero3")


def _spec(**kw) -> TrainSpec:
    return TrainSpec.model_validate({**BASE, **kw})


def _losses(run_dir) -> np.ndarray:
    return np.array([r["loss"] for r in read_metrics(run_dir)])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process (in this one), then every 2-rank run in one spawn (one start-up): each strategy in
    full, and fsdp2 / ZeRO-3 stopped after step 9 and resumed from their checkpoint at step 6."""
    import torch

    root = tmp_path_factory.mktemp("dist")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(96, 6)).astype(np.float32)
    y = (np.tanh(x @ rng.normal(size=(6, 1))) + 0.1 * rng.normal(size=(96, 1))).astype(np.float32)
    write_shards(({"x": x[i], "y": y[i]} for i in range(96)), root / "data", shard_size=40)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(_spec(), root / "data", root / "single", log=None)
    finally:
        torch.set_num_threads(threads)
    jobs = [(_spec(strategy=s), root / "data", root / s, {}) for s in STRATEGIES]
    for s in ("fsdp2", "deepspeed_zero3"):
        part = root / f"{s}-part"
        jobs += [(_spec(strategy=s), root / "data", part, {"until_step": 9}),
                 (_spec(strategy=s), root / "data", part, {"resume_from": part / "checkpoints" / "ckpt-000000006"})]
    per_rank = spawn_runs(jobs, world_size=2, timeout_s=600)
    return root, per_rank


@pytest.mark.slow
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_two_ranks_match_one_process(runs, strategy):
    root, per_rank = runs
    one, two = _losses(root / "single"), _losses(root / strategy)
    assert len(two) == 16 and np.all(np.isfinite(two))
    np.testing.assert_allclose(two, one, rtol=1e-5, atol=0)
    summary = per_rank[0][STRATEGIES.index(strategy)]
    assert summary["world_size"] == 2 and summary["strategy"] == strategy and summary["steps"] == 16


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["fsdp2", "deepspeed_zero3"])
def test_two_rank_resume_is_exact(runs, strategy):
    root, _ = runs
    part, full = _losses(root / f"{strategy}-part"), _losses(root / strategy)
    assert len(part) == 16 and np.max(np.abs(part - full)) <= 1e-6
    assert [e["step"] for e in read_events(root / f"{strategy}-part")] == [0, 6]
    if strategy == "deepspeed_zero3":   # ZeRO-3 shards, one per rank, in DeepSpeed's layout
        ckpt = root / strategy / "checkpoints" / "ckpt-000000016"
        files = sorted(p.name for p in (ckpt / "deepspeed" / "state").iterdir())
        assert files == [f"zero_pp_rank_{r}_mp_rank_00_{k}_states.pt" for r in (0, 1) for k in ("model", "optim")]
        # and the gathered full weights, as a ddp checkpoint holds them (evaluation reads model.pt)
        import torch

        ours = torch.load(ckpt / "model.pt", weights_only=True)
        ddp = torch.load(root / "ddp" / "checkpoints" / "ckpt-000000016" / "model.pt", weights_only=True)
        assert sorted(ours) == sorted(ddp)
        for k in ddp:
            torch.testing.assert_close(ours[k], ddp[k], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("ray_cluster", [{"num_gpus": 0}], indirect=True)
def test_killed_worker_resumes_with_the_same_loss_curve(runs, ray_cluster, tmp_path):
    """Rank 1 SIGKILLs its own process before step 10 (epoch 1, cursor 3 of 6 batches per epoch);
    FailureConfig restarts the group, which resumes from the checkpoint at step 6."""
    from actors.trainer.pool import run_training

    root, _ = runs
    spec = _spec(max_failures=1, inject_failure={"step": 10, "rank": 1, "mode": "kill"})
    summary = run_training(spec, root / "data", tmp_path / "out")
    run_dir = tmp_path / "out" / summary["run"]
    assert summary["restarts"] == 1 and summary["steps"] == 16
    assert "rank 1 pid" in (run_dir / ".injected-failure").read_text()
    assert [(e["step"], e["resumed_from"] is not None) for e in read_events(run_dir)] == [(0, False), (6, True)]
    resumed, uninterrupted = _losses(run_dir), _losses(root / "ddp")   # the same 2-rank DDP without a kill
    assert len(resumed) == 16 and np.max(np.abs(resumed - uninterrupted)) <= 1e-6
    # steps 7-9 ran twice (before the kill and after the restart): the same losses both times
    raw = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    twice = {}
    for r in raw:
        twice.setdefault(r["step"], []).append(r["loss"])
    assert sorted(s for s, v in twice.items() if len(v) == 2) == [7, 8, 9]
    assert all(v[0] == v[1] for v in twice.values() if len(v) == 2)
    assert (run_dir / "loss.png").stat().st_size > 1000
    assert summary["checkpoint"].endswith("ckpt-000000016")


def test_run_names_are_unique_and_resume_is_checked(tmp_path):
    """Without Ray: prepare_run names every run anew and resumes only a run of the same model/data/order."""
    from actors.trainer.pool import find_run, prepare_run

    data = tmp_path / "data"
    write_shards(({"x": np.zeros(6, np.float32), "y": np.zeros(1, np.float32)} for _ in range(32)), data)
    tmp_path = tmp_path / "out"
    _, a, _ = prepare_run(_spec(), data, tmp_path)
    _, b, _ = prepare_run(_spec(), data, tmp_path)
    assert a != b and a.parent == b.parent == tmp_path
    with pytest.raises(InputError, match="already exists") as e:
        prepare_run(_spec(), data, tmp_path, name=a.name)
    assert e.value.field == "out"
    assert find_run(tmp_path) == b and find_run(tmp_path, a.name) == a
    _, again, ckpt = prepare_run(_spec(), data, tmp_path, resume=a.name)
    assert again == a and ckpt is None
    with pytest.raises(InputError, match="was trained with batch_size=16") as e:
        prepare_run(_spec(batch_size=32), data, tmp_path, resume=True)
    assert e.value.field == "batch_size"
    with pytest.raises(InputError, match="no run 'nope'"):
        prepare_run(_spec(), data, tmp_path, resume="nope")
    with pytest.raises(InputError, match="holds no run"):
        prepare_run(_spec(), data, tmp_path / "empty", resume=True)


TUNE_TRAIN = {"model": {"name": "mlp_regression", "cfg": {"d_in": 4, "hidden": [8]}}, "steps": 30, "batch_size": 16,
         "report_every": 1, "log_every": 1, "checkpoint": {"every": 30, "keep": 1},
         "workers": {"num_workers": 1, "num_cpus": 1, "num_gpus": 0}}


@pytest.fixture(scope="module")
def tune_data(tmp_path_factory):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = (x @ rng.normal(size=(4, 1))).astype(np.float32)
    d = tmp_path_factory.mktemp("tune") / "data"
    write_shards(({"x": x[i], "y": y[i]} for i in range(64)), d)
    return d


@pytest.mark.slow
@pytest.mark.parametrize("ray_cluster", [{"num_gpus": 0}], indirect=True)
def test_tune_asha_and_pbt(ray_cluster, tune_data, tmp_path):
    from tune.trainer import search

    # ASHA, one trial at a time (deterministic rungs): lr 1e-1, 3e-3, 1e-4 in this order; at rung 10 a trial
    # continues only if it is in the top 1/3 of those recorded there, so the two slower learners stop at 10
    asha = TrainSearchSpec.model_validate({
        "name": "asha", "train": TUNE_TRAIN, "scheduler": "asha", "num_samples": 1, "grace_period": 10, "reduction_factor": 3,
        "max_concurrent_trials": 1, "inline": True,
        "space": {"optimizer.lr": {"type": "grid", "values": [1e-1, 3e-3, 1e-4]}}})
    res = search(asha, tune_data, tmp_path / "asha")
    iters = {t["config"]["optimizer.lr"]: t["iterations"] for t in res["trials"]}
    assert res["n_trials"] == 3 and all(t["error"] is None for t in res["trials"])
    assert res["best"]["config"]["optimizer.lr"] == 1e-1 and res["best"]["iterations"] == 30
    assert iters == {1e-1: 30, 3e-3: 10, 1e-4: 10}
    assert json.loads((tmp_path / "asha" / "search.json").read_text())["best"]["step"] == 30

    # synchronous PBT, 2 trials, rounds of 10 steps: at step 10 the worse trial continues from the better
    # one's checkpoint (the trainer's resume: same model and data order) with a perturbed lr
    pbt = TrainSearchSpec.model_validate({
        "name": "pbt", "train": {**TUNE_TRAIN, "steps": 20}, "scheduler": "pbt", "num_samples": 2, "perturbation_interval": 10,
        "quantile_fraction": 0.5, "synch": True, "max_concurrent_trials": 2, "inline": True,
        "space": {"optimizer.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-1}}})
    res = search(pbt, tune_data, tmp_path / "pbt")
    assert res["n_trials"] == 2 and all(t["step"] == 20 and t["error"] is None for t in res["trials"])
    exploited = []
    for f in (tmp_path / "pbt" / "trials").glob("*/rounds.jsonl"):
        starts = [json.loads(line) for line in f.read_text().splitlines()]
        assert starts[0]["step"] == 0 and not starts[0]["restored"]
        exploited += [b for a, b in zip(starts, starts[1:]) if b["restored"] and b["from"] != a["lr"]]
    assert exploited and all(s["step"] in (10, 20) for s in exploited)   # resumed at the donor's step
