"""Ray Tune search over the router's energy weights, predictor and domains, maximising held-out APGR.

Protocol (nothing is tuned on the routes it is judged on):

1. Outer split: `assign_folds` over every route with `outer_folds` folds (MMLU by subject, GSM8K by
   prompt); fold `test_fold` is the test split. The search never sees it.
2. Each trial: the base spec with the trial's values; an inner cross-validation over the remaining
   routes (`inner_folds`, again MMLU by subject). Iteration k reports fold k's APGR (mean over the
   benchmarks) and `apgr`, the running mean over the folds done so far. ASHA's rungs are the folds:
   a configuration must do well on the first folds before the rest are spent on it. Optuna's TPE
   (seeded) proposes.
3. The best trial (highest `apgr` among those that ran every inner fold) and the base spec are each
   fitted on all inner routes and score the test split; the report gives both with percentile-bootstrap
   CIs, the random router, and the paired CI of tuned minus base (the same resamples).

What is searched (`SearchSpace`): w_quality, w_uncertainty and rho (they set the ranking of the
energy difference between strong and weak; w_cost and w_latency only shift it by a constant and the
offline score is the Boltzmann P(strong), a monotone function of that difference, so neither they
nor T change an offline APGR), the number of KMeans domains and the predictor's L2 strength C. With
`base.online` the temperature is searched too (it sets how often the online router explores).

Engines import no Ray: this is a Tune study, Ray is imported inside `search`.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from actors.common.config import Strict
from actors.common.errors import InputError
from actors.common.storage import (
    atomic_write_figure,
    atomic_write_json,
    atomic_write_parquet,
    atomic_write_text,
)
from actors.router.config import RouteEvalSpec
from actors.router.evaluate import (
    Prepared,
    assign_folds,
    fit_and_score,
    fold_apgr,
    run_fold,
    subset,
    summarize,
)
from actors.router.metrics import bootstrap

__all__ = ["RouterSearchSpec", "SearchSpace", "inner_fold_apgr", "search", "split", "trainable", "trial_spec"]


class SearchSpace(Strict):
    """Bounds of each searched value ([lo, hi]; log-uniform where marked)."""

    w_quality: tuple[float, float] = (0.25, 16.0)           # log
    w_uncertainty: tuple[float, float] = (-4.0, 4.0)
    rho: tuple[float, float] = (0.0, 4.0)
    n_domains: tuple[int, int] = (2, 64)                    # log, integer
    predictor_C: tuple[float, float] = (0.01, 100.0)        # log
    temperature: tuple[float, float] = (0.01, 4.0)          # log; searched only with base.online

    @model_validator(mode="after")
    def _ordered(self) -> SearchSpace:
        for name in type(self).model_fields:
            lo, hi = getattr(self, name)
            if not lo < hi:
                raise InputError(name, f"lower bound {lo} is not below upper bound {hi}", "lo < hi")
        for name in ("w_quality", "n_domains", "predictor_C", "temperature"):
            if getattr(self, name)[0] <= 0:
                raise InputError(name, f"log-uniform bounds must be > 0, got {getattr(self, name)}",
                                 "0 < lo < hi")
        if self.n_domains[1] > 1024:
            raise InputError("n_domains", f"upper bound {self.n_domains[1]} is above 1024", "<= 1024")
        return self


class RouterSearchSpec(Strict):
    """What `jobs.tune_router` runs."""

    name: str = Field("router_search", min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.-]+$")
    base: RouteEvalSpec = Field(default_factory=RouteEvalSpec)
    space: SearchSpace = Field(default_factory=SearchSpace)
    num_samples: int = Field(24, ge=1, le=10_000)
    outer_folds: int = Field(5, ge=2, le=100)
    test_fold: int = Field(0, ge=0, le=99)
    inner_folds: int = Field(4, ge=2, le=100)
    scheduler: Literal["asha", "fifo"] = "asha"
    reduction_factor: int = Field(3, ge=2, le=16)
    n_startup_trials: int = Field(8, ge=1, le=10_000)       # TPE's random start
    max_concurrent_trials: int = Field(2, ge=1, le=1024)
    seed: int = Field(0, ge=0, le=2**32 - 1)

    @model_validator(mode="after")
    def _fold(self) -> RouterSearchSpec:
        if self.test_fold >= self.outer_folds:
            raise InputError("test_fold", f"{self.test_fold} is not a fold of {self.outer_folds}",
                             f"0..{self.outer_folds - 1}")
        return self


def trial_spec(base: RouteEvalSpec, config: dict[str, Any]) -> RouteEvalSpec:
    """The base spec with a trial's values; one method scored (the energy router), no ablations."""
    energy = base.energy.model_copy(update={k: float(config[k]) for k in ("w_quality", "w_uncertainty", "rho",
                                                                            "temperature") if k in config})
    return base.model_copy(update={
        "energy": energy,
        "domains": base.domains.model_copy(update={"n_domains": int(config.get("n_domains",
                                                                              base.domains.n_domains))}),
        "predictor": base.predictor.model_copy(update={"C": float(config.get("predictor_C", base.predictor.C))}),
        "ablations": ()})


