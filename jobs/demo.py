"""The main job: an embedded (or given) Ray cluster runs each subsystem's demo stage and writes a
short HTML report to runs/<timestamp>/.

    python -m jobs.demo            # or: make demo

Stage 1 (sweep): a GASLIT-AF regime map over gamma x Lambda(0) on the SweepWorker pool, plus the
model's documented reference points: 48 x 48 with the torch backend on a CPU-only cluster
(configs/sweep/gaslit_demo.yaml), 256 x 256 from the generated Triton kernels with the reference
points' full Lyapunov spectra when the cluster has GPUs (gaslit_demo_gpu.yaml); --grid picks one.
Stage TE: the transfer-entropy network of the five GASLIT-AF variables along one chaotic trajectory
(te_stage), on the TEEstimator pool -> runs/<ts>/te/{edges.csv, network.png, ...}.
Stage validation: half the sweep table against the other half with planted memorised rows (the eight
calibrated dimensions, row localization, recommendations) -> runs/<ts>/validation/report.{json,html}.
Stage LLM (llm_stage): a few completions through Ray Data LLM with the serve.llm engine configs — the
tiny model on CPU (--llm tiny) or the Qwen2.5-0.5B shape on a GPU cluster; skipped, with the reason
printed, where vLLM is not installed (it lives in .venv-llm) or the cluster has no GPU and --llm is auto.
Stage EqProp (eqprop_stage): Equilibrium Propagation and its backprop twin (same network, same seed)
trained on MNIST-5k through the trainer engine, test accuracy side by side -> runs/<ts>/eqprop/.
Stage NeuroFMX (neurofmx_stage): the Lorenz spiking set, neurofmx_tiny trained for about a minute, its
held-out single-trial rate R2 beside Gaussian smoothing's -> runs/<ts>/neurofmx/.
Later subsystems append their stage here.
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

from actors.common.storage import atomic_write_bytes, atomic_write_json
from actors.sweep.config import ScipySolver, SolverConfig
from configs import preset

DEMO_SWEEP = preset("sweep", "gaslit_demo.yaml")
DEMO_SWEEP_GPU = preset("sweep", "gaslit_demo_gpu.yaml")


def demo_config(grid: str) -> Path:
    """The sweep preset for `--grid` (auto: the GPU preset when the cluster has GPUs).

    Why: the 48 x 48 CPU map keeps `make demo` quick on a laptop; on GPUs the generated kernels
    make a 256 x 256 map cheaper than the CPU one.
    """
    if grid == "auto":
        import ray

        grid = "gpu" if ray.cluster_resources().get("GPU", 0) > 0 else "cpu"
    return DEMO_SWEEP_GPU if grid == "gpu" else DEMO_SWEEP


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


def sweep_stage(run_dir: Path, n: int | None, grid: str = "auto") -> dict:
    from jobs.sweep import load_spec, run

    config = demo_config(grid)
    overrides = {}
    if n:
        overrides = {"axes": [{"name": "gamma", "kind": "param", "lo": 0.0, "hi": 1.0, "n": n},
                              {"name": "Lambda", "kind": "state", "lo": 0.0, "hi": 10.0, "n": n}]}
    spec = load_spec(config, overrides)
    out = run_dir / "sweep"
    summary = run(spec, out)
    points = reference_points(spec.model, spec.solver)
    atomic_write_json(out / "reference_points.json", points)
    spectra = None
    if summary.get("spectra"):
        import pandas as pd

        spectra = pd.read_parquet(summary["spectra"])
    return {"summary": summary, "points": points, "png": out / "regime_map.png", "config": config.name,
            "grid": " x ".join(str(a.n) for a in spec.axes), "spectra": spectra}


def spectra_section(spectra) -> str:
    """Report rows for the reference points' Lyapunov spectra (GPU preset only)."""
    if spectra is None:
        return ""
    lams = [c for c in spectra.columns if c.startswith("lambda_") and c != "lambda_sum"]
    head = "".join(f"<th>λ{c.split('_')[1]}</th>" for c in lams)
    rows = "".join(
        f"<tr><td>{html.escape(str(r['name']))}</td>" + "".join(f"<td>{r[c]:.4f}</td>" for c in lams)
        + f"<td>{html.escape(str(r.get('regime_spectrum', '')))}</td><td>{r.get('period', float('nan')):.3f}</td></tr>"
        for _, r in spectra.iterrows())
    return (f"<h3>Full Lyapunov spectra (QR method, <code>sweep/spectra.parquet</code>)</h3>"
            f"<table><tr><th>point</th>{head}<th>regime (spectrum rule)</th><th>period</th></tr>{rows}</table>")


