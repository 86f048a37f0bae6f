"""Bounded work: a wall-clock deadline and cancellation that the engines' long loops check.

A Serve request (or a Ray task) runs inside `scope(Budget(seconds=...))`; engine loops call
`checkpoint()` once per step / resample / surrogate batch. Outside any scope `checkpoint()` does
nothing, so engines run unbounded when called directly. The budget lives in a context variable, so it
follows the request into FastAPI's worker thread without being threaded through every signature.

- over the deadline -> `BudgetExceeded` (an InputError, HTTP 504, naming the budget and its limit)
- cancelled (the client went away: Serve cancels the request) -> `Cancelled`; nobody reads the answer,
  the point is that the loop stops burning CPU
"""
from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from actors.common.errors import InputError

__all__ = ["Budget", "BudgetExceeded", "Cancelled", "TaskBudget", "checkpoint", "current", "scope", "task_budget",
           "task_scope"]


class BudgetExceeded(InputError):
    """The work ran past its wall-clock budget (HTTP 504); the field names the budget."""

    status_code = 504


class Cancelled(Exception):
    """The caller cancelled the work (a disconnected HTTP client)."""

    def __reduce__(self) -> tuple:
        return (Cancelled, self.args)


@dataclass
class Budget:
    """`seconds` of wall clock from creation (None: no limit) and a cancel flag any thread may set."""

    seconds: float | None = None
    setting: str = "request_timeout_s"   # the setting that bounds it, named in the error
    started: float = field(default_factory=time.monotonic)
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    def remaining(self) -> float | None:
        return None if self.seconds is None else self.seconds - (time.monotonic() - self.started)

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check(self) -> None:
        """Raise if cancelled or past the deadline; otherwise return at once."""
        if self._cancel.is_set():
            raise Cancelled("cancelled by the caller")
        if self.seconds is not None and time.monotonic() - self.started > self.seconds:
            raise BudgetExceeded(self.setting, f"the work ran past its time budget of {self.seconds:g} s",
                                 f"<= {self.seconds:g} s of compute (ask for less work, or raise {self.setting})")


_CURRENT: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("attractor_budget", default=None)


def current() -> Budget | None:
    """The budget of the work running in this context, if any."""
    return _CURRENT.get()


def checkpoint() -> None:
    """Called from engine loops: stop here if the current budget is spent or cancelled."""
    budget = _CURRENT.get()
    if budget is not None:
        budget.check()


@contextmanager
def scope(budget: Budget | None) -> Iterator[Budget | None]:
    """Run the block under `budget` (None: unbounded)."""
    token = _CURRENT.set(budget)
    try:
        yield budget
    finally:
        _CURRENT.reset(token)


# ---- across Ray: a context variable does not reach a worker process, so a task is sent what is left
TaskBudget = tuple[float, str]   # (seconds left, the setting that bounds them)


def task_budget() -> TaskBudget | None:
    """What to send with a Ray task: (seconds left, setting) of the caller's budget, or None when
    unbounded; raises BudgetExceeded (or Cancelled) when nothing is left."""
    checkpoint()
    budget = current()
    if budget is None or budget.seconds is None:
        return None
    return max(budget.remaining() or 0.0, 0.0), budget.setting


def task_scope(budget: TaskBudget | None):
    """Inside the actor or task: run under the budget the caller sent (None: unbounded)."""
    return scope(None if budget is None else Budget(budget[0], setting=budget[1]))
