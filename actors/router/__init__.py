"""router: route each request to one of K models (engines) by an energy of cost, quality, latency,
uncertainty and context fit, with Boltzmann selection; its thermodynamics, online learning, batch
assignment by parallel tempering, and its evaluation on replayed outcomes (RouteLLM protocol).

    from actors.router import load_routes, prompt_embeddings, token_estimate, fit_router, boltzmann
    data = load_routes(["gsm8k.parquet", "mmlu.parquet"])          # shared schema, decontaminated
    router = load_router("runs/route_eval/router")                  # written by jobs.route_eval
    terms, E, decision, p, domain = router.decide(embeddings, n_tokens)
    decision.p, decision.free_energy, decision.entropy               # [N, K], [N], [N]
    m = evaluate_scores(scores, Outcomes.from_rows(strong, weak))    # m.apgr, m.cpt["50"], m.cost_saving

Engine modules (no Ray). Thermodynamics (docs/router.md "Thermodynamics"): energy (EnergyTerms,
energies, fit_weights), posterior (BetaPosterior), boltzmann (exact selection) with schedules,
problems + ladder (parallel tempering in torch), bandit (Thompson online mode, regret, drift),
te_signal + online + te_ablation (the TE routing signal in the router's online mode, its ablation).
Evaluation and serving: config (RouteEvalSpec), data (routing Parquet files), features (prompt
embeddings, cached), predictor (P(strong better), KMeans domains), router (the composed router and its
ablations, saved as JSON + npz), metrics (APGR, CPT, cost saving, bootstrap), evaluate (held-out
folds), report / plots (the job's files). Ray wrappers, imported by their module path:
actor.ReplicaLadder (a BaseWorker) and pool.run_assignments. The names below are imported on first
use, so `import actors.router.data` stays light (no torch, no sklearn) and nothing here imports Ray.
"""
from __future__ import annotations

from actors.common.lazy import lazy_exports

_EXPORTS = {
    # thermodynamics (helper R1)
    "actors.router.energy": ("FACTORS", "SIGNS", "EnergyTerms", "EnergyWeights", "WeightFit", "energies",
                             "fit_weights", "neg_log_likelihood"),
    "actors.router.posterior": ("BetaPosterior",),
    "actors.router.boltzmann": ("Decision", "boltzmann", "sample"),
    "actors.router.schedules": ("AdaptiveSchedule", "SwapStats", "exponential_schedule", "fokker_planck_moments",
                                "fokker_planck_paths", "geometric_ladder", "logarithmic_schedule",
                                "replica_exchange_schedule", "swap_probability"),
    "actors.router.ladder": ("AnnealResult", "AssignmentResult", "LadderConfig", "LadderPoolSpec", "LadderResult",
                             "anneal_assignment", "gelman_rubin", "resolve_device", "run_ladder", "simulated_annealing",
                             "solve_assignment"),
    "actors.router.problems": ("AssignmentInstance", "AssignmentProblem", "CategoricalProblem", "DoubleWellProblem",
                               "IsingProblem", "assignment_milp", "ising_exact", "random_assignment"),
    "actors.router.bandit": ("Alarm", "BanditStream", "PageHinkley", "ReplayResult", "ThompsonRouter", "regret_slope",
                             "replay", "replay_stream", "synthetic_stream"),
    # evaluation and serving (helper R2)
    "actors.router.config": ("ABLATIONS", "Ablation", "DomainConfig", "EmbeddingConfig", "EnergyConfig", "EvalConfig",
                             "ModelCard", "PlantedKind", "PredictorConfig", "PredictorKind", "RouteEvalSpec",
                             "TEAblationConfig", "TEFeatureConfig", "TE_METHODS"),
    "actors.router.data": ("ALL_MMLU_DOMAINS", "COLUMNS", "RouteData", "load_routes", "rewards", "routellm_order",
                           "validate_frame"),
    "actors.router.features": ("CHARS_PER_TOKEN", "PROMPT_STATS", "prompt_embeddings", "prompt_stats", "token_estimate"),
    "actors.router.predictor": ("Domains", "StrongWinPredictor", "fit_domains", "fit_predictor", "strong_better"),
    "actors.router.router": ("METHODS", "Router", "fit_router", "load_router", "save_router"),
    "actors.router.metrics": ("Curve", "Outcomes", "RouterMetrics", "apgr", "averaged_curve", "bootstrap", "calls_at",
                              "cpt", "evaluate_scores", "metrics_of_curve", "oracle_apgr_closed_form", "oracle_curve",
                              "random_metrics", "random_scores", "threshold_curve"),
    "actors.router.evaluate": ("FoldResult", "Prepared", "assign_folds", "check_disjoint", "cross_validate", "fit_all",
                               "fit_and_score", "prepare", "run_fold", "summarize"),
    "actors.router.te_signal": ("TEFeature", "advantage_surprise", "check_config", "min_window", "pair_te",
                                "quality_series", "window_te"),
    "actors.router.online": ("ONLINE_METHODS", "OnlineRun", "online_stream"),
    "actors.router.te_ablation": ("ablation_markdown", "plant", "run_te_ablation", "stream_stats"),
    "actors.router.report": ("ablation_table", "metrics_table", "targets", "write_outputs"),
    "actors.router.plots": ("curve_png",),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
