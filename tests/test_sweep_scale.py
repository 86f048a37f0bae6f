"""Sweeps at scale: the 10^6-point map's code path on a tiny grid, the streaming merge, and the
1-vs-2-GPU scaling benchmark on fake GPUs (num_gpus resources, as tests/test_pool.py)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from actors.common.storage import atomic_write_parquet
from actors.sweep.config import SweepSpec
from actors.sweep.pool import chunk_path
from configs import preset
from jobs.sweep import load_spec

MAP_1M = preset("sweep", "gaslit_1m_gpu.yaml")
SCALING = preset("sweep", "gaslit_scaling_gpu.yaml")
# the same presets shrunk to seconds on one core: grid, horizon and spectrum sample only
TINY = {"axes": [{"name": "gamma", "kind": "param", "lo": 0.0, "hi": 1.0, "n": 4},
                 {"name": "Lambda", "kind": "state", "lo": 0.0, "hi": 10.0, "n": 3}],
        "solver.t_span": [0.0, 10.0], "chunk_size": 4, "workers.num_cpus": 0.5}
TINY_SPECTRUM = {"sample": 3, "reference_points": False, "k": 2, "dt": 0.05, "t_transient": 5.0, "t_measure": 10.0}


def test_presets_are_the_documented_sizes():
    big = load_spec(MAP_1M)
    assert big.n_points == 1_000_000 and [a.n for a in big.axes] == [1000, 1000]
    assert big.solver.backend == "auto" and big.chunk_size * 16 == big.n_points  # 16 chunks to balance
    assert big.analysis.spectrum.sample > 0 and big.analysis.spectrum.classify
    scaling = load_spec(SCALING)
    assert scaling.n_points == 512 * 512 and scaling.n_points // scaling.chunk_size == 16


def test_merge_streams_chunks_in_point_order_and_counts(tmp_path):
    """merge_chunks writes the concatenation of the chunk files (one in memory at a time) and the
    label counts of the whole table."""
    from actors.sweep.pool import merge_chunks

    rng = np.random.default_rng(0)
    labels = np.array(["fixed_point", "limit_cycle", "chaotic", "blow_up"])
    frames = []
    for i, n in enumerate([5, 5, 3]):
        frame = pd.DataFrame({"point": np.arange(5 * i, 5 * i + n), "chunk": i, "x_final": rng.normal(size=n),
                              "regime": labels[rng.integers(0, 4, n)], "backend": "torch"})
        frame["attractor"] = frame["regime"].where(frame["regime"] != "fixed_point", "healthy")
        frames.append(frame)
        atomic_write_parquet(chunk_path(tmp_path, i), frame)
    merged = merge_chunks(tmp_path, 3)
    table = pd.read_parquet(tmp_path / "trajectories.parquet")
    pd.testing.assert_frame_equal(table, pd.concat(frames, ignore_index=True))
    assert merged.n_rows == 13 and merged.backends == ["torch"]
    assert merged.regime_counts == table["regime"].value_counts().to_dict()
    assert merged.attractor_counts == table["attractor"].value_counts().to_dict()
    assert pq.ParquetFile(tmp_path / "trajectories.parquet").metadata.num_row_groups == 3  # one per chunk
    assert not list(tmp_path.glob(".trajectories*"))  # no temp file left behind


@pytest.mark.slow
def test_1m_preset_code_path_on_a_tiny_grid(ray_cluster, tmp_path, capsys):
    """jobs.sweep on the 10^6 preset shrunk to 4 x 3: streamed chunk lines, point order, a map,
    spectrum rows next to the sweep's labels, the summary's counts equal to the table's, and a
    resubmission that recomputes nothing."""
    from actors.sweep.engine import grid_points, simulate
    from jobs.sweep import run

    spec = load_spec(MAP_1M, {**TINY, "workers.num_gpus": 0, "workers.num_workers": 1,
                              "analysis.spectrum": TINY_SPECTRUM})
    summary = run(spec, tmp_path, progress=True)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[sweep gaslit_1m_gpu] chunk")]
    assert len(lines) == 3 and lines[-1].split(": ")[1].startswith("3/3 chunks, 12/12 trajectories")
    table = pd.read_parquet(tmp_path / "trajectories.parquet")
    np.testing.assert_array_equal(table["point"], np.arange(12))
    params, u0 = grid_points(spec)
    direct = simulate(spec.model, params, u0, spec.solver)
    assert (table["attractor"].to_numpy() == direct.attractor.astype(str)).all()
    # chunks fold other constants into the rhs: equal to rounding where the orbit is not chaotic
    calm = ~np.isin(direct.regime, ["chaotic", "blow_up"])
    assert calm.sum() >= 4
    np.testing.assert_allclose(table.loc[calm, ["x_final", "Lambda_final"]], direct.raw.u_final[calm][:, [0, 3]],
                               rtol=1e-5, atol=1e-8)
    assert summary["attractor_counts"] == table["attractor"].value_counts().to_dict()
    assert json.loads((tmp_path / "summary.json").read_text())["attractor_counts"] == summary["attractor_counts"]
    assert (tmp_path / "regime_map.png").stat().st_size > 10_000
    spectra = pd.read_parquet(tmp_path / "spectra.parquet")
    assert len(spectra) == 3 and (spectra["regime_sweep"] == table.set_index("point").loc[
        spectra["point"], "regime"].to_numpy()).all()
    again = run(spec, tmp_path, progress=False)
    assert again["chunks_computed"] == 0 and again["chunks_skipped"] == 3


@pytest.mark.slow
def test_scaling_benchmark_on_two_fake_gpus(ray_cluster, tmp_path, capsys):
    """jobs.bench.sweep_scaling --gpus 1,2,3 on the 2 fake GPUs of the fixture: 1 and 2 run the same grid
    and give identical outputs (bitwise), the second on two distinct GPU ids with both pulling
    chunks; 3 is skipped, not failed."""
    from jobs.bench import sweep_scaling

    args = ["--config", str(SCALING), "--gpus", "1,2,3", "--out", str(tmp_path), "--no-progress", "--set"]
    args += [f"{k}={json.dumps(v)}" for k, v in TINY.items()]
    assert sweep_scaling.main(args) == 0
    out = capsys.readouterr().out
    assert "| 3 | skipped: the cluster has 2 GPU(s)" in out
    rows = json.loads((tmp_path / "scaling.json").read_text())["rows"]
    one, two = rows[0], rows[1]
    assert (one["gpus"], one["workers"], two["gpus"], two["workers"]) == (1, 1, 2, 2)
    assert one["chunks_per_worker"] == [3]
    assert sum(two["chunks_per_worker"]) == 3 and min(two["chunks_per_worker"]) >= 1  # both pulled chunks
    assert {tuple(g) for g in two["gpu_ids"]} == {("0",), ("1",)}
    assert two["identical"] and two["labels_identical"] and two["final_state_max_abs_diff"] == 0.0
    assert two["speedup"] > 0 and one["traj_per_s"] > 0
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "gpus-1" / "trajectories.parquet"),
                                  pd.read_parquet(tmp_path / "gpus-2" / "trajectories.parquet"))


def test_scaling_compare_detects_a_changed_row(tmp_path):
    """The identity check is not vacuous: one flipped label or one perturbed state is reported."""
    from jobs.bench.sweep_scaling import compare

    base = pd.DataFrame({"point": range(4), "regime": ["fixed_point"] * 4, "attractor": ["healthy"] * 4,
                         "blowup": [False] * 4, "x_final": [0.1, 0.2, np.nan, 0.4]})
    for name, frame in {"a": base, "b": base.assign(x_final=[0.1, 0.2, np.nan, 0.4 + 1e-12]),
                        "c": base.assign(regime=["fixed_point"] * 3 + ["chaotic"])}.items():
        (tmp_path / name).mkdir()
        frame.to_parquet(tmp_path / name / "trajectories.parquet")
    assert compare(tmp_path / "a", tmp_path / "a", ["x"])["identical"]
    b = compare(tmp_path / "a", tmp_path / "b", ["x"])
    assert b["labels_identical"] and not b["identical"] and 0 < b["final_state_max_abs_diff"] < 1e-11
    assert not compare(tmp_path / "a", tmp_path / "c", ["x"])["labels_identical"]


def test_bad_gpu_counts_are_refused(capsys):
    from jobs.bench import sweep_scaling

    assert sweep_scaling.main(["--config", str(SCALING), "--gpus", "0,2", "--out", "/tmp/unused"]) == 2
    assert "allowed comma-separated integers >= 1" in capsys.readouterr().err


def test_spec_roundtrip_keeps_worker_override():
    from jobs.bench.sweep_scaling import _with_gpus

    spec = load_spec(SCALING)
    two = _with_gpus(spec, 2)
    assert isinstance(two, SweepSpec) and two.workers.num_workers == 2 and two.workers.num_gpus == 1.0
    assert two.axes == spec.axes and two.solver == spec.solver and two.chunk_size == spec.chunk_size
