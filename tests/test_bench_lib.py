"""jobs.bench.lib: the measurements the benchmarks share, against what they must at least report
(a sleep's length, an allocation's size) and exact strings for the tables and version lookups.
Its statistics (wilson, localization_scores, subset_auprc) are tested in test_validation_bench.py."""
from __future__ import annotations

import importlib.metadata
import re
import time

import numpy as np

from jobs.bench import lib


def test_md_table_exact():
    got = lib.md_table(["a", "b \\| c"], [(1, ""), ["x", 2.5]])
    assert got == "| a | b \\| c |\n|---|---|\n| 1 |  |\n| x | 2.5 |"


def test_best_time_is_the_fastest_call_and_returns_the_last_result():
    calls: list[float] = []

    def fn() -> int:
        time.sleep(0.3 if not calls else 0.005)    # the first call is the slow one
        calls.append(1)
        return len(calls)

    best, out = lib.best_time(fn, repeats=3)
    assert out == 3
    assert 0.005 <= best < 0.3


def test_measure_reports_the_traced_peak_and_cpu_time():
    n = 2_000_000                                   # 16 MB of float64
    out, wall, peak, cpu = lib.measure(lambda: float(np.ones(n).sum()), trace=True)
    assert out == n and wall > 0 and cpu >= 0
    assert peak is not None and 15.2 <= peak < 64     # numpy buffers are traced; MB = 2**20 bytes
    assert lib.measure(lambda: 1, trace=False)[2] is None


def test_child_peak_rss_sees_an_allocation_in_the_child():
    base = lib.child_peak_rss("pass")
    big = lib.child_peak_rss("x = b'\\x01' * (96 * 2**20)")     # bytes * n writes every page
    assert base[0] > 0 and big[0] - base[0] >= 90
    assert len(big) == 3 and big[1] >= 0 and big[2] >= 0


def test_rusage_counts_this_process():
    cpu0, rss0 = lib.rusage()
    t = time.process_time()
    while time.process_time() - t < 0.05:
        pass
    cpu1, rss1 = lib.rusage()
    assert cpu1 - cpu0 >= 0.04 and rss1 >= rss0 > 0


def test_versions_and_stamp():
    assert lib.dist_versions(["numpy", "no-such-dist-attractor"]) == {
        "numpy": importlib.metadata.version("numpy"), "no-such-dist-attractor": None}
    assert lib.module_versions(["numpy", "no_such_module_attractor"]) == {
        "numpy": np.__version__, "no_such_module_attractor": "not importable (ModuleNotFoundError)"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", lib.utc_stamp())
