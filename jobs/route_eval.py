"""Router evaluation on replayed strong/weak outcomes (RouteLLM protocol), held-out by subject.

    python -m jobs.route_eval --data ../shared/data/routellm/gsm8k.parquet \\
        --data ../shared/data/routellm/mmlu.parquet --out runs/route_eval [--online] [--no-ray]
    python -m jobs.route_eval --train FILE.parquet --data HELD_OUT.parquet --out DIR
    python -m jobs.route_eval --data FILE [--data FILE2] --out DIR --te-ablation [--no-ray]
    ray job submit --working-dir . -- python -m jobs.route_eval --data FILE --out DIR

parse -> spec and data (checked before Ray starts) -> embeddings (cached) -> folds -> metrics -> write.

Without --train: cross-validation over the --data files (MMLU: GroupKFold over subjects; GSM8K, one
category: prompt-level folds); each fold is scored by a router fitted on the other folds only.
With --train: fitted on the --train files, every --data route scored (nothing fitted on them unless
--online, where the posteriors learn from the evaluated routes' bandit feedback as they are decided).
Writes DIR/scores.parquet (route_id, score = propensity to call the strong model, one column per
ablation), DIR/metrics.json (per benchmark: APGR, CPT(20/50/80%), cost saving at 95 % of strong
quality, bootstrap CIs, the baselines, the targets met), DIR/curve.png, DIR/metrics.md,
DIR/ablations.md, and DIR/router/ (the router fitted on all --train, else all --data, routes:
what `serve run serve.router:build_app model=DIR/router` loads). With Ray (the default) the folds
run as Ray tasks; --no-ray runs them in this process.

--te-ablation (implies --online; no cross-validation): the online router with and without the TE
feature (actors/router/te_ablation.py) on seeded streams of each --data benchmark's routes not fitted
on, as recorded (stationary) and with a planted switch; writes DIR/te_ablation.json, DIR/te_ablation.md
and DIR/summary.json (settings: the spec's `te` and `te_ablation`, e.g. --set te_ablation.seeds=8).
"""
from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

from actors.common.errors import InputError
from actors.common.storage import atomic_write_json, claim_out_dir
from actors.router.config import TE_METHODS, RouteEvalSpec
from actors.router.data import RouteData, load_routes
from actors.router.evaluate import (
    STRONG,
    Prepared,
    check_disjoint,
    cross_validate,
    fit_all,
    fit_and_score,
    prepare_routes,
    run_fold,
    summarize,
)
from actors.router.report import write_outputs
from actors.router.router import save_router
from actors.router.te_signal import check_config
from jobs import cli

SUMMARY_KEYS = ("out_dir", "files", "n_routes", "protocol", "wall_seconds", "headline", "outputs")


def _fingerprint(paths: list[str]) -> list[dict]:
    return [{"file": Path(p).name, "sha256": hashlib.sha256(Path(p).read_bytes()).hexdigest()[:16]} for p in paths]


def _ray_folds(spec: RouteEvalSpec):
    """The folds as Ray tasks (one CPU each by default), the prepared arrays shared through the object store."""
    import ray

    task = ray.remote(num_cpus=spec.workers.num_cpus, max_retries=spec.workers.max_task_retries)(run_fold)

    def run(prep: Prepared, folds: list[int]) -> list:
        ref = ray.put(prep)
        return ray.get([task.remote(ref, k, spec) for k in folds])

    return run


