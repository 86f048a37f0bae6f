"""A tiny Tune run over the trainer: ASHA (grace 10, reduction 3) stops the weaker trials at its first
rung, and synchronous PBT exploits through the trainer's exact resume (the worse trial continues from
the better trial's checkpoint). Trials train in the trial process (`inline`), one rank each."""
from __future__ import annotations

import json

import numpy as np
import pytest

from actors.common.config import validated
from actors.common.errors import InputError
from actors.trainer import write_shards
from tune.trainer import TrainSearchSpec

TRAIN = {"model": {"name": "mlp_regression", "cfg": {"d_in": 4, "hidden": [8]}}, "steps": 30, "batch_size": 16,
         "report_every": 1, "log_every": 1, "checkpoint": {"every": 30, "keep": 1},
         "workers": {"num_workers": 1, "num_cpus": 1, "num_gpus": 0}}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = (x @ rng.normal(size=(4, 1))).astype(np.float32)
    d = tmp_path_factory.mktemp("tune") / "data"
    write_shards(({"x": x[i], "y": y[i]} for i in range(64)), d)
    return d


def test_search_spec_errors():
    with pytest.raises(InputError) as e:
        validated(TrainSearchSpec, {"train": TRAIN, "space": {"optimizer.lrr": {"type": "choice", "values": [0.1]}}})
    assert e.value.field.startswith("space.optimizer.lrr")
    with pytest.raises(InputError) as e:
        validated(TrainSearchSpec, {"train": TRAIN, "scheduler": "pbt",
                                        "space": {"model.cfg.hidden": {"type": "choice", "values": [[4], [8]]}}})
    assert e.value.field == "space.model.cfg.hidden" and "PBT" in e.value.message
    with pytest.raises(InputError) as e:
        validated(TrainSearchSpec, {"train": TRAIN, "space": {"optimizer.lr": {"type": "loguniform", "low": 0, "high": 1}}})
    assert e.value.field == "space.optimizer.lr.low"


@pytest.mark.slow
@pytest.mark.parametrize("ray_cluster", [{"num_gpus": 0}], indirect=True)
def test_asha_and_pbt(ray_cluster, data, tmp_path):
    from tune.trainer import search

    # ASHA, one trial at a time (deterministic rungs): lr 1e-1, 3e-3, 1e-4 in this order; at rung 10 a trial
    # continues only if it is in the top 1/3 of those recorded there, so the two slower learners stop at 10
    asha = TrainSearchSpec.model_validate({
        "name": "asha", "train": TRAIN, "scheduler": "asha", "num_samples": 1, "grace_period": 10, "reduction_factor": 3,
        "max_concurrent_trials": 1, "inline": True,
        "space": {"optimizer.lr": {"type": "grid", "values": [1e-1, 3e-3, 1e-4]}}})
    res = search(asha, data, tmp_path / "asha")
    iters = {t["config"]["optimizer.lr"]: t["iterations"] for t in res["trials"]}
    assert res["n_trials"] == 3 and all(t["error"] is None for t in res["trials"])
    assert res["best"]["config"]["optimizer.lr"] == 1e-1 and res["best"]["iterations"] == 30
    assert iters == {1e-1: 30, 3e-3: 10, 1e-4: 10}
    assert json.loads((tmp_path / "asha" / "search.json").read_text())["best"]["step"] == 30

    # synchronous PBT, 2 trials, rounds of 10 steps: at step 10 the worse trial continues from the better
    # one's checkpoint (the trainer's resume: same model and data order) with a perturbed lr
    pbt = TrainSearchSpec.model_validate({
        "name": "pbt", "train": {**TRAIN, "steps": 20}, "scheduler": "pbt", "num_samples": 2, "perturbation_interval": 10,
        "quantile_fraction": 0.5, "synch": True, "max_concurrent_trials": 2, "inline": True,
        "space": {"optimizer.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-1}}})
    res = search(pbt, data, tmp_path / "pbt")
    assert res["n_trials"] == 2 and all(t["step"] == 20 and t["error"] is None for t in res["trials"])
    exploited = []
    for f in (tmp_path / "pbt" / "trials").glob("*/rounds.jsonl"):
        starts = [json.loads(line) for line in f.read_text().splitlines()]
        assert starts[0]["step"] == 0 and not starts[0]["restored"]
        exploited += [b for a, b in zip(starts, starts[1:]) if b["restored"] and b["from"] != a["lr"]]
    assert exploited and all(s["step"] in (10, 20) for s in exploited)   # resumed at the donor's step
