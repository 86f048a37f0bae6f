"""Scale benchmark of streaming DetectCollapse: files of n rows x d columns, one pass, sketches + tests.

    python -m jobs.bench.validation_scale --out runs/val_scale                      # 1M x 50, in process
    python -m jobs.bench.validation_scale --out runs/val_scale --engine ray_data     # sketches via Ray Data
    python -m jobs.bench.validation_scale --out runs/val_scale --memory-rows 10000000   # + peak RSS at 10M rows
    python -m jobs.bench.validation_scale --out runs/val_scale --ann-rows 1000000   # + ANN vs exact DCR recall

Generates real / synthetic Parquet files chunk-wise under --data-dir (d-2 correlated normal columns
+ 2 categorical; the synthetic table shifted by 0.02 sd in every numeric column and its first three
columns shrunk to 0.8 sd), then times: the one-pass summaries of both files (`streaming.summarize`
or Ray Data), the full-data comparison, and the calibrated detector on the row samples (every
dimension, default settings; as tasks on the validation pool with --pool). Peak memory of a
summary-only pass over --memory-rows rows is measured in a child process (ru_maxrss), next to a child
that only imports the same modules. Writes DIR/scale.json and DIR/scale.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from jobs.bench.lib import child_peak_rss, md_table, rusage


def write_table(path: Path, n: int, d: int, *, seed: int, shift: float = 0.0, shrink: float = 1.0,
                chunk: int = 250_000) -> Path:
    """n x d Parquet file written chunk-wise (memory O(chunk)); skipped if it already exists."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.exists():
        return path
    mix = np.random.default_rng(12345).standard_normal((d - 2, d - 2)) / np.sqrt(d)   # same correlation both sides
    rng = np.random.default_rng(seed)
    tmp = path.with_suffix(".tmp")
    writer = None
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        X = rng.standard_normal((m, d - 2)) @ mix
        X[:, :3] *= shrink
        X += shift * np.sqrt((mix ** 2).sum(axis=0))
        df = pd.DataFrame(X, columns=[f"x{i}" for i in range(d - 2)])
        df["c0"] = rng.choice(["a", "b", "c", "d"], size=m)
        df["c1"] = np.where(X[:, 0] > 0, "pos", "neg")
        t = pa.Table.from_pandas(df, preserve_index=False)
        writer = writer or pq.ParquetWriter(tmp, t.schema)
        writer.write_table(t)
    writer.close()
    tmp.rename(path)
    return path


def detect_collapse(real: Path, synth: Path, *, engine: str, pool: bool, detector: dict) -> dict:
    """Time the streaming DetectCollapse: summaries, comparison, calibrated tests on the samples."""
    from actors.validation.config import DetectorConfig
    from actors.validation.detector import detect
    from actors.validation.streaming import compare, summarize_pair

    cfg = DetectorConfig(**detector)
    out: dict = {"engine": engine, "pool": pool, "detector": cfg.model_dump(include={"n_null", "max_rows", "classifier"})}
    cpu0, _ = rusage()
    t0 = time.perf_counter()
    if engine == "ray_data":
        from actors.validation.raydata import summarize_ray as summarizer
    else:
        summarizer = None
    r, s = summarize_pair(real, synth, cfg, summarizer=summarizer)
    t1 = time.perf_counter()
    full = compare(r, s, n_pcs=cfg.n_pcs)
    t2 = time.perf_counter()
    if pool:
        from actors.validation.pool import detect_on_cluster

        rep, _ = detect_on_cluster(r.sample, s.sample, cfg)
    else:
        rep = detect(r.sample, s.sample, cfg)
    t3 = time.perf_counter()
    cpu1, rss = rusage()
    worst = sorted(((c, v["ks"]) for c, v in full["columns"].items() if "ks" in v), key=lambda x: -x[1])[:3]
    out.update(rows=r.n, summarize_seconds=round(t1 - t0, 2), compare_seconds=round(t2 - t1, 3),
               detect_seconds=round(t3 - t2, 2), total_seconds=round(t3 - t0, 2),
               driver_cpu_seconds=round(cpu1 - cpu0, 2), driver_peak_rss_mb=round(rss, 1),
               collapsed=rep.collapsed, flagged=rep.flagged(), full_data_top_ks=worst,
               full_data_correlation_gap=full.get("correlation", {}).get("max_abs_gap"),
               ks_error_bound=full["ks_error_bound"])
    return out


def peak_memory(path: Path, batch_rows: int) -> dict:
    """Peak RSS (VmHWM: ru_maxrss would count the parent's pages before exec) of a one-pass summary of
    `path` in a fresh process, and of a process that only imports."""
    pre = "from actors.validation.streaming import summarize"
    base = child_peak_rss("import datasketches, pyarrow.parquet, scipy.stats", pre)
    run = child_peak_rss(f"s = summarize({str(path)!r}, batch_rows={batch_rows}); assert s.n > 0", pre)
    return {"import_only_rss_mb": round(base[0], 1), "summary_peak_rss_mb": round(run[0], 1),
            "increment_mb": round(run[0] - base[0], 1), "seconds": round(run[1], 1), "cpu_seconds": round(run[2], 1),
            "batch_rows": batch_rows}


