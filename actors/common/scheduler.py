"""One pull scheduler for every pool: tasks go to whichever worker is free, finished ones are stored.

Each worker keeps `inflight` tasks queued and gets the next as soon as one returns, so fast and slow
workers (or GPUs) finish together. With a `store`, a task whose result is already on disk is not run
again and each new result is saved (atomically) the moment it arrives: a killed or resubmitted job
loses at most the tasks in flight. Tasks must be idempotent (seeded from their index), so Ray may retry
them after a worker dies.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import ray
from ray.actor import ActorHandle

from actors.common.storage import FileStore

__all__ = ["TaskRun", "run_tasks"]

T = TypeVar("T")


@dataclass
class TaskRun(Generic[T]):
    """What `run_tasks` did: results by task index (stored ones included unless keep=False)."""

    results: dict[int, Any] = field(default_factory=dict)
    computed: int = 0
    skipped: int = 0
    per_worker: list[int] = field(default_factory=list)   # tasks computed this run, by worker position
    wall_seconds: float = 0.0


def run_tasks(pool: Sequence[ActorHandle] | Callable[[], Sequence[ActorHandle]], tasks: Sequence[T],
              submit: Callable[[ActorHandle, int, T], ray.ObjectRef], *,
              store: FileStore | None = None, inflight: int = 2, keep: bool = True,
              on_result: Callable[[int, Any, int], None] | None = None) -> TaskRun[T]:
    """Run `submit(worker, index, task)` for every task not in `store`, pulling work as workers free up.

    `pool` may be a callable, so no actor is created when every task is already stored.
    `on_result(index, result, worker_position)` runs once per new result, after it is stored (progress
    lines, metrics). With keep=False results are stored but not kept in memory (10^7-row sweeps).
    """
    run: TaskRun[T] = TaskRun()
    todo = []
    for i in range(len(tasks)):
        loaded = store.load(i) if store is not None else None
        if loaded is None:
            todo.append(i)
        else:
            run.skipped += 1
            if keep:
                run.results[i] = loaded
    t0 = time.perf_counter()
    workers = list(pool() if callable(pool) else pool) if todo else []
    run.per_worker = [0] * len(workers)
    queue = list(todo)
    pending: dict[ray.ObjectRef, tuple[int, int]] = {}

    def give(w: int) -> None:
        i = queue.pop(0)
        pending[submit(workers[w], i, tasks[i])] = (i, w)

    for _ in range(max(1, inflight)):
        for w in range(len(workers)):
            if queue:
                give(w)
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        i, w = pending.pop(ready[0])
        result = ray.get(ready[0])
        if store is not None:
            store.save(i, result)
        if keep:
            run.results[i] = result
        run.computed += 1
        run.per_worker[w] += 1
        if on_result is not None:
            on_result(i, result, w)
        del result
        if queue:
            give(w)
    run.wall_seconds = time.perf_counter() - t0
    return run
