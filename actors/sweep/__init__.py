"""sweep: ODE ensembles over parameter grids, attractor classification, Lyapunov exponents, bifurcation
diagrams and continuation of equilibria.

    from actors.sweep import simulate, get_model, TorchSolver
    res = simulate("lorenz", params, u0, TorchSolver(rtol=1e-8))   # res.regime, res.attractor, res.raw
    from actors.sweep.pool import run_sweep                          # the Ray pool (imports Ray)
    summary = run_sweep(spec, "runs/x")

Engine modules (no Ray): config (SweepSpec; the solver block, one class per backend), models (models
as data: presets in configs/models/*.yaml, registered, inline or from a file; the safe expression
parser is in modelspec), engine (simulate, grids), regime (the label rule), scipy_backend,
jacobian, lyapunov (QR spectra), spectra (a sweep's `analysis.spectrum`), continuation (equilibrium
branches and their bifurcations), bifurcation (diagrams), plots (every figure). Ray wrappers, imported
by their module path: actor.SweepWorker (a BaseWorker) and pool (run_sweep with resume, run_spectra,
run_bifurcation). The names below are imported on first use, so `import actors.sweep.config` stays
light (no torch, no SymPy) and nothing here imports Ray.
"""
from __future__ import annotations

from actors.common.lazy import lazy_exports

_EXPORTS = {
    "actors.sweep.config": ("AnalysisConfig", "AutoSolver", "Axis", "PoincareConfig", "SaveConfig", "ScipySolver",
                            "SolverConfig", "SpectrumAnalysis", "SweepSpec", "TorchSolver", "TritonSolver",
                            "make_solver"),
    "actors.sweep.models": ("CompiledModel", "ModelSpec", "compile_model", "get_model", "load_model_file",
                            "model_names", "register_model", "register_model_file", "resolve_model", "ship_model"),
    "actors.sweep.engine": ("SimulationResult", "check_sweep", "grid_points", "resolve_backend", "simulate"),
    "actors.sweep.lyapunov": ("SpectrumSettings", "lyapunov_spectrum"),
    "actors.sweep.continuation": ("Branch", "ContinuationSpec", "continue_equilibria", "write_continuation"),
    "actors.sweep.bifurcation": ("BifurcationSpec", "diagram_points", "write_diagram"),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