# The documented chaotic point (docs/models/gaslit_af.md): gamma = 0.75, Lambda(0) = 1; sampled every
# 0.25 time units (~12 samples per x-y oscillation) after a transient of 100, 800 samples.
TE_POINT = {"params": {"gamma": 0.75}, "initial_state": {"Lambda": 1.0}}
TE_SAMPLING = {"t0": 100.0, "dt": 0.25, "n": 800}
TE_NETWORK = {"params": {"k": 4, "k_hist": 2}, "significance": {"n_surrogates": 19, "alpha": 0.05},
              "correction": "max"}


def structural_edges(model) -> set[tuple[str, str]]:
    """(source, target) where the source state appears in the target's equation: the couplings TE may find."""
    states = set(model.state_symbols)
    return {(str(v), str(s)) for s, eq in zip(model.state_symbols, model.equations, strict=True)
            for v in eq.free_symbols & states if v != s}


def te_stage(run_dir: Path) -> dict:
    """TE network of one chaotic GASLIT-AF trajectory (sweep engine -> samples -> TE pool -> te/)."""
    import io

    import pandas as pd

    from actors.sweep.engine import simulate
    from actors.sweep.models import get_model
    from actors.te.config import TENetworkSpec
    from jobs.te_network import run as run_te_network

    model = get_model("gaslit_af")
    t = TE_SAMPLING["t0"] + TE_SAMPLING["dt"] * np.arange(TE_SAMPLING["n"])
    solver = ScipySolver(t_span=(0.0, float(t[-1])), rtol=1e-6, atol=1e-8, lyapunov=False)
    t_sim = time.perf_counter()
    res = simulate(model, model.param_vector(TE_POINT["params"])[None],
                   model.state_vector(TE_POINT["initial_state"])[None], solver, t_eval=t)
    t_sim = time.perf_counter() - t_sim
    out = run_dir / "te"
    frame = pd.DataFrame(res.raw.ys[0], columns=res.state_names)
    buf = io.BytesIO()
    frame.assign(t=t).to_parquet(buf)
    atomic_write_bytes(out / "trajectory.parquet", buf.getvalue())
    spec = TENetworkSpec(name="GASLIT-AF, gamma=0.75 (chaotic)", columns=list(res.state_names), network=TE_NETWORK)
    summary = run_te_network(spec, out / "trajectory.parquet", out, progress=False)
    edges = pd.read_csv(out / "edges.csv")
    truth = structural_edges(model)
    edges["in_equations"] = [(s, d) in truth for s, d in zip(edges.source, edges.target, strict=True)]
    return {"summary": summary, "edges": edges, "truth": truth, "png": out / "network.png",
            "simulate_seconds": round(t_sim, 2)}


def te_section(te: dict) -> str:
    """The report's TE section: the network picture and its edges against the model's couplings."""
    s, edges = te["summary"], te["edges"]
    png = base64.b64encode(te["png"].read_bytes()).decode()
    rows = "".join(f"<tr><td>{html.escape(r.source)}</td><td>{html.escape(r.target)}</td><td>{r.te:.3f}</td>"
                   f"<td>{r.p_value:.3f}</td><td>{r.lag}</td><td>{'yes' if r.in_equations else 'no (indirect)'}</td></tr>"
                   for r in edges.sort_values("te", ascending=False).itertuples())
    found = int(edges["in_equations"].sum())
    return f"""<h2>TE. Causal network of a chaotic GASLIT-AF trajectory</h2>
<p>One trajectory at the documented chaotic point (γ = {TE_POINT['params']['gamma']}, Λ(0) =
{TE_POINT['initial_state']['Lambda']}), {s['n_samples']} samples every
{TE_SAMPLING['dt']} time units from t = {TE_SAMPLING['t0']} (simulated in {te['simulate_seconds']} s).
Bivariate KSG transfer entropy (k = {TE_NETWORK['params']['k']}, destination history
{TE_NETWORK['params']['k_hist']}, lag 1), {TE_NETWORK['significance']['n_surrogates']} permutation surrogates
per pair, max-statistic correction at α = {s['alpha']}; {s['n_pairs']} ordered pairs on
{len(s['workers'])} TEEstimator(s) in {s['wall_seconds']} s. {s['n_edges']} significant edges, {found} of them
direct couplings in the model's equations (which have {len(te['truth'])}); the rest are indirect
(bivariate TE cannot tell them apart: <code>--mode multivariate</code> conditions on the other sources).
Files: <code>te/edges.csv</code>, <code>te/network.graphml</code>, <code>te/trajectory.parquet</code>.</p>
<img src="data:image/png;base64,{png}" style="max-width:60%">
<table><tr><th>source</th><th>target</th><th>TE (nats)</th><th>p (corrected)</th><th>lag</th>
<th>in the equations?</th></tr>{rows}</table>
"""


