"""One-parameter bifurcation diagram: local maxima of a state over the final window vs a parameter.

    python -m jobs.bifurcation --config configs/bifurcation/brusselator_ci.yaml --out runs/bif
    ray job submit --working-dir . -- python -m jobs.bifurcation --config configs/bifurcation/lorenz_rho.yaml --out DIR

For each of `n` parameter values the existing batched torch integrator (kernels/ode/dopri5.py, CPU
or CUDA via solver.device) runs the trajectory and saves `n_save` points of the final window on its
dense-output interpolant; every local maximum of `state` there (refined by a parabola through the
three samples) is one dot. Rows that settle on a fixed point contribute their final value; the
regime column is the sweep rule's label. Optionally the equilibrium branches from continuation are
overlaid (stable solid, unstable dashed, folds / branch points / Hopf points marked), and with a
`spectrum:` block the first k Lyapunov exponents of every value (QR method, actors/sweep/lyapunov.py)
are plotted in a second panel, with the spectrum regime rule's label and cycle period per value.
Writes DIR/bifurcation.png, DIR/bifurcation.parquet (parameter, value, kind, regime),
DIR/trajectories.parquet (one row per parameter value) and DIR/summary.json.
Chunks of `chunk_size` values run in the job's process, or with --ray (implied under `ray job
submit`, which sets RAY_ADDRESS) as one Ray task each with the resources of `workers:`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from actors.common.errors import InputError
from actors.sweep.config import SolverConfig, WorkerConfig
from actors.sweep.continuation import BranchStart, ContinuationSettings, ContinuationSpec
from actors.sweep.lyapunov import SpectrumSettings
from jobs import cli

OSCILLATING = ("limit_cycle", "chaotic", "oscillatory", "quasi_periodic")


class BifurcationSpec(BaseModel):
    """Model, swept parameter and its grid, the plotted state, solver, optional continuation overlay."""

    model_config = ConfigDict(extra="forbid")

    name: str = "bifurcation"
    model: str
    parameter: str
    lo: float
    hi: float
    n: int = Field(gt=1, le=1_000_000)
    state: str | None = None                    # plotted state (default: the first)
    params: dict[str, float] = Field(default_factory=dict)          # fixed overrides
    initial_state: dict[str, float] = Field(default_factory=dict)   # same start for every row
    solver: SolverConfig = Field(default_factory=SolverConfig)      # window = final fraction sampled
    n_save: int = Field(2000, ge=16, le=200_000)  # samples of the final window per trajectory
    chunk_size: int = Field(512, gt=0, le=1_000_000)
    continuation: list[BranchStart] = Field(default_factory=list)   # branch starts to overlay
    continuation_settings: ContinuationSettings = Field(default_factory=ContinuationSettings)
    spectrum: SpectrumSettings | None = None  # also: QR Lyapunov spectrum + spectrum regime per value
    workers: WorkerConfig = Field(default_factory=WorkerConfig)  # resources of each Ray task (--ray)

    @model_validator(mode="after")
    def _range(self) -> BifurcationSpec:
        if not (np.isfinite(self.lo) and np.isfinite(self.hi) and self.lo < self.hi):
            raise ValueError(f"need finite lo < hi, got lo={self.lo}, hi={self.hi}")
        return self

    def values(self) -> np.ndarray:
        return np.linspace(self.lo, self.hi, self.n)


def load_spec(path: str | Path | None, overrides: dict | None = None) -> BifurcationSpec:
    """Read a bifurcation YAML, apply dotted overrides like {"n": 50}, validate."""
    return cli.load_spec(BifurcationSpec, path, overrides)


def local_maxima(ts: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Interior local maxima of y[T] sampled at ts, each refined by the parabola through 3 samples."""
    i = np.flatnonzero((y[1:-1] > y[:-2]) & (y[1:-1] >= y[2:])) + 1
    y0, y1, y2 = y[i - 1], y[i], y[i + 1]
    denom = y0 - 2 * y1 + y2
    with np.errstate(invalid="ignore", divide="ignore"):
        off = np.where(denom < 0, 0.5 * (y0 - y2) / denom, 0.0)  # vertex offset in samples, |off| <= 1/2
    h = ts[1] - ts[0]
    return ts[i] + off * h, y1 - 0.25 * (y0 - y2) * off


def _grid(spec: BifurcationSpec):
    """(model, state index, parameter values, params [n, m], u0 [n, ns]) of the spec."""
    from actors.sweep.jacobian import param_index
    from actors.sweep.models import get_model

    model = get_model(spec.model)
    j = param_index(model, spec.parameter, "parameter")
    state = spec.state or model.state_names[0]
    if state not in model.state_names:
        raise InputError("state", f"{state!r} is not a state of {model.name}", ", ".join(model.state_names))
    values = spec.values()
    params = np.tile(model.param_vector(spec.params, "params"), (len(values), 1))
    params[:, j] = values
    u0 = np.tile(model.state_vector(spec.initial_state, "initial_state"), (len(values), 1))
    return model, model.state_names.index(state), values, params, u0


