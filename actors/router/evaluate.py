"""Held-out evaluation of the router on replayed outcomes: folds, per-fold fit and scores, metrics with
baselines, bootstrap CIs and the ablation table. No Ray (jobs.route_eval may run the folds as tasks).

Protocol:
- folds per benchmark: a benchmark with at least `n_folds` categories (MMLU subjects) is split by
  category with GroupKFold, so every subject is scored by a router that never saw any prompt of it;
  a benchmark with fewer categories (GSM8K is one category) is split at the prompt level (KFold,
  shuffled, seeded) — stated per benchmark in metrics.json (`folds`). Fold k of the run is the union
  of fold k of every benchmark; the router scoring fold k is fitted on the other folds only
  (predictor, domains, posteriors). Nothing is fitted on the evaluated fold, except with `online`:
  then the posteriors also learn, in a seeded random order, from the bandit feedback of the fold's
  own routes as they are decided (only the chosen model's reward is seen), and each route's score
  is the one computed before its own feedback.
- with a separate training set (`fit_and_score`), the router is fitted on it and scores every
  evaluated route (nothing fitted on the evaluated files unless `online`).
- metrics per benchmark (actors/router/metrics.py): the router, its ablations, the random router,
  all-weak, all-strong, the oracle; percentile-bootstrap 95 % CIs over routes, and the paired
  difference from the random router.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from actors.common.budget import checkpoint
from actors.common.errors import InputError
from actors.router.config import RouteEvalSpec, TEFeatureConfig
from actors.router.data import RouteData, rewards
from actors.router.energy import energies
from actors.router.metrics import (
    Outcomes,
    bootstrap,
    evaluate_scores,
    metrics_of_curve,
    oracle_curve,
    random_metrics,
)
from actors.router.online import ONLINE_METHODS, online_stream
from actors.router.router import Router, fit_router

__all__ = ["FoldResult", "Prepared", "assign_folds", "check_disjoint", "cross_validate", "fit_all", "fit_and_score",
           "fold_apgr", "prepare", "prepare_routes", "run_fold", "subset", "summarize"]

WEAK, STRONG = 0, 1          # column order of every [N, K] array in the evaluation


@dataclass
class Prepared:
    """Per-route arrays of one evaluation (route order = RouteData.routes())."""

    routes: pd.DataFrame        # route_id, prompt, benchmark, category, n_rows
    E: np.ndarray               # [R, 384] embeddings of the first rows' prompts (+ 11 prompt_stats)
    n_tokens: np.ndarray        # [R]
    gain: np.ndarray            # [R] sum over the route's rows of strong - weak
    reward: np.ndarray          # [R, 2] mean reward in [0, 1] of (weak, strong) over the route's rows
    outcomes: dict[str, Outcomes]   # per benchmark, routes in order
    folds: np.ndarray | None = None
    fold_kind: dict[str, str] | None = None


def prepare(data: RouteData, E: np.ndarray, n_tokens: np.ndarray) -> Prepared:
    """Route-level arrays and per-benchmark outcomes from the loaded rows and the routes' features."""
    routes = data.routes()
    if E.shape[0] != len(routes):
        raise InputError("embeddings", f"{E.shape[0]} embeddings for {len(routes)} routes", "one per route")
    f = data.frame
    idx = data.row_route_index()
    n = len(routes)
    strong, weak = f["strong_score"].to_numpy(np.float64), f["weak_score"].to_numpy(np.float64)
    r_s, r_w = rewards(strong, weak, f["benchmark"].to_numpy())
    rows = np.bincount(idx, minlength=n).astype(np.float64)
    reward = np.stack([np.bincount(idx, weights=r_w, minlength=n) / rows,
                       np.bincount(idx, weights=r_s, minlength=n) / rows], axis=1)
    gain = np.bincount(idx, weights=strong - weak, minlength=n)
    outcomes = {}
    for b in data.benchmarks:
        m = (f["benchmark"] == b).to_numpy()
        s, w = strong[m], weak[m]
        scale = 100.0 if (min(s.min(), w.min()) >= 0 and max(s.max(), w.max()) <= 1) else 1.0
        route_ids = np.flatnonzero((routes["benchmark"] == b).to_numpy())
        local = np.searchsorted(route_ids, idx[m])
        outcomes[b] = Outcomes.from_rows(s, w, local, scale)
    return Prepared(routes, np.asarray(E, np.float64), np.asarray(n_tokens, np.float64), gain, reward, outcomes)


