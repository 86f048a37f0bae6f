"""Cascade trainer and signature library from the command line.

    python -m jobs.cascade train --planted label_noise --severity medium --out runs/cascade [--no-ray]
    python -m jobs.cascade train --real R.parquet --synthetic S.csv --label target --out runs/cascade
    python -m jobs.cascade signatures --out runs/signatures [--datasets wine breast_cancer]
    ray job submit --working-dir . -- python -m jobs.cascade train --planted label_noise --out DIR

train: climbs the ladder (configs/validation/cascade*.yaml; rungs as Ray tasks unless --no-ray),
prints one progress event per line, writes DIR/cascade.json, per-rung checkpoints (a rerun with the
same DIR resumes), DIR/label_issues.json (confident learning on the cascade's out-of-sample
probabilities; with --planted also precision@k of the planted rows).
signatures: seeds a library from the planted generator (case x severity x data set) in DIR, then
queries a freshly planted pair (seed --query-seed) per case at high severity and prints the top match.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import numpy as np
import pandas as pd

from actors.common.errors import InputError
from actors.common.storage import atomic_write_json
from actors.validation.cascade_config import CascadeConfig
from actors.validation.config import DatasetName, Severity
from jobs import cli


@dataclass
class TrainInputs:
    config: CascadeConfig
    real: pd.DataFrame
    synth: pd.DataFrame
    label: str
    planted_rows: np.ndarray | None   # --planted: the synthetic rows whose labels were changed


def load_train(args: argparse.Namespace) -> TrainInputs:
    """The cascade config and the table pair (planted or read), checked before Ray starts."""
    from actors.validation.data import load_table
    from actors.validation.planted import plant

    cfg = cli.load_spec(CascadeConfig, args.config)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.planted:
        pair = plant(case=args.planted, severity=args.severity, dataset=args.dataset, seed=args.seed)
        label = args.label or pair.label
        if label is None:
            raise InputError("label", f"{args.dataset} has no categorical label; pass --label", "a column")
        return TrainInputs(cfg, pair.real, pair.synth, label, pair.rows)
    if not (args.real and args.synthetic and args.label):
        raise InputError("real", "--real, --synthetic and --label are required without --planted", "paths, column")
    return TrainInputs(cfg, load_table(args.real, "real"), load_table(args.synthetic, "synthetic"), args.label, None)


def train(inp: TrainInputs, out: Path, *, use_ray: bool) -> dict:
    """Climb (rungs as Ray tasks with `use_ray`), write label_issues.json; the job's summary."""
    from actors.validation.cascade import cascade_label_issues, train_cascade
    from actors.validation.localize import precision_at_k

    fit = train_cascade
    if use_ray:
        from actors.validation.pool import train_cascade_on_cluster as fit
    t0 = time.perf_counter()
    res = fit(inp.real, inp.synth, inp.label, inp.config, out_dir=out,
                        on_event=lambda e: print(json.dumps(e), flush=True))
    doc = {"wall_seconds": round(time.perf_counter() - t0, 3), **res.to_json()}
    if res.labels is not None:
        score, issues, reasons, suggested = cascade_label_issues(res)
        rows = [{"index": int(i), "score": round(float(score[i]), 6), "reason": reasons[i],
                 "suggested": suggested[int(i)]} for i in np.flatnonzero(issues)]
        issue_doc = {"label_issues": sorted(rows, key=lambda r: -r["score"])}
        if inp.planted_rows is not None and len(inp.planted_rows):
            issue_doc["planted"] = len(inp.planted_rows)
            issue_doc["precision_at_k"] = precision_at_k(score, inp.planted_rows)
            doc["precision_at_k"] = issue_doc["precision_at_k"]
        atomic_write_json(out / "label_issues.json", issue_doc)
        doc["label_issues"] = len(rows)
    return doc


def signatures(args: argparse.Namespace) -> dict:
    """Seed the library in --out, then match a freshly planted pair per case; the job's summary."""
    from actors.validation.planted import CASES
    from actors.validation.signatures import planted_fingerprint, seed_library

    cases = ["clean", *CASES]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    lib = seed_library(cases, severities=args.severities, datasets=args.datasets, path=args.out)
    built = time.perf_counter() - t0
    rows, hits = [], 0
    for ds in args.datasets:
        for case in cases:
            try:
                top = lib.prescreen_risk(planted_fingerprint(case, "high", ds, args.query_seed), k=2)
            except ValueError:   # no categorical column in this data set
                continue
            hits += top[0].label == case
            rows.append({"dataset": ds, "case": case, "top": top[0].label, "similarity": round(top[0].similarity, 3),
                         "second": top[1].label, "second_similarity": round(top[1].similarity, 3)})
            print(json.dumps(rows[-1]), flush=True)
    return {"entries": len(lib), "build_seconds": round(built, 1), "top1": f"{hits}/{len(rows)}", "path": args.out}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="climb the cascade on a table pair")
    tr.add_argument("--real")
    tr.add_argument("--synthetic")
    tr.add_argument("--label", default=None)
    tr.add_argument("--planted", default=None, help="generate the pair with this planted case (or clean)")
    tr.add_argument("--severity", default="high", choices=get_args(Severity))
    tr.add_argument("--dataset", default="breast_cancer", choices=get_args(DatasetName))
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--config", default=None, help="configs/validation/cascade*.yaml")
    tr.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS or an embedded cluster)")
    tr.add_argument("--no-ray", action="store_true", help="run every rung in this process")
    tr.add_argument("--out", required=True, help="output directory (reused to resume)")
    sg = sub.add_parser("signatures", help="seed a signature library and check it on fresh planted pairs")
    sg.add_argument("--out", required=True)
    sg.add_argument("--datasets", nargs="+", default=["breast_cancer", "wine"], choices=get_args(DatasetName))
    sg.add_argument("--severities", nargs="+", default=["medium", "high"], choices=get_args(Severity))
    sg.add_argument("--query-seed", type=int, default=11)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "train":
        use_ray = not args.no_ray
        return cli.run_job(lambda: load_train(args), lambda inp: train(inp, Path(args.out), use_ray=use_ray),
                           address=args.address, ray=use_ray)
    return cli.run_job(lambda: args, signatures, ray=False)


if __name__ == "__main__":
    sys.exit(main())
