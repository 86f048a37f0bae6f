"""One pull scheduler for every pool: tasks go to whichever worker is free, finished ones are stored.

Each worker keeps `inflight` tasks queued and gets the next as soon as one returns, so fast and slow
workers (or GPUs) finish together. With a `store`, a task whose result is already on disk is not run
again and each new result is saved (atomically) the moment it arrives: a killed or resubmitted job
loses at most the tasks in flight. Tasks must be idempotent (seeded from their index), so Ray may retry
them after a worker dies.

A worker that cannot come back (its node is gone and its restart fits nowhere) would hold its queued
tasks forever: Ray retries them only on that actor. When no result has arrived for `stall_timeout_s`,
the workers holding tasks are looked up in the GCS actor table; the tasks of any that is not ALIVE go
to the live workers, and that worker gets no more. Should it come back after all, its late results
are never read (their tasks left `pending` when they moved). With no live worker left the run fails with the states.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import ray
from ray.actor import ActorHandle

from actors.common.storage import FileStore

__all__ = ["TaskRun", "actor_state", "run_tasks"]

T = TypeVar("T")
log = logging.getLogger(__name__)


def actor_state(handle: ActorHandle) -> str:
    """The actor's state in the GCS actor table: ALIVE, RESTARTING, PENDING_CREATION, DEAD, ... or UNKNOWN."""
    import ray._private.state as state

    info = state.actors(actor_id=handle._actor_id.hex())
    return str(info.get("State", "UNKNOWN")) if info else "UNKNOWN"


@dataclass
class TaskRun(Generic[T]):
    """What `run_tasks` did: results by task index (stored ones included unless keep=False)."""

    results: dict[int, Any] = field(default_factory=dict)
    computed: int = 0
    skipped: int = 0
    per_worker: list[int] = field(default_factory=list)   # tasks computed this run, by worker position
    reassigned: int = 0                                     # tasks moved off workers that could not come back
    wall_seconds: float = 0.0


def run_tasks(pool: Sequence[ActorHandle] | Callable[[], Sequence[ActorHandle]], tasks: Sequence[T],
              submit: Callable[[ActorHandle, int, T], ray.ObjectRef], *,
              store: FileStore | None = None, inflight: int = 2, keep: bool = True,
              on_result: Callable[[int, Any, int], None] | None = None,
              stall_timeout_s: float | None = 60.0) -> TaskRun[T]:
    """Run `submit(worker, index, task)` for every task not in `store`, pulling work as workers free up.

    `pool` may be a callable, so no actor is created when every task is already stored.
    `on_result(index, result, worker_position)` runs once per new result, after it is stored (progress
    lines, metrics). With keep=False results are stored but not kept in memory (10^7-row sweeps).
    `stall_timeout_s` (None: wait forever): see the module docstring.
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

    lost: set[int] = set()                 # workers whose tasks were moved away (their late results are dropped)

    def give(w: int) -> None:
        i = queue.pop(0)
        pending[submit(workers[w], i, tasks[i])] = (i, w)

    def reassign_from_lost_workers() -> None:
        holders = {w for _, w in pending.values()}
        states = {w: actor_state(workers[w]) for w in range(len(workers)) if w not in lost}
        gone = {w for w in holders if states.get(w, "DEAD") != "ALIVE"}
        alive = [w for w, st in states.items() if st == "ALIVE"]
        if not gone:
            return
        if not alive:
            raise RuntimeError(f"no worker of the pool is alive after {stall_timeout_s} s without a result: "
                               + ", ".join(f"worker {w} {st}" for w, st in sorted(states.items())))
        lost.update(gone)
        moved = [(ref, i) for ref, (i, w) in pending.items() if w in gone]
        for ref, _ in moved:
            del pending[ref]
        queue[:0] = sorted(i for _, i in moved)
        run.reassigned += len(moved)
        log.warning("tasks %s moved off workers %s (%s) to workers %s", [i for _, i in moved], sorted(gone),
                    [states[w] for w in sorted(gone)], alive)
        for k in range(len(queue)):
            if k >= max(1, inflight) * len(alive):
                break
            give(alive[k % len(alive)])

    for _ in range(max(1, inflight)):
        for w in range(len(workers)):
            if queue:
                give(w)
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=stall_timeout_s)
        if not ready:
            reassign_from_lost_workers()
            continue
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
        if queue and w not in lost:
            give(w)
    run.wall_seconds = time.perf_counter() - t0
    return run
