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
from pathlib import Path

import numpy as np
import yaml

from actors.common.errors import InputError


def load_config(path: str | None):
    from actors.validation.cascade import CascadeConfig
    from actors.validation.config import validated

    raw = yaml.safe_load(Path(path).read_text()) if path else {}
    return validated(CascadeConfig, raw or {})


def train(args) -> dict:
    from actors.validation.cascade import cascade_label_issues, train_cascade
    from actors.validation.localize import precision_at_k

    out = Path(args.out)
    cfg = load_config(args.config)
    planted = None
    if args.planted:
        from actors.validation.planted import plant

        planted = plant(case=args.planted, severity=args.severity, dataset=args.dataset, seed=args.seed)
        real, synth, label = planted.real, planted.synth, args.label or planted.label
        if label is None:
            raise InputError("label", f"{args.dataset} has no categorical label; pass --label", "a column")
    else:
        from jobs.validate import load_table

        if not (args.real and args.synthetic and args.label):
            raise InputError("real", "--real, --synthetic and --label are required without --planted", "paths, column")
        real, synth, label = load_table(args.real, "real"), load_table(args.synthetic, "synthetic"), args.label
    if not args.no_ray:
        from cluster import connect

        connect(args.address)
    t0 = time.perf_counter()
    res = train_cascade(real, synth, label, cfg, out_dir=out,
                        on_event=lambda e: print(json.dumps(e), flush=True))
    doc = {"wall_seconds": round(time.perf_counter() - t0, 3), **res.to_json()}
    if res.labels is not None:
        score, issues, reasons, suggested = cascade_label_issues(res)
        rows = [{"index": int(i), "score": round(float(score[i]), 6), "reason": reasons[i],
                 "suggested": suggested[int(i)]} for i in np.flatnonzero(issues)]
        issue_doc = {"label_issues": sorted(rows, key=lambda r: -r["score"])}
        if planted is not None and len(planted.rows):
            issue_doc["planted"] = len(planted.rows)
            issue_doc["precision_at_k"] = precision_at_k(score, planted.rows)
            doc["precision_at_k"] = issue_doc["precision_at_k"]
        (out / "label_issues.json").write_text(json.dumps(issue_doc, indent=1))
        doc["label_issues"] = len(rows)
    return doc


def signatures(args) -> dict:
    from actors.validation.planted import CASES
    from actors.validation.signatures import planted_fingerprint, seed_library

    cases = ["clean", *CASES]
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="climb the cascade on a table pair")
    tr.add_argument("--real")
    tr.add_argument("--synthetic")
    tr.add_argument("--label", default=None)
    tr.add_argument("--planted", default=None, help="generate the pair with this planted case (or clean)")
    tr.add_argument("--severity", default="high", choices=["low", "medium", "high"])
    tr.add_argument("--dataset", default="breast_cancer", choices=["breast_cancer", "wine", "diabetes", "digits"])
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--config", default=None, help="configs/validation/cascade*.yaml")
    tr.add_argument("--address", default=None)
    tr.add_argument("--no-ray", action="store_true", help="run every rung in this process")
    tr.add_argument("--out", required=True)
    sg = sub.add_parser("signatures", help="seed a signature library and check it on fresh planted pairs")
    sg.add_argument("--out", required=True)
    sg.add_argument("--datasets", nargs="+", default=["breast_cancer", "wine"])
    sg.add_argument("--severities", nargs="+", default=["medium", "high"])
    sg.add_argument("--query-seed", type=int, default=11)
    args = ap.parse_args(argv)
    try:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        doc = train(args) if args.command == "train" else signatures(args)
    except (InputError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
