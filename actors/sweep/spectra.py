"""Full Lyapunov spectra for a few selected points of a sweep (the `analysis.spectrum` block).

Pure compute, no Ray: the pool runs `spectra_table` on one SweepWorker (its GPU when it has one).
Why only a few points: the QR method integrates n tangent vectors with fixed steps, far more work
per trajectory than the sweep's adaptive integration with one twin; a sample (or the documented
reference points) is what tells a torus from a cycle and checks the sweep's labels.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from actors.sweep.config import SpectrumAnalysis, SweepSpec
from actors.sweep.engine import grid_points
from actors.sweep.lyapunov import classify_trajectories, lyapunov_spectrum
from actors.sweep.models import resolve_model


def select_points(spec: SweepSpec, cfg: SpectrumAnalysis) -> pd.DataFrame:
    """The rows to analyse: columns source (grid/reference), point (-1 for reference), name, params, u0."""
    model = resolve_model(spec.model)
    rows = []
    n = min(cfg.sample, spec.n_points)
    if n:
        # sorted, seeded draw: the same spec selects the same points on every run and resume
        idx = np.sort(np.random.default_rng(cfg.seed).choice(spec.n_points, size=n, replace=False))
        for i in idx:
            p, u = grid_points(spec, int(i), int(i) + 1)
            rows.append(("grid", int(i), f"point {int(i)}", p[0], u[0]))
    if cfg.reference_points:
        for ref in model.spec.reference_points:
            rows.append(("reference", -1, ref.name, model.param_vector(ref.params, "analysis.spectrum"),
                         model.state_vector(ref.initial_state, "analysis.spectrum")))
    frame = pd.DataFrame({"source": [r[0] for r in rows], "point": [r[1] for r in rows],
                          "name": [r[2] for r in rows]})
    params = np.stack([r[3] for r in rows]) if rows else np.zeros((0, len(model.param_names)))
    u0 = np.stack([r[4] for r in rows]) if rows else np.zeros((0, len(model.state_names)))
    for j, name in enumerate(model.param_names):
        frame[name] = params[:, j]
    for j, name in enumerate(model.state_names):
        frame[f"{name}_0"] = u0[:, j]
    return frame


def spectra_table(spec: SweepSpec, *, device: str = "cpu") -> pd.DataFrame:
    """Spectrum (lambda_1 >= ... >= lambda_k, their sum) of each selected point, plus regime columns.

    With `classify`, adds regime_spectrum / period / section_order from classify_spectrum: the
    labels the sweep's one-exponent rule cannot give (quasi-periodic, a cycle's period and order).
    """
    cfg = spec.analysis.spectrum
    model = resolve_model(spec.model)
    frame = select_points(spec, cfg)
    params = frame[model.param_names].to_numpy(dtype=np.float64)
    u0 = frame[[f"{s}_0" for s in model.state_names]].to_numpy(dtype=np.float64)
    result = lyapunov_spectrum(model, params, u0, t_transient=cfg.t_transient, t_measure=cfg.t_measure,
                               dt=cfg.dt, k=cfg.k, section_state=0 if cfg.classify else None,
                               blowup_bound=cfg.blowup_bound, device=device)
    exps = result.exponents
    if cfg.classify:
        labels = classify_trajectories(result, zero_tol=cfg.zero_tol, chaos_threshold=cfg.chaos_threshold,
                                       fixed_point_tol=cfg.fixed_point_tol, section_tol=cfg.section_tol)
        exps = labels["exponents"]
    for j in range(exps.shape[1]):
        frame[f"lambda_{j + 1}"] = exps[:, j]
    frame["lambda_sum"] = exps.sum(axis=1)
    frame["blowup"] = result.blowup
    if cfg.classify:
        frame["regime_spectrum"] = labels["regime"].astype(str)
        frame["period"] = labels["period"]
        frame["section_order"] = labels["section_order"]
    return frame