def prepare_routes(data: RouteData, spec: RouteEvalSpec) -> Prepared:
    """`prepare` with the routes' features computed here: first-row prompt embeddings (cached) and tokens;
    with `predictor.prompt_stats` the prompt statistics are appended to the embeddings."""
    from actors.router.features import prompt_embeddings, prompt_stats, token_estimate

    prompts = data.routes()["prompt"].tolist()
    E = prompt_embeddings(prompts, spec.embedding)
    if spec.predictor.prompt_stats:
        E = np.hstack([E, prompt_stats(prompts)])
    return prepare(data, E, token_estimate(prompts))


def subset(prep: Prepared, idx: np.ndarray) -> Prepared:
    """The routes at `idx` (sorted, no repeats) as a Prepared of their own, folds unassigned: a search's
    inner data (everything but its held-out test split) or that test split."""
    idx = np.unique(np.asarray(idx, np.int64))
    bench = prep.routes["benchmark"].to_numpy()
    outcomes = {}
    for b, o in prep.outcomes.items():
        own = np.flatnonzero(bench == b)
        keep = idx[bench[idx] == b]
        if keep.size:
            outcomes[b] = o.take(np.searchsorted(own, keep))
    return Prepared(prep.routes.iloc[idx].reset_index(drop=True), prep.E[idx], prep.n_tokens[idx], prep.gain[idx],
                    prep.reward[idx], outcomes)


def fold_apgr(prep: Prepared, res: FoldResult, spec: RouteEvalSpec, method: str = "energy") -> dict[str, float]:
    """APGR per benchmark of one fold's scores, on that fold's routes alone (a search's per-fold signal)."""
    bench = prep.routes["benchmark"].to_numpy()
    ev = spec.eval
    out = {}
    for b, o in prep.outcomes.items():
        own = np.flatnonzero(bench == b)
        sel = bench[res.index] == b
        if sel.sum() < ev.n_bins:
            continue                    # too few routes of b in this fold for a threshold sweep
        local = np.searchsorted(own, res.index[sel])
        m = evaluate_scores(res.scores[method][sel], o.take(local), ev.n_bins, tuple(ev.cpt_levels), ev.quality_target)
        out[b] = float(m.apgr)
    return out


def assign_folds(routes: pd.DataFrame, n_folds: int, seed: int = 0) -> tuple[np.ndarray, dict[str, str]]:
    """Fold id per route and the kind of split per benchmark ("category": GroupKFold over categories;
    "prompt": shuffled KFold over routes, for benchmarks with fewer categories than folds)."""
    from sklearn.model_selection import GroupKFold

    folds = np.full(len(routes), -1, np.int64)
    kinds = {}
    for b in dict.fromkeys(routes["benchmark"]):
        idx = np.flatnonzero((routes["benchmark"] == b).to_numpy())
        cats = routes["category"].to_numpy()[idx]
        if len(idx) < n_folds:
            raise InputError("eval.n_folds", f"benchmark {b!r} has {len(idx)} routes, fewer than {n_folds} folds",
                             f"<= {len(idx)}")
        if np.unique(cats).size >= n_folds:
            for k, (_, test) in enumerate(GroupKFold(n_splits=n_folds).split(idx, groups=cats)):
                folds[idx[test]] = k
            kinds[b] = "category"
        else:
            perm = np.random.default_rng(seed).permutation(len(idx))
            folds[idx[perm]] = np.arange(len(idx)) % n_folds
            kinds[b] = "prompt"
    return folds, kinds


