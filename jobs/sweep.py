"""Parameter sweep job.

    python -m jobs.sweep --config configs/sweep/gaslit_small.yaml --out runs/gaslit_small
    ray job submit --working-dir . -- python -m jobs.sweep --config configs/sweep/gaslit_small.yaml --out DIR

Writes DIR/trajectories.parquet, DIR/regime_map.png, DIR/summary.json (and DIR/chunks/, which a
resubmitted job reuses: finished chunks are skipped), and DIR/spectra.parquet when the config has an
`analysis.spectrum` block.
"""
from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

from actors.sweep.config import SweepSpec
from jobs import cli

PRINTED = ("out_dir", "n_points", "chunks_computed", "chunks_skipped", "wall_seconds", "trajectories_per_second",
           "attractor_counts", "chunks_per_worker", "backends", "spectra")


def load_spec(path: str | Path, overrides: dict | None = None) -> SweepSpec:
    """Read a sweep YAML, apply dotted overrides like {"solver.device": "cpu"}, validate."""
    return cli.load_spec(SweepSpec, path, overrides)


def run(spec: SweepSpec, out_dir: Path, *, progress: bool = True) -> dict:
    """The sweep on the SweepWorker pool, then its regime map; the summary as a dict."""
    from actors.sweep.plots import sweep_regime_map
    from actors.sweep.pool import run_sweep

    summary = run_sweep(spec, out_dir, progress=progress)
    sweep_regime_map(spec, Path(out_dir))
    return asdict(summary)


def main(argv: list[str] | None = None) -> int:
    ap = cli.job_parser(__doc__, config_help="sweep YAML (configs/sweep/*.yaml)",
                        set_example="solver.backend=scipy chunk_size=64")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    return cli.run_job(lambda: load_spec(args.config, cli.parse_set(args.set)),
                       lambda spec: run(spec, Path(args.out), progress=not args.no_progress),
                       address=args.address, keys=PRINTED)


if __name__ == "__main__":
    sys.exit(main())
