"""Validation benchmark: the collapse detector side by side with Evidently, SDMetrics and Cleanlab.

    .venv-bench/bin/python -m jobs.bench.validation --out runs/val_bench          # the documented run
    python -m jobs.bench.validation --out DIR --sizes 1000 --reps 2 --baselines none   # detector only
    python -m jobs.bench.validation --out DIR --reps 0 --throughput 1000000x50         # throughput only

Per planted case x severity x n (Gaussian-copula tables of n rows a side, planted.plant):
- detection rate with a Wilson 95 % interval of: our `collapsed` (BH at alpha = 0.05 over eight
  permutation-calibrated dimensions), Evidently's dataset-drift decision at its defaults, and the
  SDMetrics QualityReport score below the threshold that gives 5 % false positives on the clean
  controls of the same n (a score is not a decision: the threshold is its calibration);
- the false-positive rate of each on those clean controls (real vs real, same generator);
- the smallest severity each tool detects in >= 95 % of runs;
- row localization (memorised, label noise, outliers): precision@k (k = rows planted) and AUPRC
  (sklearn average_precision_score) of our localizer, against Cleanlab find_label_issues (label
  noise) and SDMetrics per-row DCR (memorised, n <= --dcr-max-n: its pandas pairwise distance is
  quadratic);
- seconds per call (rows/s = 2n / s), and peak traced Python heap (tracemalloc, numpy included,
  FAISS / C++ buffers not) on the first clean control of each n, whose times are then left out.

The baselines live in the `bench` extra, which pins pandas < 3: run the job from `.venv-bench`
(README, "Validation benchmark"). Without them the baseline columns stay empty.
Writes DIR/runs.csv (one row per run), DIR/detection.csv (aggregated), DIR/smallest.csv,
DIR/table.md (the docs table), DIR/meta.json (versions, grid) and prints the tables.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jobs.bench.lib import dist_versions, localization_scores, md_table, measure, subset_auprc, wilson

ROW_KIND = {"memorised": "memorised", "label_noise": "label_issue", "outliers": "outlier"}
SEVERITIES = ("low", "medium", "high")
TARGET_RATE = 0.95      # "detected" = detected in at least this share of runs
FPR = 0.05              # the false-positive level SDMetrics' threshold is calibrated to


@dataclass(frozen=True)
class Unit:
    """One benchmark run: a planted pair and the tools run on it."""

    case: str
    severity: str           # "-" for clean controls
    n: int
    rep: int
    dataset: str = "breast_cancer"
    baselines: tuple[str, ...] = ()
    trace: bool = False     # tracemalloc peak memory (times of this run are not used)
    localize: bool = True
    dcr_max_n: int = 1000
    classifier: str = "hgb"


def run_unit(u: Unit) -> dict:
    """Every tool on one planted pair; a flat record for runs.csv."""
    from actors.validation.detector import detect
    from actors.validation.planted import plant

    pair = plant(case=u.case, severity="high" if u.severity == "-" else u.severity, dataset=u.dataset, n=u.n,
                 seed=1000 + u.rep)
    rec: dict[str, Any] = {"case": u.case, "severity": u.severity, "n": u.n, "rep": u.rep, "traced": u.trace}
    rep, sec, peak, cpu = measure(lambda: detect(pair.real, pair.synth, classifier=u.classifier, seed=u.rep),
                                  u.trace)
    rec.update(ours=rep.collapsed, ours_expected=any(rep.dimensions[d].flagged for d in pair.expected),
               ours_flagged=" ".join(rep.flagged()), ours_s=sec, ours_mb=peak, ours_cpu_s=cpu)
    if u.case in ROW_KIND and u.localize:
        from actors.validation.localize import localize

        loc, sec, _, _ = measure(lambda: localize(pair.real, pair.synth, label=pair.label), False)
        s = loc.scores[ROW_KIND[u.case]]
        rec["ours_pk"], rec["ours_auprc"] = localization_scores(s, pair.rows)
        rec["localize_s"] = sec
        if u.case == "memorised":   # planted.memorised: even positions exact copies, odd ones jittered
            rec["ours_auprc_exact"] = subset_auprc(s, pair.rows, pair.rows[0::2])
            rec["ours_auprc_jittered"] = subset_auprc(s, pair.rows, pair.rows[1::2])
    _run_baselines(u, pair, rec)
    return rec


def _run_baselines(u: Unit, pair, rec: dict) -> None:
    from jobs.bench import validation_baselines as bl

    if "evidently" in u.baselines:
        ev, sec, peak, cpu = measure(lambda: bl.evidently_drift(pair.real, pair.synth), u.trace)
        rec.update(evidently=ev["drift"], evidently_share=ev["share"], evidently_s=sec, evidently_mb=peak,
                   evidently_cpu_s=cpu)
    if "sdmetrics" in u.baselines:
        q, sec, peak, cpu = measure(lambda: bl.sdmetrics_quality(pair.real, pair.synth), u.trace)
        rec.update(sdmetrics_score=q, sdmetrics_s=sec, sdmetrics_mb=peak, sdmetrics_cpu_s=cpu)
        if u.case == "memorised" and u.localize and u.n <= u.dcr_max_n:
            d, sec, _, _ = measure(lambda: bl.sdmetrics_dcr(pair.real, pair.synth), False)
            rec["base_pk"], rec["base_auprc"] = localization_scores(-d, pair.rows)
            rec["base_auprc_exact"] = subset_auprc(-d, pair.rows, pair.rows[0::2])
            rec["base_auprc_jittered"] = subset_auprc(-d, pair.rows, pair.rows[1::2])
            rec.update(base_tool="sdmetrics_dcr", base_s=sec)
    if "cleanlab" in u.baselines and u.case == "label_noise" and u.localize:
        s, sec, _, _ = measure(lambda: bl.cleanlab_label_issues(pair.synth, pair.label), False)
        rec["base_pk"], rec["base_auprc"] = localization_scores(s, pair.rows)
        rec.update(base_tool="cleanlab_find_label_issues", base_s=sec)


# ---- aggregation ---------------------------------------------------------------------------------

def sdmetrics_thresholds(runs: pd.DataFrame) -> dict[int, float]:
    """Per n: the QualityReport score below which at most FPR (5 %) of the clean controls fall (the
    lower empirical quantile: with fewer than 20 controls, the lowest clean score - no clean control
    is then below it, so few controls cannot inflate SDMetrics' false-positive rate)."""
    if "sdmetrics_score" not in runs:
        return {}
    clean = runs[(runs.case == "clean") & runs.sdmetrics_score.notna()]
    return {int(n): float(np.quantile(g.sdmetrics_score, FPR, method="lower")) for n, g in clean.groupby("n")}


def _rate(flags: pd.Series) -> tuple[float, float, float, int]:
    flags = flags.dropna().astype(bool)
    k, m = int(flags.sum()), len(flags)
    lo, hi = wilson(k, m)
    return (k / m if m else np.nan), lo, hi, m


def _med(g: pd.DataFrame, col: str, untraced: bool = True) -> float:
    if col not in g:
        return np.nan
    v = g.loc[~g.traced, col] if untraced else g[col]
    v = v.dropna()
    return float(v.median()) if len(v) else np.nan


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (case, severity, n): rates with Wilson intervals, localization, time, memory, ratios."""
    runs = runs.copy()
    thr = sdmetrics_thresholds(runs)
    if thr:
        runs["sdmetrics"] = [s < thr.get(int(n), np.nan) if pd.notna(s) else np.nan
                             for s, n in zip(runs.sdmetrics_score, runs.n)]
    order = {c: i for i, c in enumerate(["clean", *sorted(set(runs.case) - {"clean"})])}
    rows = []
    for (case, sev, n), g in runs.groupby(["case", "severity", "n"], sort=False):
        r: dict[str, Any] = {"case": case, "severity": sev, "n": int(n), "runs": len(g)}
        for tool in ("ours", "evidently", "sdmetrics"):
            if tool in g and g[tool].notna().any():
                rate, lo, hi, _ = _rate(g[tool])
                r.update({f"{tool}_rate": rate, f"{tool}_ci_low": round(lo, 3), f"{tool}_ci_high": round(hi, 3)})
        r["ours_expected_dim_rate"] = float(g.ours_expected.mean()) if case != "clean" else np.nan
        r["sdmetrics_threshold"] = thr.get(int(n), np.nan)
        for col in ("ours_pk", "ours_auprc", "ours_auprc_exact", "ours_auprc_jittered", "base_pk", "base_auprc",
                    "base_auprc_exact", "base_auprc_jittered"):
            r[col] = _med(g, col, untraced=False)
        r["base_tool"] = g.base_tool.dropna().iloc[0] if "base_tool" in g and g.base_tool.notna().any() else ""
        r["auprc_ratio"] = r["ours_auprc"] / r["base_auprc"] if r["base_auprc"] > 0 else np.nan
        for tool in ("ours", "evidently", "sdmetrics", "localize", "base"):
            r[f"{tool}_s"] = _med(g, f"{tool}_s")
        for tool in ("ours", "evidently", "sdmetrics"):
            r[f"{tool}_cpu_s"] = _med(g, f"{tool}_cpu_s")
        r["ours_rows_per_s"] = 2 * n / r["ours_s"] if r["ours_s"] > 0 else np.nan
        r["evidently_time_ratio"] = r["evidently_s"] / r["ours_s"]
        r["sdmetrics_time_ratio"] = r["sdmetrics_s"] / r["ours_s"]
        for tool in ("ours", "evidently", "sdmetrics"):
            r[f"{tool}_mb"] = _med(g, f"{tool}_mb", untraced=False)
        r["flagged"] = _flag_counts(g.ours_flagged)
        rows.append(r)
    out = pd.DataFrame(rows)
    out["_o"] = out.case.map(order)
    out["_s"] = out.severity.map({"-": -1, **{s: i for i, s in enumerate(SEVERITIES)}})
    return out.sort_values(["n", "_o", "_s"]).drop(columns=["_o", "_s"]).reset_index(drop=True)


def _flag_counts(col: pd.Series) -> str:
    counts: dict[str, int] = {}
    for s in col.fillna(""):
        for d in str(s).split():
            counts[d] = counts.get(d, 0) + 1
    return " ".join(f"{k}:{v}" for k, v in sorted(counts.items()))


def smallest_severity(table: pd.DataFrame) -> pd.DataFrame:
    """Per case and n: the smallest severity each tool detects in >= 95 % of its runs ("none")."""
    rows = []
    for (case, n), g in table[table.case != "clean"].groupby(["case", "n"], sort=False):
        r = {"case": case, "n": int(n), "severities_run": ",".join(g.severity)}
        for tool in ("ours", "evidently", "sdmetrics"):
            col = f"{tool}_rate"
            if col in g and g[col].notna().any():
                hit = [s for s in SEVERITIES if ((g.severity == s) & (g[col] >= TARGET_RATE)).any()]
                r[tool] = hit[0] if hit else "none"
        rows.append(r)
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    """The docs table: rates [Wilson 95 %], localization AUPRC against the baseline, seconds, memory."""
    def rate(r, tool):
        v = r.get(f"{tool}_rate")
        return "" if v is None or pd.isna(v) else f"{v:.2f} [{r[f'{tool}_ci_low']:.2f}, {r[f'{tool}_ci_high']:.2f}]"

    def f(v, fmt="{:.2f}"):
        return "" if v is None or pd.isna(v) else fmt.format(v)

    header = ["case", "sev", "n", "runs", "ours: collapsed [95% CI]", "Evidently drift", "SDMetrics < 5%-FPR thr",
              "ours AUPRC (p@k)", "baseline AUPRC (p@k)", "AUPRC ratio", "wall s ours / Evid / SDM",
              "CPU s ours / Evid / SDM", "MB ours / Evid / SDM"]
    lines = []
    for _, r in table.iterrows():
        base = f"{f(r.base_auprc)} ({f(r.base_pk)}) {r.base_tool}" if pd.notna(r.base_auprc) else ""
        ours_loc = f"{f(r.ours_auprc)} ({f(r.ours_pk)})" if pd.notna(r.ours_auprc) else ""
        if r.case == "memorised" and pd.notna(r.ours_auprc_exact):
            ours_loc += f"; exact {f(r.ours_auprc_exact)}, jittered {f(r.ours_auprc_jittered)}"
            if pd.notna(r.base_auprc_exact):
                base += f"; exact {f(r.base_auprc_exact)}, jittered {f(r.base_auprc_jittered)}"
        secs = " / ".join(f(r[f"{t}_s"], "{:.1f}") or "-" for t in ("ours", "evidently", "sdmetrics"))
        cpu = " / ".join(f(r.get(f"{t}_cpu_s"), "{:.1f}") or "-" for t in ("ours", "evidently", "sdmetrics"))
        mem = " / ".join(f(r[f"{t}_mb"], "{:.0f}") or "-" for t in ("ours", "evidently", "sdmetrics"))
        lines.append([r.case, r.severity, f"{r.n:,}", r.runs, rate(r, "ours"), rate(r, "evidently"),
                      rate(r, "sdmetrics"), ours_loc, base, f(r.auprc_ratio), secs, cpu, mem])
    return md_table(header, lines) + "\n"


def simple_markdown(df: pd.DataFrame) -> str:
    """A plain markdown table of a small frame (no tabulate dependency)."""
    return md_table([str(c) for c in df.columns], df.itertuples(index=False)) + "\n"


# ---- the grid ------------------------------------------------------------------------------------

def build_units(args: argparse.Namespace, baselines: tuple[str, ...]) -> list[Unit]:
    """Planted cases x severities x sizes x reps (medium: --reps-medium), clean controls per size, a
    subset at --subset-size, and detector-only clean controls at --fpr-sizes."""
    common = {"dataset": args.dataset, "dcr_max_n": args.dcr_max_n, "classifier": args.classifier}
    cases = [c for c in args.cases.split(",") if c and c != "clean"]
    units: list[Unit] = []
    sizes = [int(s) for s in args.sizes.split(",") if s]
    for n in sizes:
        units += [Unit("clean", "-", n, r, baselines=baselines, trace=r == 0 and args.memory, **common)
                  for r in range(args.first_rep, args.first_rep + args.clean_reps)]
        for case in cases:
            for sev in args.severities.split(","):
                reps = args.reps_medium if sev == "medium" and args.reps_medium is not None else args.reps
                units += [Unit(case, sev, n, r, baselines=baselines, **common)
                          for r in range(args.first_rep, args.first_rep + reps)]
    if args.subset_size:
        for case in args.subset_cases.split(","):
            sev = "-" if case == "clean" else "medium"
            units += [Unit(case, sev, args.subset_size, r, baselines=baselines, localize=False, **common)
                      for r in range(args.subset_reps)]
    for n in [int(s) for s in args.fpr_sizes.split(",") if s]:
        units += [Unit("clean", "-", n, r, **common) for r in range(args.fpr_reps)]
    return units


def run_units(units: list[Unit], workers: int, out: Path) -> pd.DataFrame:
    """Run the units (in `workers` processes), appending each record to DIR/runs.jsonl as it lands."""
    log = out / "runs.jsonl"
    log.write_text("")
    records = []
    if workers <= 1:
        results = map(run_unit, units)
        for rec in results:
            records.append(_log(log, rec))
    else:
        with ProcessPoolExecutor(max_workers=workers) as ex:
            for rec in ex.map(run_unit, units):
                records.append(_log(log, rec))
    return pd.DataFrame(records)


def _log(path: Path, rec: dict) -> dict:
    with path.open("a") as fh:
        fh.write(json.dumps(rec, default=float) + "\n")
    short = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in rec.items()}
    print(short, flush=True)
    return rec


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
    per_dim: dict[str, dict[str, float]] = {}

    def timed(key: str, fn):
        out, sec, _, cpu = measure(fn, False)
        per_dim[key] = {"seconds": round(sec, 2), "cpu_seconds": round(cpu, 2)}
        return out

    def run():
        pooled = timed("prepare", lambda: prepare(real, synth, cfg))
        results = {name: timed(name, lambda name=name: run_dimension(name, pooled, cfg)) for name in cfg.dimensions}
        return pooled, combine(results, cfg, pooled.n_real, pooled.n_synth)

    (pooled, rep), wall, peak, cpu = measure(run, True)
    return {"rows": n, "columns": d, "seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
            "peak_python_heap_mb": round(peak, 1), "collapsed": rep.collapsed, "flagged": rep.flagged(),
            "rows_tested_per_side": pooled.n_real, "detector": cfg.model_dump(include={"n_null", "max_rows",
                                                                                    "classifier"}),
            "per_dimension": per_dim}


def _versions() -> dict[str, str | None]:
    from jobs.bench.validation_baselines import versions

    return {"python": platform.python_version(),
            **dist_versions(("numpy", "pandas", "scikit-learn", "scipy", "faiss-cpu")), **versions()}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from actors.validation.planted import CASES

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--dataset", default="breast_cancer")
    ap.add_argument("--cases", default=",".join(sorted(CASES)), help="planted cases (clean controls always run)")
    ap.add_argument("--severities", default="low,medium,high")
    ap.add_argument("--sizes", default="1000,10000", help="rows per side (Gaussian copula of --dataset)")
    ap.add_argument("--reps", type=int, default=1, help="runs per case x severity x size")
    ap.add_argument("--reps-medium", type=int, default=3, help="runs at medium severity (the issue's target)")
    ap.add_argument("--clean-reps", type=int, default=10, help="clean controls per size (FPR, SDMetrics threshold)")
    ap.add_argument("--subset-size", type=int, default=100_000)
    ap.add_argument("--subset-cases", default="clean,variance_shrinkage,correlation_breakage,category_merge")
    ap.add_argument("--subset-reps", type=int, default=1)
    ap.add_argument("--fpr-sizes", default="1000000", help="detector-only clean controls at these sizes")
    ap.add_argument("--fpr-reps", type=int, default=2)
    ap.add_argument("--baselines", default="auto", help="auto (every installed one), none, or a comma list")
    ap.add_argument("--dcr-max-n", type=int, default=1000, help="largest n for SDMetrics' quadratic DCR")
    ap.add_argument("--classifier", default="hgb", choices=["logistic", "hgb"])
    ap.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True,
                    help="tracemalloc peak on the first clean control of each size")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--first-rep", type=int, default=0,
                    help="seed offset: run reps first_rep.. (extend an earlier run; concatenate runs.jsonl)")
    ap.add_argument("--throughput", default=None, help="e.g. 1000000x50 (rows x columns); skipped if omitted")
    ap.add_argument("--aggregate-only", action="store_true",
                    help="re-aggregate DIR/runs.jsonl of an earlier (e.g. interrupted) run; run nothing")
    return ap.parse_args(argv)


def write_tables(out: Path, runs: pd.DataFrame) -> None:
    """runs.csv, detection.csv, smallest.csv and table.md from the run records; print them."""
    from actors.common.storage import atomic_write_bytes

    atomic_write_bytes(out / "runs.csv", runs.to_csv(index=False).encode())
    table = aggregate(runs)
    small = smallest_severity(table)
    atomic_write_bytes(out / "detection.csv", table.to_csv(index=False).encode())
    atomic_write_bytes(out / "smallest.csv", small.to_csv(index=False).encode())
    md = markdown(table) + "\n" + simple_markdown(small)
    atomic_write_bytes(out / "table.md", md.encode())
    with pd.option_context("display.width", 250, "display.max_columns", 60):
        print(table.to_string(index=False))
        print(small.to_string(index=False))
    print(md)


def main(argv: list[str] | None = None) -> int:
    from actors.common.storage import atomic_write_json
    from jobs.bench.validation_baselines import TOOLS, versions

    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    installed = tuple(t for t, v in versions().items() if v)
    baselines = installed if args.baselines == "auto" else tuple(
        t for t in args.baselines.split(",") if t in TOOLS)
    missing = set(baselines) - set(installed)
    if missing:
        raise SystemExit(f"--baselines: {sorted(missing)} not installed (install the 'bench' extra)")
    if args.aggregate_only:
        runs = pd.read_json(out / "runs.jsonl", lines=True)
        write_tables(out, runs)
        return 0
    units = build_units(args, baselines) if args.reps > 0 or args.clean_reps > 0 else []
    meta = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "versions": _versions(),
            "args": vars(args), "units": len(units), "baselines": list(baselines)}
    atomic_write_json(out / "meta.json", meta)
    if units:
        t0 = time.perf_counter()
        runs = run_units(units, args.workers, out)
        meta["wall_seconds"] = round(time.perf_counter() - t0, 1)
        write_tables(out, runs)
    if args.throughput:
        n, d = (int(v) for v in args.throughput.lower().split("x"))
        meta["throughput"] = throughput(n, d, {"classifier": args.classifier})
        print(json.dumps(meta["throughput"], indent=2))
    atomic_write_json(out / "meta.json", meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
