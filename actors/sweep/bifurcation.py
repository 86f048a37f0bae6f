"""One-parameter bifurcation diagrams: local maxima of a state over the final window vs a parameter.

For each of `n` parameter values the sweep engine (torch by default, CPU or CUDA via solver.device)
integrates the trajectory and saves `n_save` points of the final window on its dense-output
interpolant; every local maximum of `state` there (refined by a parabola through the three samples)
is one dot. Rows that settle on a fixed point contribute their final value; the regime column is the
sweep rule's label. Optionally the equilibrium branches from continuation are overlaid (stable solid,
unstable dashed, folds / branch points / Hopf points marked), and with a `spectrum:` block the first
k Lyapunov exponents of every value (QR method, lyapunov.py) are added per value, with the spectrum
regime rule's label and cycle period.

Pure compute, no Ray: `diagram_points` runs the chunks in this process unless given a `map_chunks`
(actors/sweep/pool.run_bifurcation passes one that fans them out over SweepWorkers); `write_diagram`
writes DIR/bifurcation.png, DIR/bifurcation.parquet (parameter, value, kind, regime),
DIR/trajectories.parquet (one row per parameter value) and DIR/summary.json.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from actors.common.config import Strict, WorkerConfig
from actors.common.errors import InputError
from actors.common.storage import atomic_write_json, atomic_write_parquet
from actors.sweep.config import SolverConfig, TorchSolver
from actors.sweep.continuation import Branch, BranchStart, ContinuationSettings, ContinuationSpec
from actors.sweep.lyapunov import SpectrumSettings
from actors.sweep.models import CompiledModel, ModelRef, model_label, resolve_model

__all__ = ["OSCILLATING", "BifurcationSpec", "ChunkMap", "check_bifurcation", "chunk_bounds", "diagram_chunk",
           "diagram_points", "first_oscillating", "local_maxima", "overlay_branches", "summarize", "write_diagram"]

OSCILLATING = ("limit_cycle", "chaotic", "oscillatory", "quasi_periodic")
Chunk = tuple[pd.DataFrame, pd.DataFrame]                  # (dots, per-value rows) of some grid values
ChunkMap = Callable[["BifurcationSpec", Sequence[tuple[int, int]]], list[Chunk]]


class BifurcationSpec(Strict):
    """Model, swept parameter and its grid, the plotted state, solver, optional continuation overlay."""

    name: str = "bifurcation"
    model: ModelRef                             # a model name, or a whole model inline
    parameter: str
    lo: float
    hi: float
    n: int = Field(gt=1, le=1_000_000)
    state: str | None = None                    # plotted state (default: the first)
    params: dict[str, float] = Field(default_factory=dict)          # fixed overrides
    initial_state: dict[str, float] = Field(default_factory=dict)   # same start for every row
    solver: SolverConfig = Field(default_factory=TorchSolver)       # window = final fraction sampled
    n_save: int = Field(2000, ge=16, le=200_000)  # samples of the final window per trajectory
    chunk_size: int = Field(512, gt=0, le=1_000_000)
    continuation: list[BranchStart] = Field(default_factory=list)   # branch starts to overlay
    continuation_settings: ContinuationSettings = Field(default_factory=ContinuationSettings)
    spectrum: SpectrumSettings | None = None  # also: QR Lyapunov spectrum + spectrum regime per value
    workers: WorkerConfig = Field(default_factory=WorkerConfig)  # SweepWorkers of a Ray run

    @model_validator(mode="after")
    def _range(self) -> BifurcationSpec:
        if not (np.isfinite(self.lo) and np.isfinite(self.hi) and self.lo < self.hi):
            raise ValueError(f"need finite lo < hi, got lo={self.lo}, hi={self.hi}")
        return self

    def values(self) -> np.ndarray:
        return np.linspace(self.lo, self.hi, self.n)


def local_maxima(ts: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Interior local maxima of y[T] sampled at ts, each refined by the parabola through 3 samples."""
    i = np.flatnonzero((y[1:-1] > y[:-2]) & (y[1:-1] >= y[2:])) + 1
    y0, y1, y2 = y[i - 1], y[i], y[i + 1]
    denom = y0 - 2 * y1 + y2
    with np.errstate(invalid="ignore", divide="ignore"):
        off = np.where(denom < 0, 0.5 * (y0 - y2) / denom, 0.0)  # vertex offset in samples, |off| <= 1/2
    h = ts[1] - ts[0]
    return ts[i] + off * h, y1 - 0.25 * (y0 - y2) * off


def _grid(spec: BifurcationSpec) -> tuple[CompiledModel, int, np.ndarray, np.ndarray, np.ndarray]:
    """(model, state index, parameter values, params [n, m], u0 [n, ns]) of the spec."""
    from actors.sweep.jacobian import param_index
    model = resolve_model(spec.model)
    j = param_index(model, spec.parameter, "parameter")
    state = spec.state or model.state_names[0]
    if state not in model.state_names:
        raise InputError("state", f"{state!r} is not a state of {model.name}", ", ".join(model.state_names))
    values = spec.values()
    params = np.tile(model.param_vector(spec.params, "params"), (len(values), 1))
    params[:, j] = values
    u0 = np.tile(model.state_vector(spec.initial_state, "initial_state"), (len(values), 1))
    return model, model.state_names.index(state), values, params, u0


def check_bifurcation(spec: BifurcationSpec) -> CompiledModel:
    """Every name of `spec` against its model (model, parameter, state, params, initial_state,
    continuation starts), so a job reports a bad one before any work; the compiled model."""
    model = _grid(spec)[0]
    for i, start in enumerate(spec.continuation):
        model.state_vector(start.initial_state, f"continuation[{i}].initial_state")
    return model


