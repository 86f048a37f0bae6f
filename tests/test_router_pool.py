"""The router's ReplicaLadder pool on the conftest `ray_cluster` (2 CPUs, 2 fake GPUs): batch-assignment
ladders sent through actors.common's named actors and pull scheduler equal the in-process ladder for the
same seeds, resume from their stored tasks, refuse a different run in the same directory, and an
InputError raised inside an actor reaches the caller with its field."""
from __future__ import annotations

import pytest
import torch

from actors.common.config import WorkerConfig
from actors.common.errors import InputError
from actors.router.ladder import LadderConfig, LadderPoolSpec, solve_assignment
from actors.router.problems import random_assignment

pytestmark = pytest.mark.slow

LADDER = LadderConfig(n_replicas=6, T_min=0.01, T_max=0.5, n_ladders=4, n_sweeps=400, burn_in=80, adapt_every=40,
                      record="none", device="auto")
SPEC = LadderPoolSpec(ladder=LADDER, workers=WorkerConfig(num_cpus=1))
INSTANCES = [random_assignment(12, 3, s) for s in range(4)]
SEEDS = [11, 12, 13, 14]


def _same(a: dict, b: dict) -> None:
    assert a["objective"] == b["objective"]
    assert list(a["assignment"]) == list(b["assignment"])
    assert a["feasible"] == b["feasible"] and a["energy_evals"] == b["energy_evals"]
    for key in ("swap_acceptance", "local_acceptance", "round_trips", "temperatures"):
        assert a["ladder"][key] == b["ladder"][key], key


def test_pool_equals_in_process_and_resumes(ray_cluster, tmp_path):
    from actors.router.pool import ladders, run_assignments

    out = tmp_path / "run"
    results, stats = run_assignments(INSTANCES, SPEC, out, seeds=SEEDS, progress=False)
    assert stats["tasks_computed"] == 4 and stats["tasks_skipped"] == 0
    assert len(stats["workers"]) == 2 and sum(stats["per_worker"]) == 4
    before = torch.get_num_threads()
    torch.set_num_threads(1)                                        # as in the actors (num_cpus=1)
    try:
        for inst, seed, got in zip(INSTANCES, SEEDS, results):
            # the same seed on the device the actor resolved "auto" to (fake GPUs: the CPU)
            local = solve_assignment(inst, LADDER.model_copy(update={"seed": seed, "device": got["ladder"]["device"]}))
            _same(got, {**local.to_dict(), "seed": seed})
            assert got["seed"] == seed and got["feasible"]
    finally:
        torch.set_num_threads(before)
    # resume: one stored task deleted -> only that one is recomputed, identical output
    (out / "tasks" / "assign-000002.json").unlink()
    again, stats2 = run_assignments(INSTANCES, SPEC, out, seeds=SEEDS, progress=False)
    assert stats2["tasks_computed"] == 1 and stats2["tasks_skipped"] == 3
    for a, b in zip(results, again):
        _same(a, b)
    assert (out / "summary.json").exists()
    # a different run in the same directory is refused, naming `out`
    with pytest.raises(InputError) as err:
        run_assignments(INSTANCES, SPEC, out, seeds=[1, 2, 3, 4], progress=False)
    assert err.value.field == "out"
    for w in ladders(SPEC.workers):
        ray_cluster.kill(w)


def test_input_error_inside_a_ladder_actor_names_the_field(ray_cluster):
    import ray

    from actors.router.pool import ladders, run_assignments

    pool = ladders(SPEC.workers)
    # a task whose budget is already spent stops at the ladder's first checkpoint, inside the actor
    ref = pool[0].solve_assignment.remote(INSTANCES[0], SPEC.ladder.model_dump_json(), 0,
                                          budget=(0.0, "request_timeout_s"))
    with pytest.raises(InputError) as err:
        ray.get(ref)
    assert err.value.field == "request_timeout_s"
    with pytest.raises(InputError) as err:
        run_assignments(INSTANCES[:2], SPEC, seeds=[0], progress=False)
    assert err.value.field == "seeds"
    for w in pool:
        ray_cluster.kill(w)
