"""Validation benchmark: detection rate at the calibrated level per planted case x severity x n,
false-positive rate on clean controls, localization precision@k, and DetectCollapse throughput.

    python -m jobs.validation_bench --out runs/val_bench [--reps 5] [--sizes halves,1000] [--throughput 1000000x50]

Writes DIR/detection.csv (one row per case, severity, n: detection rate of `collapsed`, rate of the
expected dimension flagged, Wilson 95% interval, median p@k for row-level cases, seconds per run),
DIR/throughput.json and prints both tables. In-process (no Ray): the per-dimension pool only
spreads the same work over workers.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

ROW_KIND = {"memorised": "memorised", "label_noise": "label_issue", "outliers": "outlier"}


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def detection_table(cases: list[str], severities: list[str], sizes: list[int | None], reps: int,
                    dataset: str, detector: dict) -> pd.DataFrame:
    from actors.validation.detector import detect
    from actors.validation.localize import localize, precision_at_k
    from actors.validation.planted import plant

    rows = []
    for n in sizes:
        for case in cases:
            for sev in (["-"] if case == "clean" else severities):
                hits = dim_hits = 0
                pk, secs, flagged = [], [], {}
                for r in range(reps):
                    pair = plant(case=case, severity="high" if sev == "-" else sev, dataset=dataset, n=n,
                                 seed=1000 + r)
                    t = time.perf_counter()
                    rep = detect(pair.real, pair.synth, detector, seed=r)
                    secs.append(time.perf_counter() - t)
                    hits += rep.collapsed
                    for d in rep.flagged():
                        flagged[d] = flagged.get(d, 0) + 1
                    dim_hits += any(rep.dimensions[d].flagged for d in pair.expected)
                    if case in ROW_KIND:
                        loc = localize(pair.real, pair.synth, label=pair.label)
                        pk.append(precision_at_k(loc.scores[ROW_KIND[case]], pair.rows))
                lo, hi = wilson(hits, reps)
                rows.append({"case": case, "severity": sev, "n": "halves" if n is None else n,
                             "collapsed_rate": hits / reps, "ci_low": round(float(lo), 3), "ci_high": round(float(hi), 3),
                             "expected_dim_rate": dim_hits / reps if case != "clean" else None,
                             "precision_at_k": float(np.median(pk)) if pk else None,
                             "seconds_per_run": round(float(np.median(secs)), 2),
                             "flagged": " ".join(f"{k}:{v}" for k, v in sorted(flagged.items()))})
                print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def throughput(n: int, d: int, detector: dict) -> dict:
    """DetectCollapse wall / CPU time per dimension and peak Python heap on n x d tables (d-2 numeric +
    2 categorical columns, synthetic shifted by 0.02 sd). Each side is subsampled to max_rows first."""
    from actors.validation.config import DetectorConfig
    from actors.validation.detector import combine, prepare, run_dimension

    rng = np.random.default_rng(0)
    A = rng.standard_normal((d - 2, d - 2)) / np.sqrt(d)

    def table(shift: float) -> pd.DataFrame:
        X = rng.standard_normal((n, d - 2)) @ A + shift
        df = pd.DataFrame(X, columns=[f"x{i}" for i in range(d - 2)])
        df["c0"] = rng.choice(["a", "b", "c", "d"], size=n)
        df["c1"] = np.where(X[:, 0] > 0, "pos", "neg")
        return df

    real, synth = table(0.0), table(0.02)
    cfg = DetectorConfig(**detector)
    tracemalloc.start()
    t, c = time.perf_counter(), time.process_time()
    pooled = prepare(real, synth, cfg)
    per_dim = {"prepare": {"seconds": round(time.perf_counter() - t, 2), "cpu_seconds": round(time.process_time() - c, 2)}}
    results = {}
    for name in cfg.dimensions:
        t1, c1 = time.perf_counter(), time.process_time()
        results[name] = run_dimension(name, pooled, cfg)
        per_dim[name] = {"seconds": round(time.perf_counter() - t1, 2), "cpu_seconds": round(time.process_time() - c1, 2)}
    rep = combine(results, cfg, pooled.n_real, pooled.n_synth)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"rows": n, "columns": d, "seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
            "peak_python_heap_mb": round(peak / 2**20, 1), "collapsed": rep.collapsed, "flagged": rep.flagged(),
            "rows_tested_per_side": pooled.n_real, "detector": cfg.model_dump(include={"n_null", "max_rows",
                                                                                    "classifier"}),
            "per_dimension": per_dim}


def main(argv: list[str] | None = None) -> int:
    from actors.validation.planted import CASES

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--dataset", default="breast_cancer")
    ap.add_argument("--cases", default="clean," + ",".join(sorted(CASES)))
    ap.add_argument("--severities", default="low,medium,high")
    ap.add_argument("--sizes", default="halves", help="comma list of rows per side; 'halves' = split the data set")
    ap.add_argument("--throughput", default=None, help="e.g. 1000000x50 (rows x columns); skipped if omitted")
    ap.add_argument("--classifier", default="logistic", choices=["logistic", "hgb"])
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    detector = {"classifier": args.classifier}
    sizes = [None if s == "halves" else int(s) for s in args.sizes.split(",")]
    if args.reps > 0:
        table = detection_table(args.cases.split(","), args.severities.split(","), sizes, args.reps,
                                args.dataset, detector)
        table.to_csv(out / "detection.csv", index=False)
        print(table.to_string(index=False))
    if args.throughput:
        n, d = (int(v) for v in args.throughput.lower().split("x"))
        res = throughput(n, d, detector)
        (out / "throughput.json").write_text(json.dumps(res, indent=2))
        print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
