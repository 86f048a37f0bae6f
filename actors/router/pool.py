"""The router's ReplicaLadder pool: batch-assignment ladders on Ray.

`run_assignments` sends one task per (instance, seed) to named ReplicaLadder actors
(`router-ladder-<cpu|gpu>-<i>`, one per GPU on a GPU cluster, CPU actors otherwise) through the shared
pull scheduler, stores each result as OUT/tasks/assign-<i>.json the moment it arrives and skips the
stored ones on a rerun (a different spec or input in OUT is refused, naming `out`), then writes
OUT/summary.json. Each task is seeded, so the results equal the in-process `solve_assignment` for the
same seeds on the same device.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray.actor import ActorHandle

from actors.common.budget import checkpoint, task_budget
from actors.common.config import WorkerConfig
from actors.common.errors import InputError
from actors.common.scheduler import run_tasks
from actors.common.storage import atomic_write_json, claim_out_dir, json_store
from actors.common.worker import named_actors
from actors.router.actor import ReplicaLadder
from actors.router.ladder import LadderPoolSpec
from actors.router.problems import AssignmentInstance

__all__ = ["LADDER_PREFIX", "ladders", "run_assignments"]

LADDER_PREFIX = "router-ladder"


def ladders(cfg: WorkerConfig, *, limit: int | None = None) -> list[ActorHandle]:
    """Named ReplicaLadders `router-ladder-<cpu|gpu>-<i>`, created when missing; `limit` caps an auto count."""
    return named_actors(ReplicaLadder, cfg, LADDER_PREFIX, limit=limit)


def _fingerprint(instances: Sequence[AssignmentInstance], seeds: Sequence[int]) -> str:
    h = hashlib.sha256()
    for inst in instances:
        for arr in (inst.cost, inst.money, inst.capacity):
            h.update(np.ascontiguousarray(arr).tobytes())
        h.update(repr(inst.budget).encode())
    h.update(json.dumps(list(seeds)).encode())
    return h.hexdigest()



def run_assignments(instances: Sequence[AssignmentInstance], spec: LadderPoolSpec, out_dir: str | Path | None = None,
                    *, seeds: Sequence[int] | None = None, progress: bool = True) -> tuple[list[dict[str, Any]], dict]:
    """Solve every instance on the pool; task i uses seeds[i] (default spec.ladder.seed + i).

    Returns (results in task order, stats). Results are AssignmentResult.to_dict() plus seed and worker.
    """
    if not instances:
        raise InputError("instances", "no instances to solve", ">= 1 instance")
    seeds = [spec.ladder.seed + i for i in range(len(instances))] if seeds is None else [int(s) for s in seeds]
    if len(seeds) != len(instances):
        raise InputError("seeds", f"{len(seeds)} seeds for {len(instances)} instances", "one seed per instance")
    if any(not 0 <= s < 2 ** 32 for s in seeds):
        raise InputError("seeds", "seeds must lie in [0, 2^32)", ">= 0 and < 2^32")
    tasks = list(zip(instances, seeds))
    store = None
    if out_dir is not None:
        out = Path(out_dir)
        claim_out_dir(out, {"spec": json.loads(spec.model_dump_json(exclude={"workers", "inflight"})),
                            "input_sha256": _fingerprint(instances, seeds)}, "router ladder run")
        store = json_store(out / "tasks", "assign-{:06d}.json")
    t0 = time.perf_counter()
    config_json = spec.ladder.model_dump_json()
    state: dict[str, Any] = {"infos": []}

    def pool() -> list[ActorHandle]:
        workers = ladders(spec.workers, limit=len(tasks))
        state["infos"] = ray.get([w.info.remote() for w in workers])
        return workers

    def submit(worker: ActorHandle, _: int, task: tuple[AssignmentInstance, int]) -> ray.ObjectRef:
        inst, seed = task
        return worker.solve_assignment.remote(inst, config_json, seed, budget=task_budget())

    def on_result(i: int, r: dict, w: int) -> None:
        if progress:
            print(f"{spec.name}: task {i + 1}/{len(tasks)} seed {r['seed']} objective {r['objective']:.6g} "
                  f"feasible {r['feasible']} ({r['energy_evals']} evaluations, {r['wall_seconds']:.2f} s, "
                  f"worker {w})", flush=True)
        checkpoint()

    run = run_tasks(pool, tasks, submit, store=store, inflight=spec.inflight, on_result=on_result)
    results = [run.results[i] for i in range(len(tasks))]
    stats = {"n_tasks": len(tasks), "tasks_computed": run.computed, "tasks_skipped": run.skipped,
             "per_worker": run.per_worker, "wall_seconds": round(time.perf_counter() - t0, 3),
             "workers": state["infos"]}
    if out_dir is not None:
        atomic_write_json(Path(out_dir) / "summary.json",
                          {"name": spec.name, "stats": stats,
                           "objectives": [r["objective"] for r in results],
                           "feasible": [r["feasible"] for r in results], "seeds": seeds})
    return results, stats
