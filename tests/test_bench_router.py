"""jobs.bench.router's HTTP path runs: the app on uvicorn in its own process answers the timed /route calls
(the benchmark's numbers are not asserted: speed belongs to the benchmark job, docs/router.md)."""
from __future__ import annotations

from jobs.bench.router import over_uvicorn, synthetic_router


def test_uvicorn_row_times_answered_route_calls(tmp_path):
    from actors.router.router import save_router

    model_dir = save_router(synthetic_router(2), tmp_path / "router")
    row = over_uvicorn(model_dir, 2, calls=20, warmup=5)
    assert row["path"] == "HTTP, uvicorn (no Serve)" and row["n"] == 20
    assert 0 < row["p50_us"] <= row["p99_us"] <= row["max_us"]
