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

Queue depth: the driver sets two gauges per pool, `attractor_pool_tasks_waiting` (not yet given to a worker)
and `attractor_pool_tasks_in_flight` (given, no result yet), tagged with the calling subsystem (the
`actors.<sub>` module that called run_tasks, or `subsystem=`). Ray's metrics work from a driver connected
to a cluster; without Ray (every task already stored) nothing is recorded. Values are sent only when they
change, and both return to 0 when the run ends (also when it fails).
"""
from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import ray
from ray.actor import ActorHandle

from actors.common.storage import FileStore

__all__ = ["QueueDepth", "TaskRun", "actor_state", "queue_gauges", "run_tasks"]

T = TypeVar("T")
log = logging.getLogger(__name__)


def actor_state(handle: ActorHandle) -> str:
    """The actor's state in the GCS actor table: ALIVE, RESTARTING, PENDING_CREATION, DEAD, ... or UNKNOWN."""
    import ray._private.state as state

    info = state.actors(actor_id=handle._actor_id.hex())
    return str(info.get("State", "UNKNOWN")) if info else "UNKNOWN"


class QueueDepth(Protocol):
    """Where run_tasks reports its queue: tasks waiting for a worker and tasks in flight."""

    def record(self, waiting: int, in_flight: int) -> None: ...


class _RayQueueGauges:
    """The two Ray gauges of one subsystem's pool (created once per process and subsystem)."""

    def __init__(self, subsystem: str):
        from ray.util import metrics

        tags = {"subsystem": subsystem}
        self._waiting = metrics.Gauge("attractor_pool_tasks_waiting", "Tasks of a pool not yet given to a worker.",
                                      tag_keys=("subsystem",))
        self._in_flight = metrics.Gauge("attractor_pool_tasks_in_flight", "Tasks of a pool given to a worker, no "
                                        "result yet.", tag_keys=("subsystem",))
        self._waiting.set_default_tags(tags)
        self._in_flight.set_default_tags(tags)

    def record(self, waiting: int, in_flight: int) -> None:
        self._waiting.set(float(waiting))
        self._in_flight.set(float(in_flight))


class _NoQueue:
    def record(self, waiting: int, in_flight: int) -> None:
        pass


_GAUGES: dict[str, QueueDepth] = {}


def queue_gauges(subsystem: str) -> QueueDepth:
    """The queue-depth gauges of `subsystem` (a no-op recorder when Ray is not initialized)."""
    if not ray.is_initialized():
        return _NoQueue()
    if subsystem not in _GAUGES:
        _GAUGES[subsystem] = _RayQueueGauges(subsystem)
    return _GAUGES[subsystem]


def _caller_subsystem(depth: int = 2) -> str:
    """`sub` of the `actors.<sub>...` module that called run_tasks; else that module's first name."""
    module = str(sys._getframe(depth).f_globals.get("__name__", "unknown"))
    parts = module.split(".")
    return parts[1] if parts[0] == "actors" and len(parts) > 1 else parts[0]


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
              stall_timeout_s: float | None = 60.0, subsystem: str | None = None,
              queue_depth: QueueDepth | None = None) -> TaskRun[T]:
    """Run `submit(worker, index, task)` for every task not in `store`, pulling work as workers free up.

    `pool` may be a callable, so no actor is created when every task is already stored.
    `on_result(index, result, worker_position)` runs once per new result, after it is stored (progress
    lines, metrics). With keep=False results are stored but not kept in memory (10^7-row sweeps).
    `stall_timeout_s` (None: wait forever): see the module docstring. `subsystem` tags the queue-depth
    gauges (default: the caller's `actors.<sub>`); `queue_depth` replaces them (tests).
    """
    sub = subsystem or _caller_subsystem()
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
    if not todo:
        run.wall_seconds = time.perf_counter() - t0
        return run
    gauges = queue_depth if queue_depth is not None else queue_gauges(sub)
    last: list[tuple[int, int]] = []

    def note(waiting: int, in_flight: int) -> None:
        if not last or last[0] != (waiting, in_flight):
            gauges.record(waiting, in_flight)
            last[:] = [(waiting, in_flight)]

    note(len(todo), 0)
    try:
        _run(run, pool, tasks, submit, todo, store=store, inflight=inflight, keep=keep, on_result=on_result,
             stall_timeout_s=stall_timeout_s, note=note)
    finally:
        note(0, 0)
    run.wall_seconds = time.perf_counter() - t0
    return run


def _run(run: TaskRun, pool: Sequence[ActorHandle] | Callable[[], Sequence[ActorHandle]], tasks: Sequence[T],
         submit: Callable[[ActorHandle, int, T], ray.ObjectRef], todo: list[int], *, store: FileStore | None,
         inflight: int, keep: bool, on_result: Callable[[int, Any, int], None] | None,
         stall_timeout_s: float | None, note: Callable[[int, int], None]) -> None:
    """The pull loop of run_tasks (`todo` non-empty); `note(waiting, in_flight)` after every change."""
    workers = list(pool() if callable(pool) else pool)
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
    note(len(queue), len(pending))
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=stall_timeout_s)
        if not ready:
            reassign_from_lost_workers()
            note(len(queue), len(pending))
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
        note(len(queue), len(pending))