def split(prep: Prepared, spec: RouterSearchSpec) -> tuple[Prepared, Prepared]:
    """(inner, test): the outer split by `assign_folds`; inner carries its own inner folds."""
    outer, kinds = assign_folds(prep.routes, spec.outer_folds, spec.seed)
    inner = subset(prep, np.flatnonzero(outer != spec.test_fold))
    test = subset(prep, np.flatnonzero(outer == spec.test_fold))
    inner.folds, inner.fold_kind = assign_folds(inner.routes, spec.inner_folds, spec.seed + 1)
    test.fold_kind = kinds
    return inner, test


def inner_fold_apgr(inner: Prepared, fold: int, spec: RouteEvalSpec) -> tuple[float, dict[str, float]]:
    """Fit on the other inner folds, score `fold`: (mean APGR over the benchmarks, APGR per benchmark)."""
    per_bench = fold_apgr(inner, run_fold(inner, fold, spec), spec)
    return (float(np.mean(list(per_bench.values()))) if per_bench else float("nan")), per_bench


def trainable(config: dict[str, Any], inner: Prepared, base: RouteEvalSpec, inner_folds: int) -> None:
    """Tune function trainable: iteration k fits on the other inner folds and scores inner fold k."""
    from ray import tune

    spec = trial_spec(base, config)
    done: list[float] = []
    for k in range(inner_folds):
        value, per_bench = inner_fold_apgr(inner, k, spec)
        done.append(value)
        tune.report({"apgr": float(np.nanmean(done)), "fold_apgr": value, "folds_done": k + 1,
                     **{f"apgr_{b}": v for b, v in per_bench.items()}})


def _param_space(spec: RouterSearchSpec) -> dict[str, Any]:
    from ray import tune

    s = spec.space
    space = {"w_quality": tune.loguniform(*s.w_quality), "w_uncertainty": tune.uniform(*s.w_uncertainty),
             "rho": tune.uniform(*s.rho), "n_domains": tune.lograndint(s.n_domains[0], s.n_domains[1] + 1),
             "predictor_C": tune.loguniform(*s.predictor_C)}
    if spec.base.online:
        space["temperature"] = tune.loguniform(*s.temperature)
    return space


def _tune(spec: RouterSearchSpec, inner: Prepared, storage_path: Path):
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    sampler = optuna.samplers.TPESampler(seed=spec.seed, multivariate=True,
                                         n_startup_trials=min(spec.n_startup_trials, spec.num_samples))
    searcher = OptunaSearch(metric="apgr", mode="max", sampler=sampler)
    scheduler = (ASHAScheduler(metric="apgr", mode="max", time_attr="training_iteration", max_t=spec.inner_folds,
                               grace_period=1, reduction_factor=spec.reduction_factor)
                 if spec.scheduler == "asha" else FIFOScheduler())
    runnable = tune.with_resources(tune.with_parameters(trainable, inner=inner, base=spec.base,
                                                        inner_folds=spec.inner_folds), {"cpu": 1})
    tuner = tune.Tuner(
        runnable, param_space=_param_space(spec),
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=spec.num_samples,
                                    max_concurrent_trials=spec.max_concurrent_trials),
        run_config=tune.RunConfig(storage_path=str(storage_path.resolve()), name=spec.name, verbose=0))
    return tuner.fit()


def _trials(grid, space_keys: list[str]) -> list[dict[str, Any]]:
    rows = []
    for r in grid:
        m = r.metrics or {}
        if r.error is not None or "apgr" not in m:
            continue
        rows.append({**{k: r.config[k] for k in space_keys}, "apgr": float(m["apgr"]),
                     "folds_done": int(m["folds_done"]), "trial_id": str(m.get("trial_id", ""))})
    return rows


def _test_metrics(inner: Prepared, test: Prepared, tuned: RouteEvalSpec, base: RouteEvalSpec) -> dict:
    """Both specs fitted on every inner route, scored on the test split; paired bootstrap of the gap."""
    kinds = dict(test.fold_kind or {})           # fit_and_score relabels the test split's folds
    scored = {}
    for name, s in (("tuned", tuned), ("base", base)):
        s = s.model_copy(update={"ablations": ("random",)})
        frame, results = fit_and_score(inner, test, s)
        scored[name] = (frame, summarize(test, frame, s, results))
    ev = base.eval
    out: dict[str, Any] = {}
    for b, o in test.outcomes.items():
        sel = (scored["base"][0]["benchmark"] == b).to_numpy()
        pair = {n: scored[n][0].loc[sel, "score"].to_numpy(np.float64) for n in ("tuned", "base")}
        boot = bootstrap(pair, o, n_boot=ev.n_bootstrap, seed=ev.seed, n_bins=ev.n_bins, levels=tuple(ev.cpt_levels),
                         quality_target=ev.quality_target, confidence=ev.confidence, paired_with="base")
        rb, rt = scored["base"][1]["benchmarks"][b]["routers"], scored["tuned"][1]["benchmarks"][b]["routers"]
        out[b] = {"n_routes": int(o.gain.size), "folds": kinds.get(b),
                  "tuned": {k: rt["router"][k] for k in ("apgr", "cpt_50", "cost_saving", "ci")},
                  "base": {k: rb["router"][k] for k in ("apgr", "cpt_50", "cost_saving", "ci")},
                  "random": {k: rb["random"][k] for k in ("apgr", "cpt_50", "cost_saving", "ci")},
                  "tuned_minus_base_ci": boot["vs_base"]["tuned"]}
    return out