# ---- validation stage ------------------------------------------------------------------------------
VALIDATION_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "validation" / "ci_tiny.yaml"
VALIDATION_COLUMNS = ["gamma", "Lambda_0", "x_mean", "y_mean", "f_mean", "Lambda_mean", "Omega_mean",
                      "x_max", "y_max", "lyapunov_max", "attractor"]
VALIDATION_PLANT = {"case": "memorised", "fraction": 0.25}


def validation_stage(run_dir: Path, sweep_dir: Path, seed: int = 0) -> dict:
    """Validate half of the sweep's table against the other half with planted memorised rows.

    A stand-in for "is this surrogate/synthetic sweep table faithful to the real one?": the cascade
    must call the pair collapsed on the memorisation dimension and blame the planted rows.
    """
    import pandas as pd

    from actors.validation.planted import memorised
    from jobs.validate import load_spec, run

    table = pd.read_parquet(sweep_dir / "trajectories.parquet")
    table = table.loc[~table["blowup"].astype(bool), VALIDATION_COLUMNS].dropna().reset_index(drop=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(table))
    half = len(table) // 2
    real = table.iloc[order[:half]].reset_index(drop=True)
    synth = table.iloc[order[half:2 * half]].reset_index(drop=True)
    synth, planted = memorised(real, synth.copy(), VALIDATION_PLANT["fraction"], "high", rng)
    t0 = time.perf_counter()
    doc = run(load_spec(VALIDATION_CONFIG), real, synth, run_dir / "validation", use_ray=True)
    flagged = [r["index"] for r in doc["flagged_rows"]]
    hits = len(set(flagged) & set(int(i) for i in planted))
    return {"doc": doc, "n_rows": half, "n_planted": len(planted), "n_flagged": len(flagged), "hits": hits,
            "seconds": round(time.perf_counter() - t0, 2)}


def validation_section(val: dict) -> str:
    """The report's validation section: decision per dimension and how well the rows were blamed."""
    doc = val["doc"]
    rows = "".join(f"<tr><td>{html.escape(n)}</td><td>{d['score']:.4g}</td><td>{d['p_value']:.4f}</td>"
                   f"<td>{'FLAGGED' if d['flagged'] else 'ok'}</td></tr>" for n, d in doc["dimensions"].items())
    recs = "".join(f"<li>{html.escape(str(r.get('fix', r)))}</li>" for r in doc.get("recommendations", [])[:3])
    prec = val["hits"] / max(val["n_flagged"], 1)
    rec = val["hits"] / max(val["n_planted"], 1)
    return f"""<h2>Validation. Sweep table vs a copy with planted memorised rows</h2>
<p>{val['n_rows']} non-blow-up trajectories a side ({', '.join(VALIDATION_COLUMNS)}); the "synthetic" half
has {val['n_planted']} rows replaced by exact or jittered copies of reference rows. Eight calibrated dimensions
(<code>configs/validation/ci_tiny.yaml</code>) in {val['seconds']} s: collapsed = <b>{doc['collapsed']}</b>.
Localizer flagged {val['n_flagged']} rows: precision {prec:.2f}, recall {rec:.2f} against the planted rows.
Full report: <code>validation/report.html</code>.</p>
<table><tr><th>dimension</th><th>score</th><th>p (corrected)</th><th>decision</th></tr>{rows}</table>
<p>Top recommendations:</p><ol>{recs}</ol>
"""