def diagram_chunk(spec: BifurcationSpec, start: int, stop: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Grid values [start, stop): (dots, per-value rows), spectrum columns included when configured.

    Pure compute (no Ray), so the job runs it in-process or as one Ray task per chunk.
    """
    from actors.sweep.engine import simulate

    model, s, values, params, u0 = _grid(spec)
    state = model.state_names[s]
    t0, t1 = spec.solver.t_span or model.spec.time_span
    t_eval = np.linspace(t1 - spec.solver.window * (t1 - t0), t1, spec.n_save)
    res = simulate(model, params[start:stop], u0[start:stop], spec.solver, t_eval=t_eval)
    dots, rows = [], []
    for r in range(len(res.regime)):
        value, regime = float(values[start + r]), str(res.regime[r])
        if regime == "fixed_point":
            dots.append((value, float(res.raw.u_final[r, s]), "equilibrium", regime))
            n_max = 0
        elif regime == "blow_up":
            n_max = 0
        else:
            _, peaks = local_maxima(t_eval, res.raw.ys[r, :, s])
            dots.extend((value, float(pk), "max", regime) for pk in peaks)
            n_max = len(peaks)
        rows.append((value, regime, float(res.raw.lyapunov_max[r]), n_max))
    per_row = pd.DataFrame(rows, columns=[spec.parameter, "regime", "lyapunov_max", "n_maxima"])
    if spec.spectrum is not None:
        per_row = pd.concat([per_row, _spectrum_columns(spec, model, s, params[start:stop], u0[start:stop])],
                            axis=1)
    return pd.DataFrame(dots, columns=[spec.parameter, state, "kind", "regime"]), per_row


def _spectrum_columns(spec: BifurcationSpec, model, s: int, params: np.ndarray, u0: np.ndarray) -> pd.DataFrame:
    """Per value: λ_1..λ_k (QR method, torch), the spectrum regime and the cycle period."""
    from actors.sweep.engine import resolve_device
    from actors.sweep.lyapunov import classify_trajectories, lyapunov_spectrum

    cfg = spec.spectrum
    k = min(cfg.k, len(model.state_names))
    res = lyapunov_spectrum(model, params, u0, t_transient=cfg.t_transient, t_measure=cfg.t_measure, dt=cfg.dt,
                            k=k, renorm_every=cfg.renorm_every, section_state=s, blowup_bound=cfg.blowup_bound,
                            device=resolve_device(spec.solver.device))
    out = classify_trajectories(res, zero_tol=cfg.zero_tol, chaos_threshold=cfg.chaos_threshold,
                                fixed_point_tol=cfg.fixed_point_tol, section_tol=cfg.section_tol)
    cols = {f"lambda_{i + 1}": out["exponents"][:, i] for i in range(k)}  # whole-return where available
    cols.update(spectrum_regime=out["regime"].astype(str), period=out["period"], section_order=out["section_order"])
    return pd.DataFrame(cols)


def diagram_points(spec: BifurcationSpec, *, use_ray: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(dots, per-value table) over the whole grid: chunk by chunk here, or one Ray task per chunk.

    With Ray each task asks for the resources of spec.workers (num_gpus auto: one GPU per task when
    the cluster has GPUs), so chunks spread over the cluster's GPUs; results are identical.
    """
    _grid(spec)  # validate names before scheduling anything
    bounds = [(a, min(a + spec.chunk_size, spec.n)) for a in range(0, spec.n, spec.chunk_size)]
    if use_ray:
        import ray

        from actors.sweep.pool import resolve_worker_resources

        _, num_gpus = resolve_worker_resources(spec.workers)
        task = ray.remote(num_cpus=spec.workers.num_cpus, num_gpus=num_gpus,
                          max_retries=spec.workers.max_task_retries)(diagram_chunk)
        parts = ray.get([task.remote(spec, a, b) for a, b in bounds])
    else:
        parts = [diagram_chunk(spec, a, b) for a, b in bounds]
    return (pd.concat([d for d, _ in parts], ignore_index=True),
            pd.concat([r for _, r in parts], ignore_index=True))


def first_oscillating(per_row: pd.DataFrame, parameter: str) -> float | None:
    """Smallest grid value from which every larger one oscillates (the onset, e.g. a Hopf), or None."""
    osc = per_row["regime"].isin(OSCILLATING).to_numpy()
    if not osc.any() or not osc[-1]:
        return None
    start = len(osc) - np.argmin(osc[::-1]) if not osc.all() else 0
    return float(per_row[parameter].iloc[start])


def render(spec: BifurcationSpec, dots: pd.DataFrame, branches: list, path: Path,
           per_row: pd.DataFrame | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jobs.continuation import plot_branches

    state = dots.columns[1]
    lam_cols = [] if per_row is None else [c for c in per_row.columns if c.startswith("lambda_")]
    if lam_cols:
        fig, (ax, ax_l) = plt.subplots(2, 1, figsize=(9, 8), sharex=True, height_ratios=[2.2, 1],
                                       constrained_layout=True)
        for c in lam_cols:
            ax_l.plot(per_row[spec.parameter], per_row[c], lw=1, label=c.replace("lambda_", "λ"))
        ax_l.axhline(0, color="k", lw=0.6)
        ax_l.set_ylabel("Lyapunov exponents")
        ax_l.set_xlabel(spec.parameter)
        ax_l.legend(fontsize=8)
    else:
        fig, ax = plt.subplots(figsize=(9, 5.5), constrained_layout=True)
    mx = dots[dots["kind"] == "max"]
    eq = dots[dots["kind"] == "equilibrium"]
    # pixels for dense diagrams (the classic look), visible dots for small CPU presets
    ax.plot(mx[spec.parameter], mx[state], "," if spec.n > 300 else ".", ms=3, color="#1f77b4", alpha=0.7)
    ax.plot([], [], ".", color="#1f77b4", label=f"local maxima of {state} (final window)")
    ax.plot(eq[spec.parameter], eq[state], ".", color="#2ca02c", ms=3, label="settled on an equilibrium")
    if branches:
        plot_branches(ax, branches, state)
        ax.plot([], [], "-", color="k", label="equilibria, stable")
        ax.plot([], [], "--", color="k", label="equilibria, unstable")
    pad = 0.01 * (spec.hi - spec.lo)
    ax.set_xlim(spec.lo - pad, spec.hi + pad)
    ax.set_xlabel(spec.parameter)
    ax.set_ylabel(state)
    ax.set_title(f"{spec.model}: bifurcation diagram ({spec.name})")
    ax.legend(fontsize=8, loc="best")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path


def run(spec: BifurcationSpec, out_dir: Path, *, use_ray: bool = False) -> dict:
    """Integrate, collect maxima, continue the overlay branches, write the outputs atomically."""
    from actors.common.storage import atomic_write_json, atomic_write_parquet
    from actors.sweep.continuation import continue_equilibria

    t0 = time.perf_counter()
    dots, per_row = diagram_points(spec, use_ray=use_ray)
    t_sim = time.perf_counter() - t0
    branches = []
    if spec.continuation:
        cont = ContinuationSpec(name=spec.name, model=spec.model, parameter=spec.parameter, params=spec.params,
                                bounds=(spec.lo, spec.hi), branches=spec.continuation,
                                settings=spec.continuation_settings)
        branches = continue_equilibria(cont)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_parquet(out_dir / "bifurcation.parquet", dots)
    atomic_write_parquet(out_dir / "trajectories.parquet", per_row)
    render(spec, dots, branches, out_dir / "bifurcation.png", per_row)
    summary = {"name": spec.name, "model": spec.model, "parameter": spec.parameter, "state": dots.columns[1],
               "out_dir": str(out_dir), "n_values": spec.n, "grid_spacing": (spec.hi - spec.lo) / (spec.n - 1),
               "n_dots": len(dots), "regime_counts": per_row["regime"].value_counts().to_dict(),
               "first_oscillating": first_oscillating(per_row, spec.parameter),
               "special_points": [{"kind": p.kind, "param": p.param, "branch": i}
                                  for i, b in enumerate(branches) for p in b.special],
               "spectrum_regime_counts": (per_row["spectrum_regime"].value_counts().to_dict()
                                          if "spectrum_regime" in per_row else None),
               "simulate_seconds": round(t_sim, 3), "wall_seconds": round(time.perf_counter() - t0, 3)}
    atomic_write_json(out_dir / "summary.json", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="bifurcation YAML (configs/bifurcation/*.yaml)")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="override config fields, e.g. n=400 solver.device=cuda")
    ap.add_argument("--ray", action="store_true",
                    help="one Ray task per chunk (resources from `workers:`); implied by RAY_ADDRESS / --address")
    ap.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS or embedded)")
    args = ap.parse_args(argv)
    use_ray = args.ray or bool(args.address) or bool(os.environ.get("RAY_ADDRESS"))
    try:
        spec = load_spec(args.config, cli.parse_set(args.set))
        if use_ray:
            from cluster import connect

            connect(args.address)
        summary = run(spec, Path(args.out), use_ray=use_ray)
    except (InputError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
