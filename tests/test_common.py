"""The shared runtime (actors/common): the error contract through pickling and Ray, atomic storage and
its file modes, resumable file stores, worker sizing, named actors and the pull scheduler."""
from __future__ import annotations

import os
import pickle
import stat
import time

import numpy as np
import pandas as pd
import pytest
from pydantic import Field, ValidationError

from actors.common import (
    InputError,
    NotFound,
    Strict,
    TooLarge,
    UnknownName,
    WorkerConfig,
    atomic_write_figure,
    atomic_write_json,
    atomic_write_parquet,
    claim_out_dir,
    json_store,
    parquet_store,
    validated,
)


class _Spec(Strict):
    n: int = Field(3, ge=1, le=10)
    x: float = 0.5


@pytest.mark.parametrize("err", [InputError("a.b", "too big", "<= 3"), TooLarge("rows", "over limit", "<= 10"),
                                 NotFound("id", "no such job"), UnknownName("model", "nope", ["lorenz", "ab"])])
def test_errors_pickle_by_value_with_field_and_status(err):
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is type(err)
    assert (back.field, back.message, back.allowed, str(back)) == (err.field, err.message, err.allowed, str(err))
    assert back.status_code == {InputError: 422, TooLarge: 413, NotFound: 404, UnknownName: 422}[type(err)]
    assert back.to_dict() == {"field": err.field, "message": str(err), "allowed": err.allowed}


def test_unknown_name_lists_the_known_sorted():
    err = UnknownName("model", "nope", ["lorenz", "ab"])
    assert str(err) == "model: unknown model 'nope' (allowed: ab, lorenz)"


def test_validated_names_the_field_and_range():
    assert validated(_Spec, {"n": 4}).n == 4
    with pytest.raises(InputError) as info:
        validated(_Spec, {"n": 11}, prefix="spec.")
    assert info.value.field == "spec.n" and info.value.allowed == "<= 10"
    with pytest.raises(InputError, match="m: Extra inputs are not permitted"):
        validated(_Spec, {"m": 1})
    with pytest.raises(ValidationError):   # frozen
        _Spec().n = 5


def test_worker_config_keeps_auto_and_numbers():
    assert WorkerConfig().num_gpus == "auto" and WorkerConfig().num_workers == "auto"
    cfg = WorkerConfig.model_validate({"num_gpus": 0, "num_workers": 2})
    assert cfg.num_gpus == 0.0 and isinstance(cfg.num_gpus, float) and cfg.num_workers == 2
    with pytest.raises(ValidationError):
        WorkerConfig(num_cpus=0)


def test_atomic_writes_are_world_readable_and_complete(tmp_path):
    atomic_write_json(tmp_path / "a" / "b.json", {"x": np.float64(1.5), "y": np.arange(3)})
    assert (tmp_path / "a" / "b.json").read_text() == '{\n  "x": 1.5,\n  "y": [\n    0,\n    1,\n    2\n  ]\n}\n'
    frame = pd.DataFrame({"a": [1, 2, 3], "b": [0.5, 1.5, 2.5]})
    atomic_write_parquet(tmp_path / "t.parquet", frame)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "t.parquet"), frame)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    atomic_write_figure(tmp_path / "f.png", fig)
    plt.close(fig)
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for p in (tmp_path / "a" / "b.json", tmp_path / "t.parquet", tmp_path / "f.png"):
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o644
    assert not [p for p in tmp_path.rglob(".*.tmp")]   # no temp files left behind


def test_claim_out_dir_refuses_a_different_run(tmp_path):
    claim_out_dir(tmp_path, {"spec": {"n": 1}}, "sweep")
    claim_out_dir(tmp_path, {"spec": {"n": 1}}, "sweep")   # same work: resume
    with pytest.raises(InputError) as info:
        claim_out_dir(tmp_path, {"spec": {"n": 2}}, "sweep")
    assert info.value.field == "out"


def test_file_stores_resume_and_recompute_torn_files(tmp_path):
    store = json_store(tmp_path / "tasks", "t-{:03d}.json", encode=lambda r: {"v": r}, decode=lambda d: d["v"])
    assert store.load(0) is None
    store.save(0, [1, 2])
    assert store.load(0) == [1, 2]
    store.path(1).write_text("{torn")
    assert store.load(1) is None and not store.path(1).exists()
    chunks = parquet_store(tmp_path / "chunks")
    chunks.save(3, pd.DataFrame({"a": [1]}))
    assert chunks.load(3) == tmp_path / "chunks" / "chunk-000003.parquet"
    chunks.path(4).write_bytes(b"PAR1 not a footer")
    assert chunks.load(4) is None


