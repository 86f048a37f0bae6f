"""What the benchmarks in jobs.bench share: timing, peak memory, statistics, markdown tables, environment.

Kept apart from the benchmarks so the numbers they print rest on one tested implementation of each
measurement (a device-synchronised wall time means the same thing in the ODE and the TE tables) and
so the tests import a small module, not a benchmark script. No benchmark logic lives here; torch,
scikit-learn and the validation engine are imported only by the functions that need them.
"""
from __future__ import annotations

import datetime as dt
import importlib.metadata
import resource
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]   # where a child process finds the project's packages


# ---- timing --------------------------------------------------------------------------------------

def cuda_sync() -> None:
    """Wait for the GPU where there is one: a kernel launch returns before the kernel has run."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def best_time(fn: Callable[[], T], repeats: int = 1) -> tuple[float, T]:
    """(fastest wall seconds of `repeats` calls, the last call's result), the device synchronised
    before and after each call so queued work is neither counted in nor left out."""
    best, out = float("inf"), None
    for _ in range(repeats):
        cuda_sync()
        t = time.perf_counter()
        out = fn()
        cuda_sync()
        best = min(best, time.perf_counter() - t)
    return best, out  # type: ignore[return-value]


def event_ms(fn: Callable[[], object], reps: int) -> float:
    """Median milliseconds of fn() between CUDA events, after one untimed (warm-up) call: device time
    of warm launches only, without the host's launch latency around it."""
    import torch

    fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return float(np.median(times))


def measure(fn: Callable[[], T], trace: bool) -> tuple[T, float, float | None, float]:
    """(fn(), wall seconds, peak traced heap in MB or None, CPU seconds of this process: the fairer
    number on a shared machine, where wall time also counts other users' load). Tracing slows the
    call down, so a traced call's times should not be reported as speed."""
    if trace:
        tracemalloc.start()
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    sec, cpu = time.perf_counter() - t, time.process_time() - c
    peak = None
    if trace:
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return out, sec, peak, cpu


# ---- memory --------------------------------------------------------------------------------------

def rusage() -> tuple[float, float]:
    """(user + system CPU seconds, peak RSS in MB) of this process so far (Linux: ru_maxrss in KiB)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, r.ru_maxrss / 1024


_CHILD = """
import resource, sys, time
{preamble}
t = time.perf_counter()
{body}
r = resource.getrusage(resource.RUSAGE_SELF)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(int(hwm) / 1024, time.perf_counter() - t, r.ru_utime + r.ru_stime)
"""


def child_peak_rss(body: str, preamble: str = "", cwd: Path = REPO) -> list[float]:
    """[peak RSS MB, seconds, CPU seconds] of `body` run in a fresh Python process after the untimed
    `preamble` (imports). Peak RSS is the child's VmHWM read in the child (Linux; ru_maxrss would count
    the parent's pages before exec): the body's footprint plus the interpreter and the imports."""
    res = subprocess.run([sys.executable, "-c", _CHILD.format(preamble=preamble, body=body)],
                         capture_output=True, text=True, check=True, cwd=cwd)
    return [float(x) for x in res.stdout.split()[-3:]]


# ---- statistics ----------------------------------------------------------------------------------

def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (honest at 0 / n and n / n, unlike Wald)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def localization_scores(scores: np.ndarray, planted: np.ndarray) -> tuple[float, float]:
    """(precision@k with k = number planted, AUPRC) of a row score (higher = more suspect)."""
    from sklearn.metrics import average_precision_score

    from actors.validation.localize import precision_at_k

    y = np.zeros(len(scores), bool)
    y[planted] = True
    return precision_at_k(scores, planted), float(average_precision_score(y, scores))


def subset_auprc(scores: np.ndarray, planted: np.ndarray, subset: np.ndarray) -> float:
    """AUPRC of finding `subset` among the unplanted rows (the other planted rows left out), so one
    kind of planted row (e.g. exact copies) is scored without the other kind counting against it."""
    from sklearn.metrics import average_precision_score

    keep = np.ones(len(scores), bool)
    keep[np.setdiff1d(planted, subset)] = False
    pos = np.zeros(len(scores), bool)
    pos[subset] = True
    return float(average_precision_score(pos[keep], scores[keep]))


# ---- tables and environment ----------------------------------------------------------------------

def md_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A markdown table (no trailing newline): header, `|---|` rule, one line per row (cells as str),
    so the printed tables paste into docs/benchmarks.md without a tabulate dependency."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def utc_stamp() -> str:
    """The run's date as the tables print it, e.g. '2026-11-23 04:03 UTC'."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def gpu_name() -> str:
    """Name of CUDA device 0, or 'none'."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"


def dist_versions(names: Iterable[str]) -> dict[str, str | None]:
    """Installed version of each distribution (pip name), None where it is not installed."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def module_versions(modules: Iterable[str]) -> dict[str, str]:
    """`__version__` of each importable module, else 'not importable (<error type>)': a missing or
    broken peer is reported in the table, never fatal to the benchmark."""
    out: dict[str, str] = {}
    for mod in modules:
        try:
            out[mod] = __import__(mod).__version__
        except Exception as exc:  # noqa: BLE001 - report, never fail the benchmark on a missing peer
            out[mod] = f"not importable ({type(exc).__name__})"
    return out
