"""Continuation job: equilibrium branches of a model in one parameter, with folds, branch points, Hopf points.

    python -m jobs.continuation --config configs/continuation/lorenz_rho.yaml --out runs/cont_lorenz
    ray job submit --working-dir . -- python -m jobs.continuation --config configs/continuation/X.yaml --out DIR

Writes DIR/branches.parquet (one row per continuation point: branch, label, parameter, states,
max_real_eig, stable), DIR/special_points.json, DIR/continuation.png and DIR/summary.json. The work
is a few hundred small dense solves, so it runs in the job's own process (no actors, no GPU).
"""
from __future__ import annotations

import sys
from pathlib import Path

from actors.sweep.continuation import ContinuationSpec, write_continuation
from jobs import cli


def load_spec(path: str | Path | None, overrides: dict | None = None) -> ContinuationSpec:
    """Read a continuation YAML, apply dotted overrides like {"settings.step_max": 0.1}, validate."""
    return cli.load_spec(ContinuationSpec, path, overrides)


def main(argv: list[str] | None = None) -> int:
    ap = cli.job_parser(__doc__, config_help="continuation YAML (configs/continuation/*.yaml)",
                        out_help="output directory", set_example="bounds=[0,40] settings.step_max=0.1",
                        address=False)
    args = ap.parse_args(argv)
    return cli.run_job(lambda: load_spec(args.config, cli.parse_set(args.set)),
                       lambda spec: write_continuation(spec, Path(args.out)), ray=False)


if __name__ == "__main__":
    sys.exit(main())
