"""jobs.train and jobs.tune_neurofmx: bad input is exit 2 with the field named, before Ray starts."""
from __future__ import annotations

import pytest

from actors.common.config import validated
from actors.common.errors import InputError
from actors.trainer import write_shards
from jobs import train as train_job
from jobs import tune_neurofmx
from tune.trainer import TrainSearchSpec

TRAIN = {"model": {"name": "mlp_regression", "cfg": {"d_in": 4, "hidden": [8]}}, "steps": 30, "batch_size": 16,
         "report_every": 1}


@pytest.fixture
def tiny(tmp_path):
    import numpy as np

    write_shards(({"x": np.zeros(4, np.float32), "y": np.zeros(1, np.float32)} for _ in range(8)), tmp_path / "data")
    cfg = tmp_path / "t.yaml"
    cfg.write_text("model: {name: mlp_regression, cfg: {d_in: 4}}\nsteps: 4\nbatch_size: 4\n")
    return tmp_path, cfg


@pytest.mark.parametrize(("args", "message"), [
    (["--data", "{tmp}/nowhere"], "data: no such directory"),
    (["--data", "{tmp}/data", "--set", "strategy=zero2"], "strategy: Input should be"),
    (["--data", "{tmp}/data", "--set", "batch_size=3", "workers.num_workers=2"], "batch_size: 3 is not divisible"),
    (["--data", "{tmp}/data", "--set", "stepz=3"], "stepz"),
])
def test_train_job_bad_input_exits_2(tiny, capsys, args, message):
    tmp, cfg = tiny
    rc = train_job.main(["--config", str(cfg), "--out", str(tmp / "out"), *[a.format(tmp=tmp) for a in args]])
    assert rc == 2 and message in capsys.readouterr().err
    assert not (tmp / "out").exists()


def test_tune_job_bad_input_exits_2(tiny, capsys):
    tmp, cfg = tiny
    search = tmp / "s.yaml"
    search.write_text(f"train_preset: {cfg}\nspace: {{optimizer.lr: {{type: loguniform, low: 0.0, high: 1.0}}}}\n")
    assert tune_neurofmx.main(["--config", str(search), "--data", str(tmp / "data"), "--out", str(tmp / "o")]) == 2
    assert "space.optimizer.lr.low" in capsys.readouterr().err
    search.write_text(f"train_preset: {cfg}\nscheduler: pbt\nspace: {{model.cfg.d_in: {{type: choice, values: [4]}}}}\n")
    assert tune_neurofmx.main(["--config", str(search), "--data", str(tmp / "data"), "--out", str(tmp / "o")]) == 2
    assert "PBT" in capsys.readouterr().err


def test_an_input_error_in_a_ray_train_worker_is_unwrapped():
    """Ray Train 2.60 raises WorkerGroupError(message, {rank: exception}) for a failed worker (seen with
    precision=bf16 on CPU workers: {0: InputError('precision', ...)}); run_training re-raises the
    InputError, so the job exits 2 naming the field."""
    import ray.train

    from actors.common.errors import InputError
    from actors.trainer.pool import _input_error

    err = InputError("precision", "bf16 mixed precision needs a CUDA device")
    wrapped = ray.train.WorkerGroupError("training failed", {1: RuntimeError("peer died"), 0: err})
    assert _input_error(wrapped) is err
    assert _input_error(ray.train.WorkerGroupError("x", {0: RuntimeError("y")})) is None


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
