"""Validate a synthetic (or newly arrived) table against a real reference: calibrated collapse
detection on eight dimensions, row-level blame and ranked fixes.

    python -m jobs.validate --real real.parquet --synthetic synth.csv --out runs/val [--label target]
    python -m jobs.validate --planted memorised --severity high [--n 5000] [--dataset wine] --out runs/val
    ray job submit --working-dir . -- python -m jobs.validate --real R --synthetic S --out DIR

Writes DIR/report.json (`collapsed`, `dimensions` {name: {score, p_value, flagged, columns}},
`flagged_rows` [{index, score, reason, kind}], `recommendations`, and `details`), DIR/plots/<dim>.png
and DIR/report.html. The planted mode also writes DIR/real.parquet, DIR/synthetic.parquet and
DIR/planted.json (the case and the planted row indices). Dimensions run as tasks on a Ray worker
pool (cluster.connect(): RAY_ADDRESS or an embedded cluster); `--no-ray` runs them in-process.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

from actors.common.errors import InputError
from actors.validation.config import PlantedSpec, ValidationSpec
from jobs import cli


def load_spec(path: str | Path | None, overrides: dict | None = None) -> ValidationSpec:
    """A validation YAML (or defaults) with dotted overrides like {"detector.n_null": 99}."""
    return cli.load_spec(ValidationSpec, path, overrides)


def load_table(path: str | Path, field: str) -> pd.DataFrame:
    """A .parquet or .csv table; InputError naming the argument when missing or unreadable."""
    path = Path(path)
    if not path.exists():
        raise InputError(field, f"{path} does not exist", "an existing .parquet or .csv file")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if suffix == ".csv":
        return pd.read_csv(path)
    raise InputError(field, f"unsupported file type {suffix!r}", ".parquet, .csv")


def run(spec: ValidationSpec, real: pd.DataFrame, synth: pd.DataFrame, out_dir: str | Path, *,
        label: str | None = None, use_ray: bool = False, extra: dict | None = None) -> dict:
    """Detect, localize, recommend, write the report; returns the report.json document.

    With --stream, `real` / `synth` are the reservoir samples and `extra["streaming"]` holds the
    full-data sketch statistics; row indices then refer to the reservoir sample.
    """
    from actors.validation.detector import detect
    from actors.validation.localize import localize
    from actors.validation.recommend import recommend
    from actors.validation.report import write_report

    out_dir = Path(out_dir)
    det = spec.detector if label is None else spec.detector.model_copy(update={"label": label})
    label = det.label
    if label is not None and label not in real.columns:
        raise InputError("label", f"{label!r} is not a column of the real table", ", ".join(map(str, real.columns)))
    t0 = time.perf_counter()
    if use_ray:
        from actors.validation.pool import detect_on_cluster

        report, stats = detect_on_cluster(real, synth, det, spec.workers)
    else:
        report, stats = detect(real, synth, det), {"workers": 0}
    t1 = time.perf_counter()
    loc = localize(real, synth, spec.localizer, label=label, categorical=det.categorical)
    t2 = time.perf_counter()
    recs = recommend(real, synth, report, loc, detector=det, config=spec.recommender, label=label)
    t3 = time.perf_counter()
    timing = {"detect_seconds": round(t1 - t0, 3), "localize_seconds": round(t2 - t1, 3),
              "recommend_seconds": round(t3 - t2, 3), **stats}
    return write_report(out_dir, report, loc, recs, {"name": spec.name, "label": label, "timing": timing,
                                                     **(extra or {})})


def planted_inputs(args, out_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, str | None, dict]:
    """Generate the planted pair, save it next to the report, return (real, synth, label, extra)."""
    from actors.common.storage import atomic_write_json, atomic_write_parquet
    from actors.validation.planted import plant

    spec = PlantedSpec(case=args.planted, severity=args.severity, dataset=args.dataset, n=args.n, seed=args.seed)
    pair = plant(spec)
    atomic_write_parquet(out_dir / "real.parquet", pair.real)
    atomic_write_parquet(out_dir / "synthetic.parquet", pair.synth)
    planted = {"case": spec.case, "severity": spec.severity, "dataset": spec.dataset, "n": spec.n,
               "fraction": pair.fraction, "rows": pair.rows.tolist(), "expected_dimensions": list(pair.expected)}
    atomic_write_json(out_dir / "planted.json", planted)
    return pair.real, pair.synth, pair.label, {"planted": {k: v for k, v in planted.items() if k != "rows"}}


def stream_inputs(real_path: str, synth_path: str, spec: ValidationSpec, *,
                  ray_data: bool = False) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """One pass over each file (in process, or Ray Data map_batches + merge): row samples of
    detector.max_rows rows and the full-data sketch statistics (streaming.compare)."""
    from actors.validation.streaming import compare, summarize_pair

    cfg = spec.detector
    t0 = time.perf_counter()
    real, synth = summarize_pair(real_path, synth_path, cfg, use_ray_data=ray_data)
    full = compare(real, synth, n_pcs=cfg.n_pcs)
    full.update(sample_rows=cfg.max_rows, summarize_seconds=round(time.perf_counter() - t0, 3),
                engine="ray_data" if ray_data else "in_process")
    return real.sample, synth.sample, full


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real", help="reference table (.parquet / .csv)")
    ap.add_argument("--synthetic", help="table to validate (.parquet / .csv), same columns")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--label", default=None, help="label column (confident-learning label issues)")
    ap.add_argument("--planted", default=None, help="generate the pair: a planted case (see PlantedSpec) or clean")
    ap.add_argument("--severity", default="high", choices=["low", "medium", "high"])
    ap.add_argument("--n", type=int, default=None, help="planted: rows per side (Gaussian copula); default halves")
    ap.add_argument("--dataset", default="breast_cancer", choices=["breast_cancer", "wine", "diabetes", "digits"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config", default=None, help="validation YAML (configs/validation/*.yaml)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="e.g. detector.n_null=99")
    ap.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS or embedded)")
    ap.add_argument("--no-ray", action="store_true", help="run every dimension in this process")
    ap.add_argument("--stream", action="store_true",
                    help="large files: one pass with KLL sketches + reservoir samples of detector.max_rows rows")
    ap.add_argument("--ray-data", action="store_true",
                    help="with --stream: build the sketches with Ray Data (read_parquet/read_csv + map_batches)")
    args = ap.parse_args(argv)
    out_dir = Path(args.out)
    try:
        spec = load_spec(args.config, cli.parse_set(args.set))
        out_dir.mkdir(parents=True, exist_ok=True)
        if args.planted:
            real, synth, label, extra = planted_inputs(args, out_dir)
            label = args.label or label
        else:
            if not (args.real and args.synthetic):
                raise InputError("real", "--real and --synthetic are required without --planted", "two table paths")
            label, extra = args.label, {"real": args.real, "synthetic": args.synthetic}
            if args.stream:
                if args.ray_data and not args.no_ray:
                    from cluster import connect

                    connect(args.address)
                real, synth, extra["streaming"] = stream_inputs(args.real, args.synthetic, spec,
                                                                ray_data=args.ray_data and not args.no_ray)
            else:
                real, synth = load_table(args.real, "real"), load_table(args.synthetic, "synthetic")
        if not args.no_ray:
            from cluster import connect

            connect(args.address)
        doc = run(spec, real, synth, out_dir, label=label, use_ray=not args.no_ray, extra=extra)
    except (InputError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = {"out_dir": str(out_dir), "collapsed": doc["collapsed"],
               "flagged": [k for k, d in doc["dimensions"].items() if d["flagged"]],
               "flagged_rows": len(doc["flagged_rows"]),
               "top_recommendation": doc["recommendations"][0]["fix"] if doc["recommendations"] else None,
               "timing": doc["timing"]}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
