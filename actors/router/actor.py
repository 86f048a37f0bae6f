"""ReplicaLadder: a Ray actor (CPU, or pinned to one GPU) that runs parallel-tempering ladders.

Resources come from a WorkerConfig through `actors.common.worker.named_actors` (one actor per GPU on
a GPU cluster, CPU actors otherwise); `actors.router.pool` creates them as `router-ladder-<cpu|gpu>-<i>`.
A task is one batch-assignment instance with its ladder config and seed: seeded, so a retried task
returns the same assignment, and equal to the in-process `solve_assignment` on the same device.
`budget` (seconds left, setting) bounds the task with actors.common.budget (the ladder's sweep loop
checks it).

Gauges per worker, from what the ladder of the task measured (its production sweeps): the swap
acceptance of neighbour pairs averaged over pairs (`ladder_swap_acceptance`) and its smallest pair
(`ladder_swap_acceptance_min`, the bottleneck a collapsing ladder shows first), and the split R-hat of
the cold replica's observables across ladders, the largest over observables (`ladder_rhat`). A value
the task did not measure (one replica: no pairs; `record: none` or one ladder: no R-hat; a non-finite
R-hat) leaves its gauge at the previous task's value.
"""
from __future__ import annotations

import math
import time
from typing import Any

from actors.common.budget import TaskBudget, task_scope
from actors.common.worker import BaseWorker
from actors.router.ladder import LadderConfig, solve_assignment
from actors.router.problems import AssignmentInstance

__all__ = ["ReplicaLadder", "ladder_gauges"]


def ladder_gauges(ladder: dict[str, Any]) -> dict[str, float]:
    """The gauge values of one task from its ladder summary (AssignmentResult.ladder); only those measured."""
    out: dict[str, float] = {}
    acc = [float(a) for a in ladder.get("swap_acceptance", [])]
    if acc:
        out["ladder_swap_acceptance"] = sum(acc) / len(acc)
        out["ladder_swap_acceptance_min"] = min(acc)
    rhat = [float(r) for r in ladder.get("rhat", []) if math.isfinite(r)]
    if rhat:
        out["ladder_rhat"] = max(rhat)
    return out


class ReplicaLadder(BaseWorker):
    """Plain class; `actors.router.pool.ladders` turns it into named Ray actors."""

    subsystem = "router"

    def __init__(self, worker_index: int = 0):
        super().__init__(worker_index)
        self._tasks = self.counter("ladder_tasks_total", "Batch-assignment ladder tasks run.")
        self._evals = self.counter("ladder_energy_evals_total", "Energy evaluations (proposals) by ladders.")
        self._latency = self.histogram("ladder_task_seconds", "Wall time of one ladder task.")
        self._gauges = {
            "ladder_swap_acceptance": self.gauge("ladder_swap_acceptance", "Swap acceptance of the last task's "
                                                 "ladder, mean over neighbour pairs."),
            "ladder_swap_acceptance_min": self.gauge("ladder_swap_acceptance_min", "Swap acceptance of the last "
                                                     "task's ladder, its smallest neighbour pair."),
            "ladder_rhat": self.gauge("ladder_rhat", "Split R-hat of the last task's cold replicas across ladders, "
                                      "largest over observables."),
        }
        self.tasks_done = 0

    def config_for(self, config_json: str) -> LadderConfig:
        """The task's ladder config with device "auto" resolved to this actor's device."""
        cfg = LadderConfig.model_validate_json(config_json)
        return cfg.model_copy(update={"device": self.device}) if cfg.device == "auto" else cfg

    def solve_assignment(self, inst: AssignmentInstance, config_json: str, seed: int,
                         budget: TaskBudget | None = None) -> dict[str, Any]:
        """Best feasible assignment of `inst` by parallel tempering with `seed` (AssignmentResult.to_dict())."""
        t0 = time.perf_counter()
        cfg = self.config_for(config_json).model_copy(update={"seed": seed})
        with task_scope(budget):
            res = solve_assignment(inst, cfg)
        self._tasks.inc()
        self._evals.inc(res.energy_evals)
        self._latency.observe(time.perf_counter() - t0)
        for name, value in ladder_gauges(res.ladder).items():
            self._gauges[name].set(value)
        self.record_gpu_memory()
        self.tasks_done += 1
        return {**res.to_dict(), "seed": seed, "worker": self.worker_index}