def run(spec: RouteEvalSpec, data: RouteData, train: RouteData | None, out_dir: str | Path, *,
        use_ray: bool = False) -> dict:
    """Score every route held out, compute the metrics, write every output; returns the summary."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    files = list(data.files) + list(train.files if train else ())
    claim_out_dir(out_dir, {"spec": spec.model_dump(mode="json"), "data": _fingerprint(list(data.files)),
                            "train": _fingerprint(list(train.files)) if train else None}, "route evaluation")
    prep = prepare_routes(data, spec)
    if train is None:
        map_folds = _ray_folds(spec) if use_ray else None
        scores, results = cross_validate(prep, spec, map_folds)
        fit_on = prep
        protocol = "cross-validation: " + ", ".join(f"{b} by {k}" for b, k in prep.fold_kind.items())
    else:
        fit_on = prepare_routes(train, spec)
        scores, results = fit_and_score(fit_on, prep, spec)
        protocol = f"fitted on {', '.join(Path(f).name for f in train.files)}; scored held-out files"
    if spec.online:
        protocol += "; online: posteriors learn from the evaluated routes' bandit feedback"
    summary = summarize(prep, scores, spec, results)
    save_router(fit_all(fit_on, spec), out_dir / "router")
    summary.update({"name": spec.name, "protocol": protocol, "spec": spec.model_dump(mode="json"),
                    "data": {"files": files, "n_rows": int(len(data.frame)), "n_routes": int(len(prep.routes)),
                             "dropped_contaminated": data.dropped_contaminated,
                             "strong_model": data.strong_model, "weak_model": data.weak_model},
                    "strong_index": STRONG})
    outputs = write_outputs(out_dir, scores, summary, title=f"{spec.name}: {protocol}")
    headline = {b: {k: round(r["routers"][n][k], 4) for n, k in (("router", "apgr"), ("router", "cpt_50"),
                                                                  ("router", "cost_saving"))}
                | {"random_apgr": round(r["routers"]["random"]["apgr"], 4) if "random" in r["routers"] else None}
                for b, r in summary["benchmarks"].items()}
    result = {"out_dir": str(out_dir), "files": files, "n_routes": int(len(prep.routes)), "protocol": protocol,
              "headline": headline, "outputs": outputs | {"router": str(out_dir / "router")},
              "wall_seconds": round(time.perf_counter() - t0, 2)}
    atomic_write_json(out_dir / "summary.json", result)
    return result


def run_te(spec: RouteEvalSpec, data: RouteData, out_dir: str | Path) -> dict:
    """The TE feature's ablation (stationary and planted streams); writes its table and numbers."""
    from actors.common.storage import atomic_write_text
    from actors.router.te_ablation import ablation_markdown, run_te_ablation

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    claim_out_dir(out_dir, {"spec": spec.model_dump(mode="json"), "data": _fingerprint(list(data.files)),
                            "te_ablation": True}, "TE ablation")
    prep = prepare_routes(data, spec)
    result = run_te_ablation(prep, spec)
    result["data"] = {"files": list(data.files), "n_routes": int(len(prep.routes))}
    atomic_write_json(out_dir / "te_ablation.json", result)
    atomic_write_text(out_dir / "te_ablation.md", ablation_markdown(result))
    headline = {b: {sc: {m: round(r["scenarios"][sc][m]["apgr"], 4) for m in ("energy", "energy_te", "energy_recency")}
                    for sc in r["scenarios"]} for b, r in result["benchmarks"].items()}
    summary = {"out_dir": str(out_dir), "files": list(data.files), "n_routes": int(len(prep.routes)),
               "protocol": "TE ablation: online streams, stationary and planted", "headline": headline,
               "outputs": {"json": str(out_dir / "te_ablation.json"), "table": str(out_dir / "te_ablation.md")},
               "wall_seconds": round(time.perf_counter() - t0, 2)}
    atomic_write_json(out_dir / "summary.json", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = cli.job_parser(__doc__, config_help="router eval YAML (configs/router/*.yaml); default settings if omitted",
                        config_required=False, set_example="eval.n_bootstrap=200 energy.temperature=0.5")
    ap.add_argument("--data", action="append", required=True, help="Parquet file in the shared routing schema "
                    "(repeatable): the routes evaluated")
    ap.add_argument("--train", action="append", default=None, help="Parquet file(s) to fit on instead of "
                    "cross-validating over --data (repeatable)")
    ap.add_argument("--online", action="store_true", help="posteriors learn from the evaluated routes' feedback")
    ap.add_argument("--te-ablation", action="store_true", help="the TE feature's ablation on online streams "
                    "(stationary and planted) instead of the cross-validation; implies --online")
    ap.add_argument("--no-ray", action="store_true", help="run the folds in this process (no Ray)")
    args = ap.parse_args(argv)

    def load() -> tuple[RouteEvalSpec, RouteData, RouteData | None]:
        """The spec and the checked data, both before Ray starts."""
        overrides = cli.parse_set(args.set) | ({"online": True} if args.online or args.te_ablation else {})
        spec = cli.load_spec(RouteEvalSpec, args.config, overrides)
        data = load_routes(args.data, max_rows=spec.max_rows, seed=spec.eval.seed)
        train = load_routes(args.train, max_rows=spec.max_rows, seed=spec.eval.seed) if args.train else None
        if train is not None:
            if args.te_ablation:
                raise InputError("train", "--te-ablation fits on a share of --data", "no --train with --te-ablation")
            check_disjoint(train, data)
        if args.te_ablation or any(a in TE_METHODS for a in spec.ablations):
            check_config(spec.te)          # te.window long enough for the estimator, before any work
        return spec, data, train

    def go(loaded: tuple) -> dict:
        if args.te_ablation:
            return run_te(loaded[0], loaded[1], args.out)
        return run(*loaded, args.out, use_ray=not args.no_ray)

    return cli.run_job(load, go,
                       address=args.address, ray=not (args.no_ray or args.te_ablation), keys=SUMMARY_KEYS)


if __name__ == "__main__":
    sys.exit(main())