def llm_stage(run_dir: Path, mode: str) -> dict | None:
    """Three greedy completions (actors.llm.raydata.run_batch) into run_dir/llm, or None with a printed reason."""
    import importlib.util

    import ray

    if mode == "off":
        return None
    if importlib.util.find_spec("vllm") is None:
        print("[attractor] LLM stage: skipped (vLLM is not installed in this venv; it lives in .venv-llm)")
        return None
    if mode == "auto" and not ray.cluster_resources().get("GPU"):
        print("[attractor] LLM stage: skipped (no GPU in the cluster; --llm tiny runs the tiny model on CPU)")
        return None
    from actors.llm.config import apply_profile, load_engine_spec
    from actors.llm.raydata import BatchOptions, run_batch
    from actors.llm.tiny import build_tiny

    tiny = run_dir / "llm" / "tiny"
    build_tiny(tiny, gguf=False)
    spec = (apply_profile(load_engine_spec("tiny.yaml", model_source=str(tiny)), "cpu") if mode == "tiny"
            else load_engine_spec("qwen2.5-0.5b-dummy.yaml", tokenizer=str(tiny)))
    rows = [{"id": str(i), "prompt": p} for i, p in enumerate(["The state of a", "A sweep runs", "Information flows"])]
    return run_batch(spec, rows, run_dir / "llm" / "batch", BatchOptions(max_tokens=16))


def eqprop_stage(run_dir: Path) -> dict:
    """MNIST-5k, 310 steps each: EqProp's test accuracy beside backprop's (actors.trainer.eqprop.compare)."""
    from actors.trainer.eqprop.compare import eqprop_demo_stage

    return eqprop_demo_stage(run_dir / "eqprop")


def eqprop_section(eq: dict) -> str:
    return (f"<h2>EqProp vs backprop (MNIST-5k)</h2><p>Same network and seed, {eq['steps']} steps each, "
            f"{eq['n_test']} test digits: Equilibrium Propagation <b>{100 * eq['eqprop_accuracy']:.1f}%</b>, "
            f"backprop {100 * eq['backprop_accuracy']:.1f}% ({eq['difference_pts']:+.1f} points). "
            "Data: <code>eqprop/eqprop_demo.json</code>.</p>")


def neurofmx_stage(run_dir: Path) -> dict:
    """Lorenz spiking, neurofmx_tiny for 250 steps on the CPU (actors.neuro.demo)."""
    from actors.neuro.demo import neurofmx_demo_stage

    return neurofmx_demo_stage(run_dir / "neurofmx")


def neurofmx_section(nf: dict) -> str:
    return (f"<h2>NeuroFMX (Lorenz spiking, {nf['n_test']} held-out trials)</h2><p><code>neurofmx_tiny</code> "
            f"({nf['parameters']:,} parameters) trained {nf['steps']} steps ({nf['train_s']:.0f} s): single-trial rate "
            f"R² <b>{nf['rate_r2']:.3f}</b> from its own head and <b>{nf['rate_r2_glm']:.3f}</b> through a Poisson GLM "
            f"of its features fit on the training trials, against Gaussian smoothing's {nf['smoothing_rate_r2']:.3f}; "
            f"co-bps {nf['co_bps']:.3f} / {nf['co_bps_glm']:.3f} (smoothing {nf['smoothing_co_bps']:.3f}, true rates "
            f"{nf['co_bps_ceiling']:.3f}). "
            "Longer training and the learned baselines: <code>jobs.neuro_eval</code> (docs/neurofmx.md). "
            "Data: <code>neurofmx/neurofmx_demo.json</code>, <code>neurofmx/rates.png</code>.</p>")


