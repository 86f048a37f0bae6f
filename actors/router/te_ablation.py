"""The TE feature's ablation (`jobs.route_eval --te-ablation`): the same online router with and
without the TE signal on replayed streams of real routes, stationary and with a planted switch. No Ray.

Protocol (`TEAblationConfig`):
- the router (predictor, KMeans domains, posteriors) is fitted on a seeded `train_share` of the routes
  (all benchmarks); per benchmark, a stream of `n_stream` requests is drawn with replacement (seed s)
  from that benchmark's other routes: the real data in a seeded random order, so **stationary**;
- **planted**: the same stream, but in up to `planted_domains` of its most frequent domains, together at
  most `max_planted_share` of the stream (`choose_planted`), every other block of `period` requests (t // period odd) is switched: `swap` exchanges the strong and weak
  rewards of those requests, `weak_down` sets the weak model's to 0;
- methods, each from a fresh copy of the fitted router, on the same stream with the same Boltzmann
  draws' seed: `energy` (no TE), `energy_te` (the TE feature), `energy_recency` (the same recency
  term with the gate fixed at 1: the TE-free control);
- per (scenario, seed, method): APGR of the pre-feedback scores against the stream's outcomes (RouteLLM's
  threshold sweep), the mean reward obtained, the share of strong calls, and the mean pseudo-regret
  per request against the oracle that knows each (domain, regime)'s mean reward of both models, in the
  router's own utility quality - (w_cost * cost + w_latency * latency) / w_quality;
- CIs: percentile bootstrap over stream positions (each seed's stream resampled, the statistic
  averaged over seeds), the differences from `energy` paired (same resample).
"""
from __future__ import annotations

import copy

import numpy as np

from actors.common.budget import checkpoint
from actors.common.errors import InputError
from actors.router.config import RouteEvalSpec
from actors.router.evaluate import STRONG, WEAK, Prepared, fit_all, subset
from actors.router.metrics import Outcomes, evaluate_scores
from actors.router.online import online_stream

__all__ = ["METHODS", "SCENARIOS", "ablation_markdown", "choose_planted", "plant", "run_te_ablation", "stream_stats"]

METHODS = ("energy", "energy_te", "energy_recency")
SCENARIOS = ("stationary", "planted")


