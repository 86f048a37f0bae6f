"""jobs.bench.eqprop's tuning sections on the CPU (tiny shapes; the kernels under TRITON_INTERPRET=1): the
H-256 variant grid, the wide tile grid with the grouped sweep, the epoch-time section and the time budget."""
from __future__ import annotations

import json

import pytest
import torch

from jobs.bench import eqprop as bench

pytestmark = pytest.mark.triton_interpret
CPU = torch.device("cpu")


def test_kernels256_grid_rows_carry_ratios_errors_and_failures():
    grid = [("resident", "bf16", 16, 8, None), ("chunked", "tf32", 16, 8, None), ("nosuch", "bf16", 16, 8, None)]
    rows = bench.bench_kernels256(2, 16, 1, lambda _: None, CPU, hidden=64, grid=grid)
    by = {(r["path"], r["note"].split(";")[0]): r for r in rows}
    res = by[("persistent resident (bf16)", "BLOCK_B=16 warps=8")]
    assert res["kernel_ms"] > 0 and res["x_eager"] > 0 and res["rel_err_fp64"] < 5e-3
    assert by[("persistent chunked (tf32)", "BLOCK_B=16 warps=8")]["rel_err_fp64"] < 1e-6   # the interpreter's tf32 is fp32
    assert "failed: ValueError" in by[("persistent nosuch (bf16)", "BLOCK_B=16 warps=8")]["note"]
    assert bench.best_lines(rows)[0].startswith("H 64: best persistent")


def test_wide_grid_adds_the_bf16_state_row_for_the_fastest_tile_and_stops_at_the_budget():
    rows = bench.bench_wide(2, 16, 1, lambda _: None, CPU, widths=(48,), tiles=[(16, 16, 16, 4, 2), (32, 32, 32, 4, 2)])
    paths = [r["path"] for r in rows]
    assert paths[0] == "eager torch loop (fp32)" and len(paths) == 5
    assert any("bf16 states" in p for p in paths)
    assert all(r["rel_err_fp64"] < 5e-3 for r in rows)
    spent = bench.Budget(0.0)
    skipped = bench.bench_wide(2, 16, 1, lambda _: None, CPU, widths=(48,), budget=spent)
    assert skipped == []


def test_epoch_section_reports_ms_per_epoch_and_ratios():
    rows, note = bench.bench_epoch(lambda _: None, CPU, max_steps=2, sizes=(784, 32, 10))
    assert "63 steps per epoch" in note and "2 timed steps" in note
    by = {r["method"]: r for r in rows}
    assert by["backprop twin: BPTT through the 30 sweeps"]["x_bptt_epoch"] == pytest.approx(1.0)
    assert all(r["ms_per_epoch"] > 0 for r in rows)


def test_main_device_cpu_sections_write_the_tables(tmp_path):
    assert bench.main(["--device", "cpu", "--sections", "epoch", "--out", str(tmp_path)]) == 0
    md = (tmp_path / "eqprop_bench.md").read_text()
    assert "Training epoch time" in md
    assert json.loads((tmp_path / "eqprop_bench.json").read_text())["epoch"]
    assert bench.main(["--sections", "nosuch", "--out", str(tmp_path)]) == 2