def write_report(run_dir: Path, sweep: dict, wall: float, te: dict | None = None,
                 validation: dict | None = None, eqprop: dict | None = None, neurofmx: dict | None = None) -> Path:
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
<p>Grid {sweep.get('grid', '?')} (<code>configs/sweep/{sweep.get('config', '?')}</code>), integrated by the
<b>{', '.join(s.get('backends') or ['?'])}</b> backend.
Model <code>{s['model']}</code>, sweep <code>{s['name']}</code>: {s['n_chunks']} chunks
({s['chunks_computed']} computed, {s['chunks_skipped']} reused) on {len(s['workers'])} SweepWorker(s)
({', '.join(sorted({w['device'] for w in s['workers']})) or 'reused'}); sweep wall time {s['wall_seconds']} s,
{s['trajectories_per_second'] or '-'} trajectories/s. Data: <code>sweep/trajectories.parquet</code>.</p>
<img src="data:image/png;base64,{png}" style="max-width:100%">
<h3>Attractors found</h3><ul>{counts}</ul>
<h3>Documented reference points (docs/models/gaslit_af.md)</h3>
<table><tr><th>point</th><th>params</th><th>initial state</th><th>expected</th><th>found</th><th>λ_max</th><th></th></tr>
{rows}</table>
{spectra_section(sweep.get("spectra"))}
{te_section(te) if te else ""}
{validation_section(validation) if validation else ""}
{eqprop_section(eqprop) if eqprop else ""}
{neurofmx_section(neurofmx) if neurofmx else ""}
<p>Total demo wall time {wall:.1f} s.</p></body></html>"""
    path = run_dir / "report.html"
    atomic_write_bytes(path, doc.encode())
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="run directory (default runs/<timestamp>)")
    ap.add_argument("--n", type=int, default=None, help="grid points per axis (default: the preset's)")
    ap.add_argument("--grid", choices=["auto", "cpu", "gpu"], default="auto",
                    help="sweep preset: auto -> gaslit_demo_gpu.yaml (256 x 256) when the cluster has GPUs")
    ap.add_argument("--address", default=None)
    ap.add_argument("--llm", choices=["auto", "tiny", "off"], default="auto",
                    help="LLM stage: auto -> only on a GPU cluster with vLLM installed; tiny -> the tiny model on CPU")
    args = ap.parse_args(argv)
    from cluster import connect

    t0 = time.perf_counter()
    run_dir = Path(args.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
    run_dir.mkdir(parents=True, exist_ok=True)
    connect(args.address)
    sweep = sweep_stage(run_dir, args.n, args.grid)
    te = te_stage(run_dir)
    val = validation_stage(run_dir, sweep["png"].parent)
    llm = llm_stage(run_dir, args.llm)
    eq = eqprop_stage(run_dir)
    nf = neurofmx_stage(run_dir)
    report = write_report(run_dir, sweep, time.perf_counter() - t0, te=te, validation=val, eqprop=eq, neurofmx=nf)
    missing = [p["name"] for p in sweep["points"] if not p["ok"]]
    print(f"[attractor] regime map: {sweep['png'].resolve()} ({sweep['grid']}, "
          f"backend {', '.join(sweep['summary']['backends'])})")
    print(f"[attractor] report:     {report.resolve()}")
    print(f"[attractor] attractors: {sweep['summary']['attractor_counts']}")
    print(f"[attractor] TE network: {te['summary']['n_edges']} edges -> {(run_dir / 'te' / 'edges.csv').resolve()}")
    print(f"[attractor] validation: collapsed={val['doc']['collapsed']}, {val['hits']}/{val['n_planted']} planted "
          f"rows among {val['n_flagged']} flagged -> {(run_dir / 'validation' / 'report.html').resolve()}")
    print(f"[attractor] EqProp:     MNIST-5k test accuracy {100 * eq['eqprop_accuracy']:.1f}% "
          f"(backprop {100 * eq['backprop_accuracy']:.1f}%) -> {(run_dir / 'eqprop').resolve()}")
    print(f"[attractor] NeuroFMX:   held-out rate R2 {nf['rate_r2']:.3f} (GLM readout {nf['rate_r2_glm']:.3f}) after "
          f"{nf['steps']} steps (Gaussian "
          f"smoothing {nf['smoothing_rate_r2']:.3f}) -> {(run_dir / 'neurofmx').resolve()}")
    if llm:
        print(f"[attractor] LLM: {llm['rows']} completions of {llm['model_id']}, {llm['generated_tokens']} tokens "
              f"-> {(run_dir / 'llm' / 'batch').resolve()}")
    if missing:
        print(f"[attractor] reference points not reproduced: {missing}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
