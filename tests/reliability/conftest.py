"""Fixtures of the reliability suite: the three apps in-process (small limits), and the fuzz counts
printed at the end of the run (per route: cases sent and the statuses they got)."""
from __future__ import annotations

import collections
from pathlib import Path

import pytest

FUZZ_COUNTS: dict[str, collections.Counter] = {}


@pytest.fixture(scope="session")
def fuzz_counts() -> dict[str, collections.Counter]:
    """route -> Counter of statuses (and 'cases'); printed in the terminal summary."""
    return FUZZ_COUNTS


@pytest.fixture(scope="module")
def app_clients(tmp_path_factory):
    """name -> FastAPI TestClient of serve.<name>.make_fastapi with the suite's limits (built lazily)."""
    from fastapi.testclient import TestClient

    from .routes import make_app

    root: Path = tmp_path_factory.mktemp("apps")
    clients: dict[str, TestClient] = {}

    class Lazy(dict):
        def __missing__(self, name: str) -> TestClient:
            clients[name] = TestClient(make_app(name, root / name), raise_server_exceptions=False)
            self[name] = clients[name]
            return clients[name]

    yield Lazy()
    for c in clients.values():
        c.close()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not FUZZ_COUNTS:
        return
    tr = terminalreporter
    tr.section("fuzzed routes (cases sent, statuses)")
    total = 0
    for route, counts in sorted(FUZZ_COUNTS.items()):
        n = counts.get("cases", 0)
        total += n
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()) if k not in ("cases", "seconds"))
        tr.write_line(f"{route:<60} {n:>5} {counts.get('seconds', 0):>4} s   {statuses}")
    tr.write_line(f"{'total':<60} {total:>5}")