@pytest.mark.slow
def test_named_actors_and_run_tasks_with_resume(ray_cluster, tmp_path):
    from actors.common.scheduler import run_tasks
    from actors.common.worker import named_actors, resolve_worker_resources

    class _Echo:   # defined here so cloudpickle ships it by value (tests/ is not importable on workers)
        def __init__(self, index: int = 0):
            self.index = index

        def square(self, x: int) -> tuple[int, int]:
            return x * x, self.index

    cpu = WorkerConfig(num_gpus=0, num_cpus=1)
    assert resolve_worker_resources(cpu) == (2, 0.0)           # 2 CPUs in the test cluster
    assert resolve_worker_resources(cpu, limit=1) == (1, 0.0)
    assert resolve_worker_resources(WorkerConfig()) == (2, 1.0)   # auto: one per (fake) GPU
    pool = named_actors(_Echo, cpu, "echo-test")
    again = named_actors(_Echo, cpu, "echo-test")
    assert [a._actor_id for a in pool] == [a._actor_id for a in again]   # found by name, not recreated

    store = json_store(tmp_path, "sq-{:03d}.json")
    seen = []
    run = run_tasks(pool, list(range(7)), lambda w, i, x: w.square.remote(x), store=store,
                    on_result=lambda i, r, w: seen.append(i))
    assert {i: r[0] for i, r in run.results.items()} == {i: i * i for i in range(7)}
    assert run.computed == 7 and run.skipped == 0 and sum(run.per_worker) == 7 and sorted(seen) == list(range(7))
    store.path(5).unlink()
    created = []
    rerun = run_tasks(lambda: created.append(1) or pool, list(range(7)), lambda w, i, x: w.square.remote(x),
                      store=store)
    assert rerun.computed == 1 and rerun.skipped == 6 and rerun.results[5][0] == 25 and created == [1]
    none_left = run_tasks(lambda: created.append(2) or pool, list(range(7)), lambda w, i, x: w.square.remote(x),
                          store=store)
    assert none_left.computed == 0 and created == [1]   # nothing to do: no actor is created
    # a name that resolves to a dead actor: the probe finds it and named_actors creates it anew
    import ray

    from actors.common.worker import _dying

    ray.kill(pool[0], no_restart=True)   # asynchronous: a probe sent at once may still be answered
    deadline = time.monotonic() + 30.0
    while (dying := _dying(pool, 10.0)) != [0] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert dying == [0]
    fresh = named_actors(_Echo, cpu, "echo-test")
    assert ray.get(fresh[0].square.remote(3)) == (9, 0) and fresh[1]._actor_id == pool[1]._actor_id
    # the driver drops its last handles (a job ended) and asks again at once: Ray is tearing the old
    # actors down, so they must not be handed out; new ones are created and stay alive
    import gc

    old_ids = [a._actor_id for a in fresh]
    pool = again = fresh = run = rerun = none_left = None   # (closures above share these cells)
    gc.collect()
    later = named_actors(_Echo, cpu, "echo-test")
    assert not {a._actor_id for a in later} & set(old_ids)
    time.sleep(2.0)   # long enough for a wrongly reused actor to have been destroyed
    assert ray.get([a.square.remote(4) for a in later]) == [(16, 0), (16, 1)]


@pytest.mark.slow
def test_input_error_raised_in_a_ray_task_reaches_the_caller_with_its_field(ray_cluster):
    import ray

    @ray.remote
    def bad():
        raise TooLarge("batch", "too many rows", "<= 10")

    with pytest.raises(TooLarge) as info:
        ray.get(bad.remote())
    assert info.value.field == "batch" and info.value.allowed == "<= 10" and info.value.status_code == 413


def test_a_cross_field_check_names_its_own_field():
    from pydantic import model_validator

    class _Range(Strict):
        lo: float = 0.0
        hi: float = 1.0

        @model_validator(mode="after")
        def _ordered(self):
            if self.hi < self.lo:
                raise InputError("hi", f"must be >= lo = {self.lo}, got {self.hi}", ">= lo")
            return self

    class _Outer(Strict):
        span: _Range = Field(default_factory=_Range)

    with pytest.raises(InputError) as info:
        validated(_Outer, {"span": {"lo": 2.0, "hi": 1.0}}, prefix="spec.")
    assert (info.value.field, info.value.allowed) == ("spec.span.hi", ">= lo")
    assert str(info.value) == "spec.span.hi: must be >= lo = 2.0, got 1.0 (allowed: >= lo)"


def test_a_list_of_numbers_refuses_a_bool_or_string_element_by_index():
    class _Vec(Strict):
        v: list[float] | None = None
        s: set[int] = Field(default_factory=set)

    assert _Vec(v=[0.5, 1, -2.0]).v == [0.5, 1.0, -2.0]          # ints are numbers; the fast path lets them by
    for bad, index in (([0.1, True, 0.3], 1), ([0.1, 0.2, "0.3"], 2)):
        with pytest.raises(ValidationError) as info:
            _Vec(v=bad)
        err = info.value.errors()[0]
        assert err["loc"] == ("v", index) and "is not a number" in err["msg"]
    with pytest.raises(ValidationError):
        _Vec(s={1, "2"})
    assert _Vec(s={1, 2}).s == {1, 2}
