"""Multi-GPU scaling benchmark: the SAME sweep grid with 1, 2, ... GPUs in one run.

    python -m jobs.bench.sweep_scaling --config configs/sweep/gaslit_scaling_gpu.yaml --gpus 1,2 --out runs/scaling
    ray job submit --working-dir . -- python -m jobs.bench.sweep_scaling --config ... --gpus 1,2 --out DIR

For each GPU count g it runs the sweep from scratch (DIR/gpus-<g>/, removed first) on g SweepWorkers,
one per GPU, that pull chunks as they free up (actors/sweep/pool.py), and prints one table: wall
time, trajectories/s, speedup over the first count, chunks per worker, and whether the labels and
final states are identical to the first count's (they must be: a chunk is the same computation on
whichever GPU runs it). Every worker first runs one untimed warm-up chunk (kernel compilation).
Counts above the cluster's GPUs are reported as skipped, so the same command also runs on one GPU.
Writes DIR/scaling.json; exits 1 when outputs differ.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from actors.common.errors import InputError
from actors.sweep.config import SweepSpec
from jobs import cli

COMPARED = ("regime", "attractor", "blowup")


def warm_up(spec: SweepSpec, n_workers: int) -> None:
    """Run the first chunk on each of the first n_workers workers (kernel generation and compilation,
    CUDA context), so the timed runs measure integration, not start-up. A whole chunk, not a few
    rows: the generated kernel folds parameters that are equal across its batch into constants, so
    only a chunk-shaped slice compiles the kernel the timed chunks use."""
    import ray

    from actors.sweep.pool import workers

    pool = workers(spec.workers.model_copy(update={"num_workers": n_workers}))
    stop = min(spec.chunk_size, spec.n_points)
    ray.get([w.run_chunk.remote(spec.model_dump_json(), -1, 0, stop) for w in pool])


def compare(first: Path, other: Path, state_names: list[str]) -> dict:
    """Labels equal row by row, max |difference| of final states (0.0 means bitwise equal)."""
    finals = [f"{s}_final" for s in state_names]
    a = pd.read_parquet(first / "trajectories.parquet", columns=["point", *COMPARED, *finals])
    b = pd.read_parquet(other / "trajectories.parquet", columns=["point", *COMPARED, *finals])
    same_rows = len(a) == len(b) and bool((a["point"].to_numpy() == b["point"].to_numpy()).all())
    labels = same_rows and all(bool((a[c].to_numpy() == b[c].to_numpy()).all()) for c in COMPARED)
    diff = np.abs(a[finals].to_numpy() - b[finals].to_numpy()) if same_rows else np.array([np.inf])
    with np.errstate(invalid="ignore"):
        both_nan = np.isnan(a[finals].to_numpy()) & np.isnan(b[finals].to_numpy()) if same_rows else False
    max_diff = float(np.where(both_nan, 0.0, diff).max()) if diff.size else 0.0
    return {"labels_identical": labels, "final_state_max_abs_diff": max_diff,
            "identical": labels and max_diff == 0.0}


def run(spec: SweepSpec, gpu_counts: list[int], out: Path, *, progress: bool = True) -> list[dict]:
    """One sweep per GPU count (fresh output each), then the comparison rows; no printing."""
    import ray

    from actors.sweep.models import get_model
    from actors.sweep.pool import run_sweep

    total = int(ray.cluster_resources().get("GPU", 0))
    runnable = [g for g in gpu_counts if g <= total]
    rows: list[dict] = []
    if runnable:
        warm_up(_with_gpus(spec, max(runnable)), max(runnable))
    base: dict | None = None
    for g in gpu_counts:
        if g > total:
            rows.append({"gpus": g, "skipped": f"the cluster has {total} GPU(s)"})
            continue
        d = out / f"gpus-{g}"
        shutil.rmtree(d, ignore_errors=True)  # a timed run computes every chunk
        s = run_sweep(_with_gpus(spec, g), d, progress=progress)
        row = {"gpus": g, "workers": len(s.workers), "n_points": s.n_points, "wall_s": s.wall_seconds,
               "traj_per_s": s.trajectories_per_second, "chunks_per_worker": s.chunks_per_worker,
               "backends": s.backends, "gpu_ids": [w["gpu_ids"] for w in s.workers], "dir": str(d)}
        if base is None:
            base = row
            row.update(speedup=1.0, identical=True, labels_identical=True, final_state_max_abs_diff=0.0)
        else:
            row["speedup"] = round(base["wall_s"] / s.wall_seconds, 3)
            row.update(compare(Path(base["dir"]), d, get_model(spec.model).state_names))
        rows.append(row)
    return rows


def _with_gpus(spec: SweepSpec, g: int) -> SweepSpec:
    """The spec on exactly g workers of one GPU each (the grid, solver and chunks unchanged)."""
    return spec.model_copy(update={"workers": spec.workers.model_copy(update={"num_workers": g, "num_gpus": 1.0})})


def table(rows: list[dict]) -> str:
    """The printed benchmark table (markdown, pasteable into docs/benchmarks.md)."""
    lines = ["| GPUs | workers | points | wall (s) | trajectories/s | speedup | chunks per worker | "
             "labels identical | max |Δ final state| |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['gpus']} | skipped: {r['skipped']} | | | | | | | |")
            continue
        lines.append(f"| {r['gpus']} | {r['workers']} | {r['n_points']:,} | {r['wall_s']:.1f} | "
                     f"{r['traj_per_s']:,.0f} | {r['speedup']:.2f}× | {r['chunks_per_worker']} | "
                     f"{'yes' if r['labels_identical'] else 'NO'} | {r['final_state_max_abs_diff']:.3g} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="sweep YAML (configs/sweep/gaslit_scaling_gpu.yaml)")
    ap.add_argument("--gpus", default="1,2", help="comma-separated GPU counts, e.g. 1,2")
    ap.add_argument("--out", required=True, help="output directory (DIR/gpus-<g>/ per count)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config fields")
    ap.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS or embedded)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    try:
        counts = [int(g) for g in args.gpus.split(",") if g.strip()]
        if not counts or min(counts) < 1:
            raise ValueError
    except ValueError:
        print(f"invalid --gpus {args.gpus!r}: allowed comma-separated integers >= 1, e.g. 1,2", file=sys.stderr)
        return 2
    try:
        spec = cli.load_spec(SweepSpec, args.config, cli.parse_set(args.set))
    except (InputError, ValueError) as exc:
        print(f"invalid sweep config {args.config}: {exc}", file=sys.stderr)
        return 2
    from actors.common.storage import atomic_write_json
    from cluster import connect

    connect(args.address)
    out = Path(args.out)
    rows = run(spec, counts, out, progress=not args.no_progress)
    atomic_write_json(out / "scaling.json", {"config": args.config, "sweep": spec.name, "rows": rows})
    print(f"\nsweep scaling: {spec.name} ({spec.n_points:,} points, backend {spec.solver.backend}, "
          f"dtype {spec.solver.dtype})\n" + table(rows))
    ran = [r for r in rows if "skipped" not in r]
    return 0 if all(r["identical"] for r in ran) else 1


if __name__ == "__main__":
    sys.exit(main())
