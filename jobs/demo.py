"""The main job: an embedded (or given) Ray cluster runs each subsystem's demo stage and writes a
short HTML report to runs/<timestamp>/.

    python -m jobs.demo            # or: make demo

Stage 1 (sweep): a 48 x 48 GASLIT-AF regime map over gamma x Lambda(0) on the SweepWorker pool,
plus the model's documented reference points. Later subsystems append their stage here.
"""
from __future__ import annotations

import argparse
import base64
import html
import json
import sys
import time
from pathlib import Path

import numpy as np

from actors.sweep.config import SolverConfig
from actors.sweep.storage import atomic_write_bytes, atomic_write_json

DEMO_SWEEP = Path(__file__).resolve().parents[1] / "configs" / "sweep" / "gaslit_demo.yaml"


def reference_points(model_name: str, solver: SolverConfig) -> list[dict]:
    """Simulate the model's documented points in one batch; report expected vs found."""
    from actors.sweep.engine import simulate
    from actors.sweep.models import get_model

    model = get_model(model_name)
    pts = model.spec.reference_points
    params = np.stack([model.param_vector(p.params) for p in pts])
    u0 = np.stack([model.state_vector(p.initial_state) for p in pts])
    res = simulate(model, params, u0, solver)
    return [{"name": p.name, "params": p.params, "initial_state": p.initial_state, "expect": p.expect,
             "found": str(res.attractor[i]), "lyapunov_max": float(res.raw.lyapunov_max[i]),
             "ok": str(res.attractor[i]) == p.expect} for i, p in enumerate(pts)]


def sweep_stage(run_dir: Path, n: int | None) -> dict:
    from jobs.sweep import load_spec, run

    overrides = {}
    if n:
        overrides = {"axes": [{"name": "gamma", "kind": "param", "lo": 0.0, "hi": 1.0, "n": n},
                              {"name": "Lambda", "kind": "state", "lo": 0.0, "hi": 10.0, "n": n}]}
    spec = load_spec(DEMO_SWEEP)
    if overrides:
        spec = spec.model_copy(update={"axes": type(spec)(**{**spec.model_dump(), **overrides}).axes})
    out = run_dir / "sweep"
    summary = run(spec, out)
    points = reference_points(spec.model, spec.solver)
    atomic_write_json(out / "reference_points.json", points)
    return {"summary": summary, "points": points, "png": out / "regime_map.png"}


def write_report(run_dir: Path, sweep: dict, wall: float) -> Path:
    s = sweep["summary"]
    png = base64.b64encode(sweep["png"].read_bytes()).decode()
    rows = "".join(
        f"<tr><td>{html.escape(p['name'])}</td><td>{html.escape(json.dumps(p['params']))}</td>"
        f"<td>{html.escape(json.dumps(p['initial_state']))}</td><td>{p['expect']}</td><td>{p['found']}</td>"
        f"<td>{p['lyapunov_max']:.4f}</td><td>{'✔' if p['ok'] else '✘'}</td></tr>" for p in sweep["points"])
    counts = "".join(f"<li>{html.escape(k)}: {v}</li>" for k, v in sorted(s["attractor_counts"].items()))
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>attractor demo</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}td,th{{border:1px solid #ccc;padding:4px}}
table{{border-collapse:collapse}}</style></head><body>
<h1>attractor demo — {time.strftime('%Y-%m-%d %H:%M:%S')}</h1>
<h2>1. GASLIT-AF regime map ({s['n_points']} trajectories)</h2>
<p>Model <code>{s['model']}</code>, sweep <code>{s['name']}</code>: {s['n_chunks']} chunks
({s['chunks_computed']} computed, {s['chunks_skipped']} reused) on {len(s['workers'])} SweepWorker(s)
({', '.join(sorted({w['device'] for w in s['workers']})) or 'reused'}); sweep wall time {s['wall_seconds']} s,
{s['trajectories_per_second'] or '-'} trajectories/s. Data: <code>sweep/trajectories.parquet</code>.</p>
<img src="data:image/png;base64,{png}" style="max-width:100%">
<h3>Attractors found</h3><ul>{counts}</ul>
<h3>Documented reference points (docs/models/gaslit_af.md)</h3>
<table><tr><th>point</th><th>params</th><th>initial state</th><th>expected</th><th>found</th><th>λ_max</th><th></th></tr>
{rows}</table>
<p>Total demo wall time {wall:.1f} s.</p></body></html>"""
    path = run_dir / "report.html"
    atomic_write_bytes(path, doc.encode())
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="run directory (default runs/<timestamp>)")
    ap.add_argument("--n", type=int, default=None, help="grid points per axis (default: config's 48)")
    ap.add_argument("--address", default=None)
    args = ap.parse_args(argv)
    from cluster import connect

    t0 = time.perf_counter()
    run_dir = Path(args.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
    run_dir.mkdir(parents=True, exist_ok=True)
    connect(args.address)
    sweep = sweep_stage(run_dir, args.n)
    report = write_report(run_dir, sweep, time.perf_counter() - t0)
    missing = [p["name"] for p in sweep["points"] if not p["ok"]]
    print(f"[attractor] regime map: {sweep['png'].resolve()}")
    print(f"[attractor] report:     {report.resolve()}")
    print(f"[attractor] attractors: {sweep['summary']['attractor_counts']}")
    if missing:
        print(f"[attractor] reference points not reproduced: {missing}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