def ann_recall(n: int, d: int, queries: int, seed: int = 0, methods: tuple[str, ...] = ("ivf", "hnsw")) -> dict:
    """Recall@1 of the approximate nearest-neighbour index vs exact FAISS on n reference rows."""
    from actors.validation.ann import nearest, recall_at_1

    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((d, d)) / np.sqrt(d)
    ref = (rng.standard_normal((n, d)) @ mix).astype(np.float32)
    q = np.r_[ref[rng.choice(n, queries // 2, replace=False)] + 0.01 * rng.standard_normal((queries // 2, d)),
              rng.standard_normal((queries - queries // 2, d)) @ mix].astype(np.float32)
    t = time.perf_counter()
    d_ex, i_ex = nearest(ref, q, method="exact")
    t_ex = time.perf_counter() - t
    out = {"reference_rows": n, "dims": d, "queries": queries, "exact_seconds": round(t_ex, 2), "methods": {}}
    for method in methods:
        t = time.perf_counter()
        d_ap, i_ap = nearest(ref, q, method=method)
        half = queries // 2
        out["methods"][method] = {"seconds": round(time.perf_counter() - t, 2),
                                  "recall_at_1": recall_at_1(d_ex, d_ap),
                                  "recall_at_1_near_copies": recall_at_1(d_ex[:half], d_ap[:half]),
                                  "recall_at_1_fresh_rows": recall_at_1(d_ex[half:], d_ap[half:]),
                                  "max_distance_ratio": float(np.max(d_ap / np.maximum(d_ex, 1e-12)))}
    return out


def localize_at_scale(n: int, d: int, *, copies: float = 0.01, seed: int = 0) -> dict:
    """localize() on n x d tables in memory (ANN above the threshold) with a share of the synthetic
    rows exact / jittered copies of real rows: time and precision@k of the memorised rows."""
    from actors.validation.localize import localize, precision_at_k

    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((d, d)) / np.sqrt(d)
    real = pd.DataFrame(rng.standard_normal((n, d)) @ mix, columns=[f"x{i}" for i in range(d)])
    synth = pd.DataFrame(rng.standard_normal((n, d)) @ mix, columns=real.columns)
    planted = np.sort(rng.choice(n, int(copies * n), replace=False))
    src = rng.choice(n, len(planted), replace=False)
    synth.iloc[planted] = real.iloc[src].to_numpy() + np.where(
        np.arange(len(planted))[:, None] % 2 == 0, 0.0, 0.01 * rng.standard_normal((len(planted), d)))
    cpu0, _ = rusage()
    t = time.perf_counter()
    loc = localize(real, synth)
    wall = time.perf_counter() - t
    cpu1, rss = rusage()
    flagged = loc.flagged["memorised"]
    return {"rows": n, "cols": d, "planted_copies": len(planted), "seconds": round(wall, 1),
            "cpu_seconds": round(cpu1 - cpu0, 1), "peak_rss_mb": round(rss, 1),
            "precision_at_k": precision_at_k(loc.scores["memorised"], planted),
            "flagged_memorised": int(len(flagged)),
            "flagged_share_planted": float(np.isin(flagged, planted).mean()) if len(flagged) else None}


def markdown(doc: dict) -> str:
    """DIR/scale.md: one `step.key | value` line per measured number."""
    return md_table(["step", "value"], [(f"{key}.{k}", v) for key in ("detect_collapse", "memory", "ann", "localize")
                                        for k, v in (doc.get(key) or {}).items()]) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--data-dir", default="/tmp/attractor_val_scale")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--cols", type=int, default=50)
    ap.add_argument("--engine", choices=["in_process", "ray_data"], default="in_process")
    ap.add_argument("--pool", action="store_true", help="detector dimensions as tasks on the validation pool")
    ap.add_argument("--n-null", type=int, default=199)
    ap.add_argument("--memory-rows", type=int, default=0, help="also measure peak RSS of a pass over this many rows")
    ap.add_argument("--ann-rows", type=int, default=0, help="also measure ANN recall vs exact at this many rows")
    ap.add_argument("--localize-rows", type=int, default=0, help="also time localize() at this many rows a side")
    ap.add_argument("--ann-methods", nargs="*", default=["ivf", "hnsw"], choices=["ivf", "hnsw"])
    ap.add_argument("--skip-detect", action="store_true")
    args = ap.parse_args(argv)
    from actors.common.storage import atomic_write_json

    data, out = Path(args.data_dir), Path(args.out)
    data.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    doc: dict = {"machine": "see report", "rows": args.rows, "cols": args.cols}
    if not args.skip_detect:
        t = time.perf_counter()
        real = write_table(data / f"real_{args.rows}x{args.cols}.parquet", args.rows, args.cols, seed=1)
        synth = write_table(data / f"synth_{args.rows}x{args.cols}.parquet", args.rows, args.cols, seed=2,
                            shift=0.02, shrink=0.8)
        doc["generate_seconds"] = round(time.perf_counter() - t, 1)
        if args.engine == "ray_data" or args.pool:
            from cluster import connect

            connect(None)
        doc["detect_collapse"] = detect_collapse(real, synth, engine=args.engine, pool=args.pool,
                                                 detector={"n_null": args.n_null})
        print(json.dumps(doc["detect_collapse"], indent=1), flush=True)
    if args.memory_rows:
        big = write_table(data / f"real_{args.memory_rows}x{args.cols}.parquet", args.memory_rows, args.cols, seed=3)
        doc["memory"] = {"rows": args.memory_rows, **peak_memory(big, 100_000)}
        print(json.dumps(doc["memory"], indent=1), flush=True)
    if args.ann_rows:
        doc["ann"] = ann_recall(args.ann_rows, args.cols, 2_000, methods=args.ann_methods)
        print(json.dumps(doc["ann"], indent=1), flush=True)
    if args.localize_rows:
        doc["localize"] = localize_at_scale(args.localize_rows, args.cols)
        print(json.dumps(doc["localize"], indent=1), flush=True)
    atomic_write_json(out / "scale.json", doc)
    (out / "scale.md").write_text(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
