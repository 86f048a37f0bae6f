"""Parameter sweep job.

    python -m jobs.sweep --config configs/sweep/gaslit_small.yaml --out runs/gaslit_small
    ray job submit --working-dir . -- python -m jobs.sweep --config configs/sweep/gaslit_small.yaml --out DIR

Writes DIR/trajectories.parquet, DIR/regime_map.png, DIR/summary.json (and DIR/chunks/, which a
resubmitted job reuses: finished chunks are skipped), and DIR/spectra.parquet when the config has an
`analysis.spectrum` block.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from actors.common.errors import InputError
from actors.sweep.config import SweepSpec
from actors.sweep.engine import axis_columns
from jobs import cli


def load_spec(path: str | Path, overrides: dict | None = None) -> SweepSpec:
    """Read a sweep YAML, apply dotted overrides like {"solver.device": "cpu"}, validate."""
    return cli.load_spec(SweepSpec, path, overrides)


def render(spec: SweepSpec, out_dir: Path) -> Path:
    """Regime map of the first two axes (or spec.map_axes) from trajectories.parquet."""
    import pyarrow.parquet as pq

    from actors.sweep.plots import regime_map

    cols = axis_columns(spec)
    names = [a.name for a in spec.axes]
    x, y = spec.map_axes or (names[0], names[1] if len(names) > 1 else names[0])
    xc, yc = cols[names.index(x)], cols[names.index(y)]
    # only the plotted columns, labels dictionary-encoded: a 10^7-point map stays a few hundred MB
    table = pq.read_table(out_dir / "trajectories.parquet", columns=sorted({xc, yc, "attractor", "lyapunov_max"}),
                          read_dictionary=["attractor"]).to_pandas()
    table["attractor"] = table["attractor"].astype(str)
    return regime_map(table, xc, yc, out_dir / "regime_map.png", title=f"{spec.model}: {spec.name}",
                      xlabel=x, ylabel=f"{y}(0)" if yc.endswith("_0") else y)


def run(spec: SweepSpec, out_dir: Path, *, progress: bool = True) -> dict:
    from actors.sweep.pool import run_sweep

    summary = run_sweep(spec, out_dir, progress=progress)
    if len(spec.axes) >= 1:
        render(spec, out_dir)
    return summary.__dict__


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="sweep YAML (configs/sweep/*.yaml)")
    ap.add_argument("--out", required=True, help="output directory (reused to resume)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="override config fields, e.g. solver.backend=scipy chunk_size=64")
    ap.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS or embedded)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    from cluster import connect

    try:
        spec = load_spec(args.config, cli.parse_set(args.set))
    except (InputError, ValueError) as exc:
        print(f"invalid sweep config {args.config}: {exc}", file=sys.stderr)
        return 2
    connect(args.address)
    try:
        summary = run(spec, Path(args.out), progress=not args.no_progress)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: summary[k] for k in ("out_dir", "n_points", "chunks_computed", "chunks_skipped",
                                              "wall_seconds", "trajectories_per_second", "attractor_counts",
                                              "chunks_per_worker", "backends", "spectra")},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