def plant(reward: np.ndarray, domain: np.ndarray, planted: np.ndarray, period: int, kind: str) -> tuple[np.ndarray,
                                                                                                      np.ndarray]:
    """(rewards with the switch planted, regime per request: 1 where switched). `reward` [n, 2] (weak, strong)."""
    n = reward.shape[0]
    regime = ((np.arange(n) // period) % 2 == 1) & np.isin(domain, planted)
    out = np.array(reward, np.float64, copy=True)
    if kind == "swap":
        out[regime] = out[regime][:, ::-1]
    elif kind == "weak_down":
        out[regime, WEAK] = 0.0
    else:
        raise InputError("te_ablation.kind", f"{kind!r}", "swap or weak_down")
    return out, regime.astype(np.int64)


def choose_planted(domain: np.ndarray, n_domains: int, n_planted: int, max_share: float) -> np.ndarray:
    """Up to `n_planted` domains, most frequent first, skipping any that would take the planted share of
    the stream past `max_share` (so the stream keeps a gap between the models to recover: a swap in all of
    it would cancel it); the least frequent present domain when none fits."""
    counts = np.bincount(domain, minlength=n_domains)
    chosen, total = [], 0
    for k in np.argsort(-counts, kind="stable"):
        if counts[k] == 0 or len(chosen) == n_planted:
            break
        if total + counts[k] <= max_share * domain.size:
            chosen.append(int(k))
            total += counts[k]
    if not chosen:
        present = np.flatnonzero(counts)
        chosen = [int(present[np.argmin(counts[present])])]
    return np.array(sorted(chosen), np.int64)


def _oracle_utility(reward: np.ndarray, domain: np.ndarray, regime: np.ndarray, penalty: np.ndarray) -> np.ndarray:
    """[n, 2] utility each model would have in expectation: the (domain, regime) mean reward minus its penalty."""
    key = domain * 2 + regime
    u = np.empty_like(reward)
    for k in np.unique(key):
        m = key == k
        u[m] = reward[m].mean(axis=0)
    return u - penalty[None, :]


def stream_stats(scores: np.ndarray, choices: np.ndarray, got: np.ndarray, reward: np.ndarray, util: np.ndarray,
                 idx: np.ndarray | None = None, n_bins: int = 10) -> dict:
    """APGR, mean reward, strong share and mean pseudo-regret of one run (on positions `idx` if given)."""
    if idx is not None:
        scores, choices, got, reward, util = scores[idx], choices[idx], got[idx], reward[idx], util[idx]
    out = Outcomes.from_rows(reward[:, STRONG], reward[:, WEAK])
    apgr = float("nan") if out.strong_total == out.weak_total else evaluate_scores(scores, out, n_bins).apgr
    regret = util.max(axis=1) - util[np.arange(choices.size), choices]
    return {"apgr": apgr, "reward": float(got.mean()), "strong_share": float(np.mean(choices == STRONG)),
            "regret": float(regret.mean())}


def run_te_ablation(prep: Prepared, spec: RouteEvalSpec) -> dict:
    """The ablation table's numbers per benchmark and scenario (see the module docstring)."""
    cfg, te = spec.te_ablation, spec.te
    rng = np.random.default_rng(spec.eval.seed)
    n = len(prep.routes)
    perm = rng.permutation(n)
    n_train = int(round(cfg.train_share * n))
    if n_train < 2 or n - n_train < 2:
        raise InputError("te_ablation.train_share", f"{cfg.train_share} leaves {n_train} of {n} routes to fit on",
                         "a share leaving >= 2 routes on each side")
    train, test = np.sort(perm[:n_train]), np.sort(perm[n_train:])
    base = fit_all(subset(prep, train), spec)
    w = base.energy
    cost, latency, _ = base._card_arrays()
    penalty = (w.w_cost * cost + w.w_latency * latency) / w.w_quality if w.w_quality > 0 else np.zeros(2)
    bench = prep.routes["benchmark"].to_numpy()
    result: dict = {"protocol": {"train_routes": int(n_train), "fit": "predictor, domains, posteriors on the train share",
                                 **cfg.model_dump(), "te": te.model_dump(), "methods": list(METHODS)},
                    "benchmarks": {}}
    for b in prep.outcomes:
        pool = test[bench[test] == b]
        if pool.size < 2:
            continue
        p_all, d_all = base.features(prep.E[pool])
        runs: dict = {sc: {m: [] for m in METHODS} for sc in SCENARIOS}
        streams: dict = {sc: [] for sc in SCENARIOS}
        te_diag: dict = {"planted_domains": [], "te_planted": [], "te_other": [], "te_stationary": []}
        for s in range(cfg.seeds):
            draw = np.random.default_rng([spec.eval.seed, s]).integers(0, pool.size, cfg.n_stream)
            p, d = p_all[draw], d_all[draw]
            nt = prep.n_tokens[pool][draw]
            planted = choose_planted(d, base.domains.n_domains, cfg.planted_domains, cfg.max_planted_share)
            te_diag["planted_domains"].append([int(x) for x in planted])
            recorded = prep.reward[pool][draw]
            for sc in SCENARIOS:
                if sc == "planted":
                    reward, regime = plant(recorded, d, planted, cfg.period, cfg.kind)
                else:
                    reward, regime = recorded, np.zeros(cfg.n_stream, np.int64)
                util = _oracle_utility(reward, d, regime, penalty)
                streams[sc].append((reward, util))
                for m in METHODS:
                    checkpoint()
                    run = online_stream(copy.deepcopy(base), p, d, nt, reward, m, te,
                                        np.random.default_rng([spec.eval.seed, s, 1]))
                    runs[sc][m].append((run.scores, run.choices, run.rewards))
                    if m == "energy_te" and run.feature is not None:
                        for dom, _, v in run.feature.history:
                            part = "te_stationary" if sc == "stationary" else "te_planted" if dom in planted else "te_other"
                            te_diag[part].append(v)
        result["benchmarks"][b] = {"n_pool": int(pool.size), "scenarios": {
            sc: _summarise(runs[sc], streams[sc], cfg.n_bootstrap, spec) for sc in SCENARIOS},
            "te_values": {"planted_domains": te_diag["planted_domains"],
                          "planted": _describe(te_diag["te_planted"]), "other": _describe(te_diag["te_other"]),
                          "stationary": _describe(te_diag["te_stationary"])}}
    return result


def _describe(v: list[float]) -> dict:
    a = np.asarray(v, np.float64)
    if a.size == 0:
        return {"n": 0}
    return {"n": int(a.size), "mean": float(a.mean()), "median": float(np.median(a)),
            "q10": float(np.quantile(a, 0.1)), "q90": float(np.quantile(a, 0.9))}


def _summarise(runs: dict, streams: list, n_boot: int, spec: RouteEvalSpec) -> dict:
    """Per method: seed means of each statistic, per-seed values, bootstrap CIs; paired differences from energy."""
    n_bins = spec.eval.n_bins
    seeds = len(streams)
    point = {m: [stream_stats(*runs[m][s], *streams[s], n_bins=n_bins) for s in range(seeds)] for m in METHODS}
    keys = ("apgr", "reward", "strong_share", "regret")
    out: dict = {m: {k: float(np.mean([r[k] for r in point[m]])) for k in keys} | {"per_seed": point[m]}
                 for m in METHODS}
    rng = np.random.default_rng(spec.eval.seed)
    boot: dict = {m: {k: [] for k in keys} for m in METHODS}
    diff: dict = {m: {k: [] for k in keys} for m in METHODS if m != "energy"}
    n = streams[0][0].shape[0]
    for _ in range(n_boot):
        checkpoint()
        idxs = [rng.integers(0, n, n) for _ in range(seeds)]
        vals = {m: [stream_stats(*runs[m][s], *streams[s], idx=idxs[s], n_bins=n_bins) for s in range(seeds)]
                for m in METHODS}
        for m in METHODS:
            for k in keys:
                boot[m][k].append(np.mean([v[k] for v in vals[m]]))
        for m in diff:
            for k in keys:
                diff[m][k].append(np.mean([v[k] - e[k] for v, e in zip(vals[m], vals["energy"])]))
    a = (1 - spec.eval.confidence) / 2

    def ci(v: list[float]) -> list[float]:
        v = np.asarray(v, np.float64)
        v = v[np.isfinite(v)]
        return [float(np.quantile(v, a)), float(np.quantile(v, 1 - a))] if v.size else [float("nan")] * 2

    for m in METHODS:
        out[m]["ci"] = {k: ci(boot[m][k]) for k in keys}
    for m in diff:
        out[m]["minus_energy"] = {k: float(np.mean([r[k] - e[k] for r, e in zip(point[m], point["energy"])]))
                                  for k in keys}
        out[m]["minus_energy_ci"] = {k: ci(diff[m][k]) for k in keys}
    return out


LABELS = {"energy": "energy (no TE)", "energy_te": "energy + TE feature", "energy_recency": "energy + recency, gate 1 (no TE)"}


def ablation_markdown(result: dict) -> str:
    """The ablation table: per benchmark, scenario and method, APGR / regret / reward / strong share with CIs,
    and the paired differences from the TE-free router."""
    def f(x: float, nd: int = 3) -> str:
        return "nan" if not np.isfinite(x) else f"{x:+.{nd}f}" if nd < 0 else f"{x:.{nd}f}"

    def band(c: list[float], nd: int = 3, sign: bool = False) -> str:
        fmt = f"{{:+.{nd}f}}" if sign else f"{{:.{nd}f}}"
        return "[" + ", ".join("nan" if not np.isfinite(v) else fmt.format(v) for v in c) + "]"

    pr = result["protocol"]
    lines = [f"TE feature ablation: {pr['seeds']} seeds x {pr['n_stream']} requests per benchmark and scenario; "
             f"planted: {pr['kind']} in up to {pr['planted_domains']} of the most frequent domains (at most "
             f"{pr['max_planted_share']:.0%} of the stream), every other block of "
             f"{pr['period']} requests; bootstrap {pr['n_bootstrap']} resamples of stream positions.", "",
             "| benchmark | scenario | method | APGR | regret / request | reward | strong share "
             "| APGR − energy | regret − energy |", "|---|---|---|---|---|---|---|---|---|"]
    for b, r in result["benchmarks"].items():
        for sc, res in r["scenarios"].items():
            for m in METHODS:
                x = res[m]
                d_apgr = d_reg = ""
                if m != "energy":
                    d_apgr = f"{x['minus_energy']['apgr']:+.3f} {band(x['minus_energy_ci']['apgr'], 3, True)}"
                    d_reg = f"{x['minus_energy']['regret']:+.4f} {band(x['minus_energy_ci']['regret'], 4, True)}"
                lines.append(f"| {b} | {sc} | {LABELS[m]} | {f(x['apgr'])} {band(x['ci']['apgr'])} | "
                             f"{x['regret']:.4f} {band(x['ci']['regret'], 4)} | {x['reward']:.3f} | "
                             f"{x['strong_share']:.3f} | {d_apgr} | {d_reg} |")
    lines += ["", "TE values (nats) of the TE router's windows: stationary streams (all domains); planted streams "
              "(the planted domains, the other domains):", "",
              "| benchmark | scenario | domains | windows | mean | median | q10 | q90 |", "|---|---|---|---|---|---|---|---|"]
    for b, r in result["benchmarks"].items():
        tv = r["te_values"]
        planted = "; ".join(str(list(x)) for x in dict.fromkeys(tuple(sorted(y)) for y in tv["planted_domains"]))
        for sc, part, label in (("stationary", "stationary", "all"), ("planted", "planted", f"planted {planted}"),
                                ("planted", "other", "other")):
            dsc = tv[part]
            vals = [f"{dsc[k]:.4f}" for k in ("mean", "median", "q10", "q90")] if dsc["n"] else ["", "", "", ""]
            lines.append("| " + " | ".join([b, sc, label, str(dsc["n"])] + vals) + " |")
    return "\n".join(lines) + "\n"
