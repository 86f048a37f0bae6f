"""The evaluation's files: scores.parquet, metrics.json, curve.png, metrics.md and ablations.md (the
tables docs/router.md quotes), each written atomically. No Ray."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from actors.common.storage import atomic_write_json, atomic_write_parquet, atomic_write_text
from actors.router.plots import curve_png

__all__ = ["ablation_table", "metrics_table", "targets", "write_outputs"]

# RouteLLM's claimed cost cuts at 95 % of GPT-4 quality (issue 13's targets), as shares of calls saved
CLAIMED_SAVING = {"gsm8k": 0.35, "mmlu": 0.45}
_NAMES = {"router": "router (energy + Boltzmann, T>0)", "energy_t0": "T = 0 argmin of the same energy",
          "thompson": "Thompson only (posteriors, no predictor)", "predictor": "predictor only",
          "random": "random (RouteLLM, seed 0, 10 sweeps)", "oracle": "oracle",
          "energy_te": "router + TE feature (online)", "energy_recency": "router + recency term, gate 1 (no TE; online)"}


def _ci(m: dict, key: str, pct: bool = False) -> str:
    ci = (m.get("ci") or {}).get(key)
    if not ci:
        return ""
    f = 100.0 if pct else 1.0
    return f" [{ci[0] * f:.{1 if pct else 3}f}, {ci[1] * f:.{1 if pct else 3}f}]"


def _row(name: str, m: dict) -> str:
    apgr = f"{m['apgr']:.3f}{_ci(m, 'apgr')}"
    cpt = " | ".join(f"{m[k] * 100:.1f}{_ci(m, k, True)}" for k in ("cpt_20", "cpt_50", "cpt_80") if k in m)
    save = f"{m['cost_saving'] * 100:.1f}{_ci(m, 'cost_saving', True)}"
    return f"| {_NAMES.get(name, name)} | {apgr} | {cpt} | {save} |"


def metrics_table(summary: dict) -> str:
    """Per benchmark: the router and every baseline (random, oracle, all-weak, all-strong) with CIs."""
    lines = []
    for b, r in summary["benchmarks"].items():
        lines += [f"**{b}** — {r['n_routes']} routes, folds by {r['folds']}; all-weak {r['all_weak']:.2f} "
                  f"[{r['all_weak_ci'][0]:.2f}, {r['all_weak_ci'][1]:.2f}], all-strong {r['all_strong']:.2f} "
                  f"[{r['all_strong_ci'][0]:.2f}, {r['all_strong_ci'][1]:.2f}] ({r['unit']}); 95 % of strong = "
                  f"{r['quality_target_perf']:.2f}; predictor AUC (held out) {r['predictor_auc']:.3f}", "",
                  "| router | APGR [95 % CI] | CPT(20%) | CPT(50%) | CPT(80%) | cost saving at 95 % quality (%) |",
                  "|---|---|---|---|---|---|"]
        for name in ("router", "random", "oracle"):
            if name in r["routers"]:
                lines.append(_row(name, r["routers"][name]))
        lines.append(f"| all-weak | 0 | — | — | — | {'100.0' if r['all_weak'] >= r['quality_target_perf'] else '—'} |")
        lines.append("| all-strong | 1 | 100 | 100 | 100 | 0.0 |")
        vs = r["routers"]["router"].get("vs_random_ci")
        if vs:
            lines += ["", f"router − random (paired bootstrap, 95 % CI): APGR [{vs['apgr'][0]:+.3f}, {vs['apgr'][1]:+.3f}], "
                      f"CPT(50%) [{vs['cpt_50'][0] * 100:+.1f}, {vs['cpt_50'][1] * 100:+.1f}] points, cost saving "
                      f"[{vs['cost_saving'][0] * 100:+.1f}, {vs['cost_saving'][1] * 100:+.1f}] points"]
        lines.append("")
    return "\n".join(lines)


def ablation_table(summary: dict) -> str:
    """Every scored method per benchmark, same columns (CPT and savings in % of calls)."""
    lines = ["| benchmark | method | APGR [95 % CI] | CPT(20%) | CPT(50%) | CPT(80%) | cost saving at 95 % (%) |",
             "|---|---|---|---|---|---|---|"]
    for b, r in summary["benchmarks"].items():
        for name, m in r["routers"].items():
            lines.append(f"| {b} " + _row(name, m))
    return "\n".join(lines) + "\n"


def targets(summary: dict) -> dict:
    """Which of issue 13's measurable targets this run meets, per benchmark (no claim without a number)."""
    out = {}
    for b, r in summary["benchmarks"].items():
        m = r["routers"]["router"]
        rnd = r["routers"].get("random", {})
        vs = m.get("vs_random_ci", {}).get("apgr")
        t = {"apgr_above_random_paired_ci": bool(vs and vs[0] > 0),
             "apgr_ci_above_random_ci": bool(m.get("ci") and rnd.get("ci") and m["ci"]["apgr"][0] > rnd["ci"]["apgr"][1]),
             "cpt50_below_random": bool(rnd and m["cpt_50"] < rnd["cpt_50"])}
        if b in CLAIMED_SAVING:
            t["cost_saving_claim"] = CLAIMED_SAVING[b]
            t["cost_saving_meets_claim"] = bool(m["cost_saving"] >= CLAIMED_SAVING[b])
            t["cost_saving_ci_lower_meets_claim"] = bool(m.get("ci") and m["ci"]["cost_saving"][0] >= CLAIMED_SAVING[b])
        out[b] = t
    return out


def write_outputs(out_dir: Path, scores: pd.DataFrame, summary: dict, *, title: str = "") -> dict[str, str]:
    """scores.parquet (route_id, score, per-method columns, benchmark, category, fold), metrics.json,
    curve.png, metrics.md, ablations.md; returns {kind: path}."""
    out_dir = Path(out_dir)
    paths = {"scores": out_dir / "scores.parquet", "metrics": out_dir / "metrics.json", "curve": out_dir / "curve.png",
             "metrics_md": out_dir / "metrics.md", "ablations_md": out_dir / "ablations.md"}
    cols = ["route_id", "score"] + [c for c in scores.columns if c not in ("route_id", "score")]
    atomic_write_parquet(paths["scores"], scores[cols])
    summary = {**summary, "targets": targets(summary)}
    atomic_write_json(paths["metrics"], summary)
    curve_png(summary, paths["curve"], title=title)
    atomic_write_text(paths["metrics_md"], metrics_table(summary))
    atomic_write_text(paths["ablations_md"], ablation_table(summary))
    return {k: str(v) for k, v in paths.items()}
