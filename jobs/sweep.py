"""Parameter sweep job.

    python -m jobs.sweep --config configs/sweep/gaslit_small.yaml --out runs/gaslit_small
    ray job submit --working-dir . -- python -m jobs.sweep --config configs/sweep/gaslit_small.yaml --out DIR

    python -m jobs.sweep --model my_model.yaml --config my_sweep.yaml --out DIR   # a model of your own

The model is a shipped preset named by `model:`, a model file given with `--model FILE.yaml` (repeat
for several; the config names it by its `name`), or a whole model inline under `model:` (see
docs/models/README.md). The spec and every name in it (model, params, initial_state, axes) are
checked before Ray starts: a bad one ends the job at once with `error: <field>: ...` and exit 2.

Writes DIR/trajectories.parquet, DIR/regime_map.png, DIR/summary.json (this run) and
DIR/summaries.jsonl (one line per run: a resubmission keeps the first run's summary), DIR/chunks/
(which a resubmitted job reuses: finished chunks are skipped), and DIR/spectra.parquet when the config
has an `analysis.spectrum` block. Each chunk runs under `chunk_timeout_s` (default 3600 s).
"""
from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

from actors.sweep.config import SweepSpec
from jobs import cli

MODEL_HELP = "a model YAML file to register for this run (repeatable); the config names it by `name`"

PRINTED = ("out_dir", "n_points", "chunks_computed", "chunks_skipped", "wall_seconds", "trajectories_per_second",
           "attractor_counts", "chunks_per_worker", "backends", "spectra")


def load_spec(path: str | Path, overrides: dict | None = None) -> SweepSpec:
    """Read a sweep YAML, apply dotted overrides like {"solver.device": "cpu"}, validate."""
    return cli.load_spec(SweepSpec, path, overrides)


def checked_spec(path: str | Path, overrides: dict | None = None, model_files: list[str] | None = None) -> SweepSpec:
    """Register `model_files`, load the spec and check every name in it against its model (no Ray).

    Why here: the workers would find a bad name only after Ray has started (tens of seconds) and
    report it from inside a task; the job checks before, and exits 2 with the field at once.
    """
    from actors.sweep.models import register_model_file, resolve_model

    for f in model_files or []:
        register_model_file(f)
    spec = load_spec(path, overrides)
    resolve_model(spec.model)        # the model first: no torch import is needed to refuse a bad name

    from actors.sweep.engine import check_sweep

    check_sweep(spec)
    return spec


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
    ap.add_argument("--model", action="append", default=[], metavar="FILE.yaml", help=MODEL_HELP)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    return cli.run_job(lambda: checked_spec(args.config, cli.parse_set(args.set), args.model),
                       lambda spec: run(spec, Path(args.out), progress=not args.no_progress),
                       address=args.address, keys=PRINTED)


if __name__ == "__main__":
    sys.exit(main())
