"""One-parameter bifurcation diagram: local maxima of a state over the final window vs a parameter.

    python -m jobs.bifurcation --config configs/bifurcation/brusselator_ci.yaml --out runs/bif
    ray job submit --working-dir . -- python -m jobs.bifurcation --config configs/bifurcation/lorenz_rho.yaml --out DIR

The diagram, its optional continuation overlay and spectrum panel are computed by
actors/sweep/bifurcation.py (see there). Writes DIR/bifurcation.png, DIR/bifurcation.parquet
(parameter, value, kind, regime), DIR/trajectories.parquet (one row per parameter value) and
DIR/summary.json. Chunks of `chunk_size` values run in the job's process, or with --ray (implied
under `ray job submit`, which sets RAY_ADDRESS) on SweepWorkers sized by `workers:`.

The model is a preset named by `model:`, a file given with `--model FILE.yaml` (the config names it by
its `name`; it travels to the workers inside the spec) or a whole model inline under `model:`. The
spec and its names (model, parameter, state, params, initial_state) are checked before Ray starts:
a bad one ends the job with `error: <field>: ...` and exit 2.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from actors.sweep.bifurcation import BifurcationSpec, write_diagram
from jobs import cli


def load_spec(path: str | Path | None, overrides: dict | None = None) -> BifurcationSpec:
    """Read a bifurcation YAML, apply dotted overrides like {"n": 50}, validate."""
    return cli.load_spec(BifurcationSpec, path, overrides)


def checked_spec(path: str | Path | None, overrides: dict | None = None,
                 model_files: list[str] | None = None) -> BifurcationSpec:
    """Register `model_files`, load the spec and check its names against the model (before Ray)."""
    from actors.sweep.bifurcation import check_bifurcation
    from actors.sweep.models import register_model_file

    for f in model_files or []:
        register_model_file(f)
    spec = load_spec(path, overrides)
    check_bifurcation(spec)
    return spec


def run(spec: BifurcationSpec, out_dir: Path, *, use_ray: bool = False) -> dict:
    """The diagram in this process, or with `use_ray` on the SweepWorker pool (same tables)."""
    if use_ray:
        from actors.sweep.pool import run_bifurcation

        return run_bifurcation(spec, out_dir)
    return write_diagram(spec, out_dir)


def main(argv: list[str] | None = None) -> int:
    ap = cli.job_parser(__doc__, config_help="bifurcation YAML (configs/bifurcation/*.yaml)",
                        out_help="output directory", set_example="n=400 solver.device=cuda")
    ap.add_argument("--ray", action="store_true",
                    help="chunks on SweepWorkers (resources from `workers:`); implied by RAY_ADDRESS / --address")
    ap.add_argument("--model", action="append", default=[], metavar="FILE.yaml",
                    help="a model YAML file to register for this run (repeatable); the config names it by `name`")
    args = ap.parse_args(argv)
    use_ray = args.ray or bool(args.address) or bool(os.environ.get("RAY_ADDRESS"))
    return cli.run_job(lambda: checked_spec(args.config, cli.parse_set(args.set), args.model),
                       lambda spec: run(spec, Path(args.out), use_ray=use_ray), address=args.address, ray=use_ray)


if __name__ == "__main__":
    sys.exit(main())
