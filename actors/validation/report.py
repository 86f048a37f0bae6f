"""The validate job's outputs: report.json, one PNG per dimension, report.html (all written atomically)."""
from __future__ import annotations

import html
import io
from pathlib import Path

import numpy as np

from actors.common.storage import atomic_write_bytes, atomic_write_json
from actors.validation.detector import CollapseReport, DimensionResult
from actors.validation.localize import Localization
from actors.validation.recommend import Recommendation


def report_json(report: CollapseReport, loc: Localization | None, recs: list[Recommendation],
                extra: dict | None = None, max_rows: int = 1000) -> dict:
    """The report.json document: collapsed, dimensions, flagged_rows, recommendations (+ details)."""
    doc = report.to_json()
    doc["flagged_rows"] = loc.to_json(max_rows) if loc is not None else []
    doc["recommendations"] = [r.to_json() for r in recs]
    doc.update(extra or {})
    return doc


def dimension_png(dim: DimensionResult) -> bytes:
    """Left: the null distribution of the dimension's max-T statistic and the observed score.
    Right: the components with the largest standardised departure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.2))
    if dim.null_max:
        a.hist(np.clip(dim.null_max, -50, 50), bins=30, color="#9fc5e8", edgecolor="#1f4e79")
    a.axvline(min(dim.score, 50), color="#cc0000" if dim.flagged else "#333333", lw=2,
              label=f"observed {dim.score:.2f}")
    a.set_title(f"{dim.name}: p = {dim.p_value:.3g}{' (flagged)' if dim.flagged else ''}")
    a.set_xlabel("max standardised statistic (null sds)")
    a.legend(fontsize=8)
    top = sorted(dim.components.items(), key=lambda kv: -kv[1]["z"])[:10]
    if top:
        names = [k if len(k) < 32 else k[:29] + "..." for k, _ in top][::-1]
        zs = [min(v["z"], 50) for _, v in top][::-1]
        colors = ["#cc0000" if v["p_adjusted"] <= 0.05 else "#6fa8dc" for _, v in top][::-1]
        b.barh(names, zs, color=colors)
        b.set_xlabel("z (red: adjusted p <= 0.05)")
        b.tick_params(axis="y", labelsize=7)
    else:
        b.text(0.5, 0.5, dim.skipped or "no components", ha="center", va="center")
        b.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def write_report(out_dir: Path, report: CollapseReport, loc: Localization | None, recs: list[Recommendation],
                 extra: dict | None = None) -> dict:
    """DIR/report.json, DIR/plots/<dimension>.png and DIR/report.html; returns the JSON document."""
    doc = report_json(report, loc, recs, extra)
    atomic_write_json(out_dir / "report.json", doc)
    for name, dim in report.dimensions.items():
        atomic_write_bytes(out_dir / "plots" / f"{name}.png", dimension_png(dim))
    atomic_write_bytes(out_dir / "report.html", render_html(doc, list(report.dimensions)).encode())
    return doc


def render_html(doc: dict, dims: list[str]) -> str:
    e = html.escape
    verdict = "COLLAPSED" if doc["collapsed"] else "no collapse detected"
    rows = "".join(
        f"<tr><td>{e(k)}</td><td>{d['score']:.2f}</td><td>{d['p_value']:.3g}</td>"
        f"<td>{'<b>yes</b>' if d['flagged'] else 'no'}</td><td>{e(', '.join(d['columns'][:12]))}</td></tr>"
        for k, d in doc["dimensions"].items())
    plots = "".join(f"<h3>{e(k)}</h3><img src='plots/{e(k)}.png' alt='{e(k)}'>" for k in dims)
    flagged = "".join(f"<tr><td>{r['index']}</td><td>{r['score']:.3f}</td><td>{e(r['reason'])}</td></tr>"
                      for r in doc["flagged_rows"][:100])
    recs = "".join(f"<tr><td>{e(r['fix'])}</td><td>{e(r['description'])}</td><td>{r['improvement']:.3f}</td>"
                   f"<td>{r['cost']:.2f}</td><td>{r['priority']:.3f}</td><td>{e(', '.join(r['resolved']))}</td></tr>"
                   for r in doc["recommendations"])
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>validation report</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}}</style></head><body>
<h1>Validation: {verdict}</h1>
<p>{doc['n_real']} real rows, {doc['n_synth']} synthetic rows; Benjamini-Hochberg across dimensions at
alpha = {doc['alpha']}. Scores are the largest standardised departure from the real-vs-real null.</p>
<table><tr><th>dimension</th><th>score</th><th>p-value</th><th>flagged</th><th>columns</th></tr>{rows}</table>
<h2>Recommendations</h2>
<table><tr><th>fix</th><th>what</th><th>improvement</th><th>cost</th><th>priority</th><th>resolves</th></tr>{recs}</table>
<h2>Flagged rows (first 100)</h2>
<table><tr><th>row</th><th>score</th><th>reason</th></tr>{flagged}</table>
<h2>Dimensions</h2>{plots}</body></html>
"""