def chunk_bounds(spec: BifurcationSpec) -> list[tuple[int, int]]:
    """[start, stop) of each chunk of `chunk_size` grid values."""
    return [(a, min(a + spec.chunk_size, spec.n)) for a in range(0, spec.n, spec.chunk_size)]


def diagram_chunk(spec: BifurcationSpec, start: int, stop: int) -> Chunk:
    """Grid values [start, stop): (dots, per-value rows), spectrum columns included when configured."""
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


def _spectrum_columns(spec: BifurcationSpec, model: CompiledModel, s: int, params: np.ndarray,
                      u0: np.ndarray) -> pd.DataFrame:
    """Per value: λ_1..λ_k (QR method, torch), the spectrum regime and the cycle period."""
    from actors.sweep.engine import solver_device
    from actors.sweep.lyapunov import classify_trajectories, lyapunov_spectrum

    cfg = spec.spectrum
    k = min(cfg.k, len(model.state_names))
    res = lyapunov_spectrum(model, params, u0, t_transient=cfg.t_transient, t_measure=cfg.t_measure, dt=cfg.dt,
                            k=k, renorm_every=cfg.renorm_every, section_state=s, blowup_bound=cfg.blowup_bound,
                            device=solver_device(spec.solver))
    out = classify_trajectories(res, zero_tol=cfg.zero_tol, chaos_threshold=cfg.chaos_threshold,
                                fixed_point_tol=cfg.fixed_point_tol, section_tol=cfg.section_tol)
    cols = {f"lambda_{i + 1}": out["exponents"][:, i] for i in range(k)}  # whole-return where available
    cols.update(spectrum_regime=out["regime"].astype(str), period=out["period"], section_order=out["section_order"])
    return pd.DataFrame(cols)


def _in_process(spec: BifurcationSpec, bounds: Sequence[tuple[int, int]]) -> list[Chunk]:
    return [diagram_chunk(spec, a, b) for a, b in bounds]


def diagram_points(spec: BifurcationSpec, *, map_chunks: ChunkMap | None = None) -> Chunk:
    """(dots, per-value table) over the whole grid, chunk by chunk here or through `map_chunks`.

    Chunks are independent and deterministic, so any `map_chunks` (e.g. the Ray pool's) gives the
    same tables as the in-process run.
    """
    _grid(spec)  # validate names before scheduling anything
    parts = (map_chunks or _in_process)(spec, chunk_bounds(spec))
    return (pd.concat([d for d, _ in parts], ignore_index=True),
            pd.concat([r for _, r in parts], ignore_index=True))


def first_oscillating(per_row: pd.DataFrame, parameter: str) -> float | None:
    """Smallest grid value from which every larger one oscillates (the onset, e.g. a Hopf), or None."""
    osc = per_row["regime"].isin(OSCILLATING).to_numpy()
    if not osc.any() or not osc[-1]:
        return None
    start = len(osc) - np.argmin(osc[::-1]) if not osc.all() else 0
    return float(per_row[parameter].iloc[start])


def overlay_branches(spec: BifurcationSpec) -> list[Branch]:
    """The continuation branches the spec asks to overlay, over the diagram's parameter range."""
    from actors.sweep.continuation import continue_equilibria

    if not spec.continuation:
        return []
    return continue_equilibria(ContinuationSpec(
        name=spec.name, model=spec.model, parameter=spec.parameter, params=spec.params, bounds=(spec.lo, spec.hi),
        branches=spec.continuation, settings=spec.continuation_settings))


def summarize(spec: BifurcationSpec, dots: pd.DataFrame, per_row: pd.DataFrame, branches: Sequence[Branch],
              out_dir: Path, simulate_seconds: float, wall_seconds: float) -> dict:
    """summary.json: counts per regime, the oscillation onset, the located special points, timings."""
    return {"name": spec.name, "model": model_label(spec.model), "parameter": spec.parameter, "state": dots.columns[1],
            "out_dir": str(out_dir), "n_values": spec.n, "grid_spacing": (spec.hi - spec.lo) / (spec.n - 1),
            "n_dots": len(dots), "regime_counts": per_row["regime"].value_counts().to_dict(),
            "first_oscillating": first_oscillating(per_row, spec.parameter),
            "special_points": [{"kind": p.kind, "param": p.param, "branch": i}
                               for i, b in enumerate(branches) for p in b.special],
            "spectrum_regime_counts": (per_row["spectrum_regime"].value_counts().to_dict()
                                       if "spectrum_regime" in per_row else None),
            "simulate_seconds": round(simulate_seconds, 3), "wall_seconds": round(wall_seconds, 3)}


def write_diagram(spec: BifurcationSpec, out_dir: str | Path, *, map_chunks: ChunkMap | None = None) -> dict:
    """Integrate, collect maxima, continue the overlay branches, write the outputs atomically, return
    the summary (also DIR/summary.json)."""
    from actors.sweep.plots import bifurcation_diagram

    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    dots, per_row = diagram_points(spec, map_chunks=map_chunks)
    t_sim = time.perf_counter() - t0
    branches = overlay_branches(spec)
    atomic_write_parquet(out_dir / "bifurcation.parquet", dots)
    atomic_write_parquet(out_dir / "trajectories.parquet", per_row)
    bifurcation_diagram(spec, dots, branches, out_dir / "bifurcation.png", per_row)
    summary = summarize(spec, dots, per_row, branches, out_dir, t_sim, time.perf_counter() - t0)
    atomic_write_json(out_dir / "summary.json", summary)
    return summary