@dataclass
class FoldResult:
    """Scores of the routes at `index` per method, and the predictor's held-out AUC."""

    fold: int
    index: np.ndarray
    scores: dict[str, np.ndarray]
    predictor_auc: float
    n_train: int
    n_domains: int


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties counted half; nan with one class."""
    from scipy.stats import rankdata

    y = np.asarray(y, bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _cards(spec: RouteEvalSpec) -> list:
    return [spec.weak, spec.strong]


def _fit(E, gain, reward, spec: RouteEvalSpec) -> Router:
    return fit_router(E, gain, reward, _cards(spec), STRONG, predictor=spec.predictor, domains=spec.domains,
                      energy=spec.energy)


def fit_all(prep: Prepared, spec: RouteEvalSpec) -> Router:
    """The router fitted on every route of `prep` (the deployable one; never used to score `prep`)."""
    return _fit(prep.E, prep.gain, prep.reward, spec)


def check_disjoint(train: RouteData, data: RouteData) -> None:
    """A separate training set must share no prompt or route with the evaluated files."""
    for col in ("prompt_id", "route_id", "prompt"):
        common = set(train.frame[col]) & set(data.frame[col])
        if common:
            raise InputError("train", f"{len(common)} {col} value(s) of the training files are also in --data "
                             f"(e.g. {sorted(common)[0][:80]!r})", "training files disjoint from the evaluated ones")


def _score_offline(router: Router, E, n_tokens, methods: Iterable[str], rng: np.random.Generator) -> dict:
    return {m: router.score(E, n_tokens, m, rng=rng) for m in methods}


def _score_online(router_factory: Callable[[], Router], E, n_tokens, reward, methods: Iterable[str],
                  seed: int, te: TEFeatureConfig | None = None) -> dict:
    """Each method with its own copy of the fitted posteriors, updated route by route from the chosen
    model's reward only (bandit feedback), in a seeded random order; scores before each update."""
    out = {}
    te = te or TEFeatureConfig()
    order = np.random.default_rng(seed).permutation(E.shape[0])
    for method in methods:
        router = router_factory()
        rng = np.random.default_rng(seed + 1)
        p_all, d_all = router.features(E)
        scores = np.empty(E.shape[0])
        if method in ONLINE_METHODS:                # the energy router, with or without the TE feature
            run = online_stream(router, p_all[order], d_all[order], np.asarray(n_tokens)[order],
                                np.asarray(reward)[order], method, te, rng)
            scores[order] = run.scores
            out[method] = scores
            continue
        for i in order:
            checkpoint()
            p, d = p_all[i:i + 1], d_all[i:i + 1]
            if method == "predictor":
                scores[i] = p[0]
                continue                          # no posterior: nothing to learn online
            theta = rng.beta(router.posterior.alpha[:, d[0]], router.posterior.beta[:, d[0]])   # thompson
            scores[i] = theta[STRONG] - theta[WEAK]
            q = router.posterior.mean().copy()
            q[:, d[0]] = theta
            en = energies(router.terms(p, d, n_tokens[i:i + 1], quality=q), router.weights)
            choice = int(np.argmin(en[0]))
            router.feedback(choice, int(d[0]), float(reward[i, choice]))
        out[method] = scores
    return out


def run_fold(prep: Prepared, fold: int, spec: RouteEvalSpec) -> FoldResult:
    """Fit on every fold but `fold`, score `fold` with the router and its ablations."""
    if prep.folds is None:
        raise InputError("folds", "prepare() output has no folds", "assign_folds first")
    test = np.flatnonzero(prep.folds == fold)
    train = np.flatnonzero(prep.folds != fold)
    if train.size == 0 or test.size == 0:
        raise InputError("eval.n_folds", f"fold {fold} leaves {train.size} training and {test.size} test routes",
                         "folds with both")
    checkpoint()
    router = _fit(prep.E[train], prep.gain[train], prep.reward[train], spec)
    methods = ["energy"] + [a for a in spec.ablations if a != "random"]
    E, nt = prep.E[test], prep.n_tokens[test]
    seed = spec.eval.seed * 1000 + fold
    if spec.online:
        scores = _score_online(lambda: _fit(prep.E[train], prep.gain[train], prep.reward[train], spec), E, nt,
                               prep.reward[test], methods, seed, spec.te)
    else:
        scores = _score_offline(router, E, nt, methods, np.random.default_rng(seed))
    p = router.predictor.predict(E)
    return FoldResult(fold, test, scores, _auc(prep.gain[test] > 0, p), int(train.size), router.domains.n_domains)


def cross_validate(prep: Prepared, spec: RouteEvalSpec,
                   map_folds: Callable[[Prepared, list[int]], list[FoldResult]] | None = None
                   ) -> tuple[pd.DataFrame, list]:
    """Out-of-fold scores of every route (one column per method) and the fold results. `map_folds`
    (prep with its folds assigned, fold ids) runs `run_fold` for each (default: in this process, in
    order; the job passes one that runs them as Ray tasks)."""
    if prep.folds is None:
        prep.folds, prep.fold_kind = assign_folds(prep.routes, spec.eval.n_folds, spec.eval.seed)
    folds = list(range(spec.eval.n_folds))
    results = map_folds(prep, folds) if map_folds is not None else [run_fold(prep, k, spec) for k in folds]
    return _scores_frame(prep, results), results