def search(prep: Prepared, spec: RouterSearchSpec, out_dir: Path) -> dict:
    """Run the study on the inner split, judge the best trial and the base spec on the test split."""
    t0 = time.perf_counter()
    inner, test = split(prep, spec)
    grid = _tune(spec, inner, out_dir / "tune")
    keys = list(_param_space(spec))
    trials = _trials(grid, keys)
    full = [t for t in trials if t["folds_done"] == spec.inner_folds and math.isfinite(t["apgr"])]
    if not full:
        raise RuntimeError(f"Tune study {spec.name!r}: no trial ran every inner fold")
    best = max(full, key=lambda t: t["apgr"])
    tuned = trial_spec(spec.base, best)
    base_inner = _base_inner_apgr(inner, spec)
    result = {"name": spec.name, "n_trials": len(trials), "n_full": len(full),
              "n_routes": {"inner": int(len(inner.routes)), "test": int(len(test.routes))},
              "best": {k: best[k] for k in keys} | {"inner_apgr": best["apgr"]}, "base_inner_apgr": base_inner,
              "test": _test_metrics(inner, test, tuned, spec.base.model_copy(update={"ablations": ()})),
              "tuned_spec": tuned.model_dump(mode="json"), "spec": spec.model_dump(mode="json"),
              "wall_seconds": round(time.perf_counter() - t0, 2)}
    write_outputs(out_dir, trials, result)
    return result


def _base_inner_apgr(inner: Prepared, spec: RouterSearchSpec) -> float:
    """The base spec's inner CV APGR (the same folds and statistic as every trial's `apgr`)."""
    base = trial_spec(spec.base, {})
    return float(np.nanmean([inner_fold_apgr(inner, k, base)[0] for k in range(spec.inner_folds)]))


def report_md(result: dict) -> str:
    """The test-split table: tuned vs base vs random, with CIs and the paired gap."""
    lines = [f"# {result['name']}: tuned vs base on the held-out test split", "",
             f"{result['n_trials']} trials ({result['n_full']} ran every inner fold); inner routes "
             f"{result['n_routes']['inner']}, test routes {result['n_routes']['test']}; inner APGR best "
             f"{result['best']['inner_apgr']:.4f} vs base {result['base_inner_apgr']:.4f}.", "",
             "best: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                  for k, v in result["best"].items() if k != "inner_apgr"), "",
             "| benchmark | split | router | APGR [95% CI] | CPT(50%) | saving @95% |", "|---|---|---|---|---|---|"]
    for b, r in result["test"].items():
        for name in ("tuned", "base", "random"):
            m = r[name]
            lo, hi = m["ci"]["apgr"]
            lines.append(f"| {b} | {r['folds']} | {name} | {m['apgr']:.4f} [{lo:.4f}, {hi:.4f}] | "
                         f"{100 * m['cpt_50']:.1f}% | {100 * m['cost_saving']:.1f}% |")
        lo, hi = r["tuned_minus_base_ci"]["apgr"]
        lines.append(f"| {b} | | tuned - base (paired) | [{lo:+.4f}, {hi:+.4f}] | | |")
    return "\n".join(lines) + "\n"


def write_outputs(out_dir: Path, trials: list[dict], result: dict) -> None:
    """search.json, search.md, trials.parquet, search.png (each trial's inner APGR, best and base marked)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    atomic_write_json(out_dir / "search.json", result)
    atomic_write_text(out_dir / "search.md", report_md(result))
    atomic_write_parquet(out_dir / "trials.parquet", pd.DataFrame(trials))
    fig, ax = plt.subplots(figsize=(7, 4))
    full = [t for t in trials if t["folds_done"] == max(x["folds_done"] for x in trials)]
    ax.scatter(range(len(trials)), [t["apgr"] for t in trials], s=14, c="0.6", label="trial (running inner APGR)")
    ax.scatter([trials.index(t) for t in full], [t["apgr"] for t in full], s=18, c="C0", label="ran every fold")
    ax.axhline(result["base_inner_apgr"], color="C3", ls="--", label="base spec")
    ax.set_xlabel("trial")
    ax.set_ylabel("inner CV APGR (mean over benchmarks)")
    ax.legend(fontsize=8)
    ax.set_title(result["name"])
    atomic_write_figure(out_dir / "search.png", fig)
    plt.close(fig)
