"""Validate a synthetic (or newly arrived) table against a real reference: calibrated collapse
detection on eight dimensions, row-level blame and ranked fixes.

    python -m jobs.validate --real real.parquet --synthetic synth.csv --out runs/val [--label target]
    python -m jobs.validate --planted memorised --severity high [--n 5000] [--dataset wine] --out runs/val
    ray job submit --working-dir . -- python -m jobs.validate --real R --synthetic S --out DIR

Writes DIR/report.json (`collapsed`, `dimensions` {name: {score, p_value, flagged, columns}},
`flagged_rows` [{index, score, reason, kind}], `recommendations`, and `details`), DIR/plots/<dim>.png
and DIR/report.html. The planted mode also writes DIR/real.parquet, DIR/synthetic.parquet and
DIR/planted.json (the case and the planted row indices). Dimensions run as tasks on a Ray worker
pool (cluster.connect(): RAY_ADDRESS or an embedded cluster) and are kept in DIR/dimensions, so a
resubmitted job skips the finished ones; `--no-ray` runs them in-process.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_args

import pandas as pd

from actors.common.errors import InputError
from actors.validation.config import DatasetName, PlantedSpec, Severity, ValidationSpec
from actors.validation.data import load_table
from jobs import cli


@dataclass
class Inputs:
    """What the job validates; real / synth are None in --stream mode (read in one pass, maybe by Ray Data)."""

    spec: ValidationSpec
    out_dir: Path
    real: pd.DataFrame | None
    synth: pd.DataFrame | None
    label: str | None
    extra: dict = field(default_factory=dict)


def load_spec(path: str | Path | None, overrides: dict | None = None) -> ValidationSpec:
    """A validation YAML (or defaults) with dotted overrides like {"detector.n_null": 99}."""
    return cli.load_spec(ValidationSpec, path, overrides)


def run(spec: ValidationSpec, real: pd.DataFrame, synth: pd.DataFrame, out_dir: str | Path, *,
        label: str | None = None, use_ray: bool = False, extra: dict | None = None) -> dict:
    """Detect, localize, recommend (dimensions on the worker pool with `use_ray`, resumable in
    DIR/dimensions), write the report; returns the report.json document.

    With --stream, `real` / `synth` are the reservoir samples and `extra["streaming"]` holds the
    full-data sketch statistics; row indices then refer to the reservoir sample.
    """
    out_dir = Path(out_dir)
    if use_ray:
        from actors.validation.pool import validate_on_cluster

        result = validate_on_cluster(real, synth, spec, label=label, out_dir=out_dir / "dimensions")
    else:
        from actors.validation.pipeline import validate

        result = validate(real, synth, spec, label=label)
    return result.write(out_dir, name=spec.name, extra=extra)


def load_inputs(args) -> Inputs:
    """The spec and the tables (or the planted pair, saved next to the report), checked before Ray starts."""
    spec = load_spec(args.config, cli.parse_set(args.set))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.planted:
        return planted_inputs(args, spec, out_dir)
    if not (args.real and args.synthetic):
        raise InputError("real", "--real and --synthetic are required without --planted", "two table paths")
    extra = {"real": args.real, "synthetic": args.synthetic}
    if args.stream:
        return Inputs(spec, out_dir, None, None, args.label, extra)
    return Inputs(spec, out_dir, load_table(args.real, "real"), load_table(args.synthetic, "synthetic"), args.label,
                  extra)


def planted_inputs(args, spec: ValidationSpec, out_dir: Path) -> Inputs:
    """Generate the planted pair, save it next to the report (real/synthetic.parquet, planted.json)."""
    from actors.common.storage import atomic_write_json, atomic_write_parquet
    from actors.validation.planted import plant

    planted_spec = PlantedSpec(case=args.planted, severity=args.severity, dataset=args.dataset, n=args.n,
                               seed=args.seed)
    pair = plant(planted_spec)
    atomic_write_parquet(out_dir / "real.parquet", pair.real)
    atomic_write_parquet(out_dir / "synthetic.parquet", pair.synth)
    planted = {"case": planted_spec.case, "severity": planted_spec.severity, "dataset": planted_spec.dataset,
               "n": planted_spec.n, "fraction": pair.fraction, "rows": pair.rows.tolist(),
               "expected_dimensions": list(pair.expected)}
    atomic_write_json(out_dir / "planted.json", planted)
    return Inputs(spec, out_dir, pair.real, pair.synth, args.label or pair.label,
                  {"planted": {k: v for k, v in planted.items() if k != "rows"}})


def validate_inputs(inp: Inputs, *, use_ray: bool, ray_data: bool) -> dict:
    """Run the pipeline on the inputs (streaming them first in --stream mode); the job's summary."""
    real, synth, extra = inp.real, inp.synth, dict(inp.extra)
    if real is None or synth is None:
        from actors.validation.streaming import sample_pair

        summarizer, engine = None, "in_process"
        if ray_data and use_ray:
            from actors.validation.raydata import summarize_ray as summarizer

            engine = "ray_data"
        real, synth, extra["streaming"] = sample_pair(extra["real"], extra["synthetic"], inp.spec.detector,
                                                      summarizer=summarizer, engine=engine)
    doc = run(inp.spec, real, synth, inp.out_dir, label=inp.label, use_ray=use_ray, extra=extra)
    return {"out_dir": str(inp.out_dir), "collapsed": doc["collapsed"],
            "flagged": [k for k, d in doc["dimensions"].items() if d["flagged"]],
            "flagged_rows": len(doc["flagged_rows"]),
            "top_recommendation": doc["recommendations"][0]["fix"] if doc["recommendations"] else None,
            "timing": doc["timing"]}


def main(argv: list[str] | None = None) -> int:
    ap = cli.job_parser(__doc__, config_help="validation YAML (configs/validation/*.yaml); defaults without",
                        config_required=False, out_help="output directory (reused to resume)",
                        set_example="detector.n_null=99")
    ap.add_argument("--real", help="reference table (.parquet / .csv)")
    ap.add_argument("--synthetic", help="table to validate (.parquet / .csv), same columns")
    ap.add_argument("--label", default=None, help="label column (confident-learning label issues)")
    ap.add_argument("--planted", default=None, help="generate the pair: a planted case (see PlantedSpec) or clean")
    ap.add_argument("--severity", default="high", choices=get_args(Severity))
    ap.add_argument("--n", type=int, default=None, help="planted: rows per side (Gaussian copula); default halves")
    ap.add_argument("--dataset", default="breast_cancer", choices=get_args(DatasetName))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-ray", action="store_true", help="run every dimension in this process")
    ap.add_argument("--stream", action="store_true",
                    help="large files: one pass with KLL sketches + reservoir samples of detector.max_rows rows")
    ap.add_argument("--ray-data", action="store_true",
                    help="with --stream: build the sketches with Ray Data (read_parquet/read_csv + map_batches)")
    args = ap.parse_args(argv)
    use_ray = not args.no_ray
    return cli.run_job(lambda: load_inputs(args),
                       lambda inp: validate_inputs(inp, use_ray=use_ray, ray_data=args.ray_data),
                       address=args.address, ray=use_ray)


if __name__ == "__main__":
    sys.exit(main())
