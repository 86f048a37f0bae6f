"""Continuation job: equilibrium branches of a model in one parameter, with folds, branch points, Hopf points.

    python -m jobs.continuation --config configs/continuation/lorenz_rho.yaml --out runs/cont_lorenz
    ray job submit --working-dir . -- python -m jobs.continuation --config configs/continuation/X.yaml --out DIR

Writes DIR/branches.parquet (one row per continuation point: branch, label, parameter, states,
max_real_eig, stable), DIR/special_points.json, DIR/continuation.png and DIR/summary.json. The work
is a few hundred small dense solves, so it runs in the job's own process (no actors, no GPU).

The model is a preset named by `model:`, a file given with `--model FILE.yaml` (the config names it by
its `name`) or a whole model inline under `model:`. Names (model, parameter, params, branch starts,
plot_state) are checked before any work: a bad one ends the job with `error: <field>: ...`, exit 2.
"""
from __future__ import annotations

import sys
from pathlib import Path

from actors.sweep.continuation import ContinuationSpec, check_continuation, write_continuation
from jobs import cli


def load_spec(path: str | Path | None, overrides: dict | None = None) -> ContinuationSpec:
    """Read a continuation YAML, apply dotted overrides like {"settings.step_max": 0.1}, validate."""
    return cli.load_spec(ContinuationSpec, path, overrides)


def checked_spec(path: str | Path | None, overrides: dict | None = None,
                 model_files: list[str] | None = None) -> ContinuationSpec:
    """Register `model_files`, load the spec and check its names against the model."""
    from actors.sweep.models import register_model_file

    for f in model_files or []:
        register_model_file(f)
    spec = load_spec(path, overrides)
    check_continuation(spec)
    return spec


def main(argv: list[str] | None = None) -> int:
    ap = cli.job_parser(__doc__, config_help="continuation YAML (configs/continuation/*.yaml)",
                        out_help="output directory", set_example="bounds=[0,40] settings.step_max=0.1",
                        address=False)
    ap.add_argument("--model", action="append", default=[], metavar="FILE.yaml",
                    help="a model YAML file to register for this run (repeatable); the config names it by `name`")
    args = ap.parse_args(argv)
    return cli.run_job(lambda: checked_spec(args.config, cli.parse_set(args.set), args.model),
                       lambda spec: write_continuation(spec, Path(args.out)), ray=False)


if __name__ == "__main__":
    sys.exit(main())