def fit_and_score(train: Prepared, test: Prepared, spec: RouteEvalSpec) -> tuple[pd.DataFrame, list]:
    """Fit on `train` (all of it), score every route of `test`; one pseudo-fold (-1)."""
    router = _fit(train.E, train.gain, train.reward, spec)
    methods = ["energy"] + [a for a in spec.ablations if a != "random"]
    if spec.online:
        scores = _score_online(lambda: _fit(train.E, train.gain, train.reward, spec), test.E, test.n_tokens,
                               test.reward, methods, spec.eval.seed, spec.te)
    else:
        scores = _score_offline(router, test.E, test.n_tokens, methods, np.random.default_rng(spec.eval.seed))
    res = FoldResult(-1, np.arange(len(test.routes)), scores, _auc(test.gain > 0, router.predictor.predict(test.E)),
                     len(train.routes), router.domains.n_domains)
    test.folds = np.full(len(test.routes), -1)
    test.fold_kind = {b: "separate training set" for b in test.outcomes}
    return _scores_frame(test, [res]), [res]


def _scores_frame(prep: Prepared, results: list[FoldResult]) -> pd.DataFrame:
    df = prep.routes[["route_id", "benchmark", "category"]].copy()
    df["fold"] = prep.folds
    for res in results:
        for m, s in res.scores.items():
            col = "score" if m == "energy" else f"score_{m}"
            if col not in df:
                df[col] = np.nan
            df.loc[df.index[res.index], col] = s
    if df["score"].isna().any():
        raise InputError("folds", "some routes were not scored by any fold", "every route in one fold")
    return df


def _metrics_dict(m) -> dict:
    return {"apgr": m.apgr, **{f"cpt_{k}": v for k, v in m.cpt.items()}, "calls_at_target": m.calls_at_target,
            "cost_saving": m.cost_saving, "curve": m.curve.to_list()}


def summarize(prep: Prepared, scores: pd.DataFrame, spec: RouteEvalSpec, results: list[FoldResult]) -> dict:
    """Metrics per benchmark: router, ablations, random, oracle, all-weak/all-strong, bootstrap CIs."""
    ev = spec.eval
    levels = tuple(ev.cpt_levels)
    out: dict = {"benchmarks": {}, "folds": [{"fold": r.fold, "n_test": int(r.index.size), "n_train": r.n_train,
                                               "n_domains": r.n_domains, "predictor_auc": r.predictor_auc}
                                              for r in results]}
    methods = [c for c in scores.columns if c == "score" or c.startswith("score_")]
    for b, o in prep.outcomes.items():
        checkpoint()
        sel = (scores["benchmark"] == b).to_numpy()
        routers = {("router" if c == "score" else c.removeprefix("score_")): scores.loc[sel, c].to_numpy(np.float64)
                   for c in methods}
        res = {name: _metrics_dict(evaluate_scores(s, o, ev.n_bins, levels, ev.quality_target))
               for name, s in routers.items()}
        if "random" in spec.ablations:
            res["random"] = _metrics_dict(random_metrics(o, ev.seed, ev.random_repeats, ev.n_bins, levels,
                                                         ev.quality_target))
        shares = np.linspace(0.0, 1.0, ev.n_bins + 1)
        res["oracle"] = _metrics_dict(metrics_of_curve(oracle_curve(o, shares), o, levels, ev.quality_target))
        boot_routers: dict = dict(routers)
        if "random" in spec.ablations:
            reps = ev.random_repeats
            boot_routers["random"] = lambda rng, n, reps=reps: [rng.random(n) for _ in range(reps)]
        boot = bootstrap(boot_routers, o, n_boot=ev.n_bootstrap,
                         seed=ev.seed, n_bins=ev.n_bins, levels=levels, quality_target=ev.quality_target,
                         confidence=ev.confidence, paired_with="random" if "random" in spec.ablations else None)
        for name, ci in boot["routers"].items():
            res[name]["ci"] = ci
            if name in boot.get("vs_random", {}):
                res[name]["vs_random_ci"] = boot["vs_random"][name]
        res["oracle"]["ci"] = {"apgr": boot["baselines"]["oracle_apgr"]}
        fold_idx = scores.loc[sel, "fold"].to_numpy()
        aucs = [r.predictor_auc for r in results if np.any(fold_idx == r.fold)]
        out["benchmarks"][b] = {
            "n_routes": int(o.gain.size), "n_rows": int(o.n_rows), "unit": "accuracy %" if o.scale == 100 else "mean score",
            "folds": (prep.fold_kind or {}).get(b), "all_weak": o.weak_perf, "all_strong": o.strong_perf,
            "all_weak_ci": boot["baselines"]["weak_perf"], "all_strong_ci": boot["baselines"]["strong_perf"],
            "quality_target_perf": ev.quality_target * o.strong_perf,
            "predictor_auc": _auc(o.gain > 0, routers["predictor"]) if "predictor" in routers else None,
            "predictor_auc_per_fold": aucs, "routers": res, "bootstrap": {"n": boot["n_boot"], "seed": ev.seed,
                                                                            "confidence": ev.confidence}}
    return out
