"""Greedy multivariate TE networks (IDTxl-style) for a small number of variables.

Bivariate TE credits a source with information that flows through a third variable (a chain
X -> Y -> Z gives a spurious X -> Z) or comes from a common driver. The multivariate network asks,
for each target, which sources still carry information given the others already chosen:

1. Inclusion. Candidates are every (source, lag). Each round estimates the conditional TE
   I(target_next ; candidate | target_past, selected) for every remaining candidate, picks the largest,
   and accepts it when it beats the *maximum over candidates* of the same surrogate round (the
   max-statistic test, so searching over candidates is accounted for). The first rejection stops.
2. Pruning. Each selected source's TE is re-estimated given all other selected sources; the smallest is
   tested against the *minimum over selected sources* of each surrogate round (min-statistic test) and
   removed when not significant; repeat until the weakest survives.
3. Final per-source p-values: each conditional TE against the per-round maximum over the selected
   sources (IDTxl's sequential max-statistic); the raw per-source p-value is kept as `p_raw`.

The target's own past uses the embedding of `params` (k_hist, k_tau); sources use (l_hist, l_tau).
Cost is O(rounds * candidates * surrogates) KSG estimates per target, so this mode is meant for N up to
a few dozen. Pure compute, no Ray; the result has the same shape as the bivariate te_network.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import networkx as nx
import numpy as np
import pandas as pd

from actors.common.budget import checkpoint
from actors.common.config import validated
from actors.common.errors import InputError
from actors.te.config import NetworkConfig, TEParams
from actors.te.embedding import check_observations, delay_embed, prepare
from actors.te.ksg import ksg_cmi
from actors.te.network import TENetwork, check_data
from actors.te.significance import p_value, surrogate_orders

Candidate = tuple[int, int]  # (source column, source-destination delay u)


@dataclass(frozen=True)
class TargetResult:
    """The conditioning set chosen for one target and the decisions that led to it."""

    target: int
    selected: list[Candidate]                 # final set, in inclusion order
    te: dict[Candidate, float]                # conditional TE of each selected source given the others
    p_raw: dict[Candidate, float]             # its own surrogate p-value
    p_value: dict[Candidate, float]           # sequential max-statistic p-value over the selected sources
    n_obs: int
    steps: list[dict] = field(default_factory=list)   # inclusion / pruning log (JSON-ready)


@dataclass
class _TargetData:
    """Prepared (z-scored, noised) blocks for one target on common rows."""

    y: np.ndarray                      # [n, 1] target next value
    past: np.ndarray                   # [n, k_hist] target past
    sources: dict[Candidate, np.ndarray]  # [n, l_hist] each candidate's past
    params: TEParams

    @property
    def n(self) -> int:
        return int(self.y.shape[0])

    def cmi(self, cand: Candidate, cond: Sequence[Candidate], order: np.ndarray | None = None) -> float:
        """I(y ; cand | past, cond) in nats; `order` reorders the candidate rows (a surrogate).

        Every estimate is a checkpoint of the caller's budget (actors.common.budget)."""
        checkpoint()
        x = self.sources[cand] if order is None else self.sources[cand][order]
        z = np.hstack([self.past, *(self.sources[c] for c in cond)])
        p = self.params
        return ksg_cmi(x, self.y, z, k=p.k, theiler=p.theiler, algorithm=p.algorithm, workers=p.workers).value


def _target_data(data: np.ndarray, target: int, cfg: NetworkConfig) -> _TargetData:
    """Embed the target and every candidate on the rows all lags share, then z-score and noise each block."""
    p = cfg.params
    lags = cfg.lag_values()
    t0 = max((p.k_hist - 1) * p.k_tau, (p.l_hist - 1) * p.l_tau + max(lags) - 1)
    length = data.shape[0]
    n_obs = length - 1 - t0
    check_observations(n_obs, p, length, t0)
    t = np.arange(t0, length - 1)
    rng = np.random.default_rng([p.seed, target])  # noise depends on the target only, not on sharding
    kw = {"normalise": p.normalise, "noise": p.noise, "rng": rng}
    y = prepare(data[t + 1, target][:, None], field=f"data[:, {target}]", **kw)
    past = prepare(delay_embed(data[:, target], t, p.k_hist, p.k_tau), field=f"data[:, {target}]", **kw)
    sources = {(i, u): prepare(delay_embed(data[:, i], t + 1 - u, p.l_hist, p.l_tau), field=f"data[:, {i}]", **kw)
               for i in range(data.shape[1]) if i != target for u in lags}
    return _TargetData(y=y, past=past, sources=sources, params=p)


def _surrogate_table(td: _TargetData, cands: Sequence[Candidate], cond_of: Callable[[Candidate], list[Candidate]],
                     orders: np.ndarray) -> np.ndarray:
    """[len(cands), S] surrogate TE of each candidate under the same source reorderings."""
    return np.array([[td.cmi(c, cond_of(c), o) for o in orders] for c in cands]).reshape(len(cands), len(orders))


def select_sources(data: np.ndarray, target: int, cfg: NetworkConfig) -> TargetResult:
    """Greedy inclusion by max-statistic tests, then pruning by min-statistic tests, for one target."""
    sig = cfg.significance
    td = _target_data(data, target, cfg)
    rng = np.random.default_rng([sig.seed, target])
    selected: list[Candidate] = []
    remaining = sorted(td.sources)
    steps: list[dict] = []
    while remaining:
        te = {c: td.cmi(c, selected) for c in remaining}
        best = max(remaining, key=lambda c: te[c])
        surr = _surrogate_table(td, remaining, lambda _c: selected, surrogate_orders(td.n, sig, rng))
        p = p_value(te[best], surr.max(axis=0))
        accepted = p <= sig.alpha
        steps.append({"step": "include", "candidate": list(best), "te": te[best], "p_value": p, "accepted": accepted})
        if not accepted:
            break
        selected.append(best)
        remaining.remove(best)

    te, p_raw, p_seq = {}, {}, {}
    while selected:
        others = {c: [s for s in selected if s != c] for c in selected}
        te = {c: td.cmi(c, others[c]) for c in selected}
        surr = _surrogate_table(td, selected, lambda c, o=others: o[c], surrogate_orders(td.n, sig, rng))
        weakest = min(selected, key=lambda c: te[c])
        p_min = p_value(te[weakest], surr.min(axis=0))
        kept = p_min <= sig.alpha
        steps.append({"step": "prune", "candidate": list(weakest), "te": te[weakest], "p_value": p_min, "kept": kept})
        if kept:
            peak = surr.max(axis=0)
            p_raw = {c: p_value(te[c], surr[i]) for i, c in enumerate(selected)}
            p_seq = {c: p_value(te[c], peak) for c in selected}
            break
        selected.remove(weakest)
    return TargetResult(target=target, selected=list(selected), te={c: te[c] for c in selected},
                        p_raw=p_raw, p_value=p_seq, n_obs=td.n, steps=steps)


def assemble_multivariate(results: Sequence[TargetResult], names: Sequence[str], cfg: NetworkConfig) -> TENetwork:
    """Table of every selected (source, lag) per target, and a DiGraph with one edge per source -> target.

    A source selected at several lags gives one edge carrying the lag of its largest conditional TE
    and the smallest p-value; the table keeps every lag.
    """
    rows = [{"source": names[s], "target": names[r.target], "te": r.te[(s, u)], "lag": u,
             "p_raw": r.p_raw[(s, u)], "p_value": r.p_value[(s, u)], "significant": True, "n_obs": r.n_obs}
            for r in sorted(results, key=lambda r: r.target) for s, u in sorted(r.selected)]
    cols = ["source", "target", "te", "lag", "p_raw", "p_value", "significant", "n_obs"]
    table = pd.DataFrame(rows, columns=cols).astype({"significant": bool})
    graph = nx.DiGraph(mode="multivariate", correction="max-min-statistic", alpha=cfg.significance.alpha,
                       n_surrogates=cfg.significance.n_surrogates, surrogate_method=cfg.significance.method,
                       units="nats")
    graph.add_nodes_from(names)
    for row in table.sort_values("te", ascending=False).itertuples(index=False):
        if graph.has_edge(row.source, row.target):
            d = graph.edges[row.source, row.target]
            d["p_value"] = min(d["p_value"], float(row.p_value))
            d["p_raw"] = min(d["p_raw"], float(row.p_raw))
        else:
            graph.add_edge(row.source, row.target, te=float(row.te), p_value=float(row.p_value),
                           p_raw=float(row.p_raw), lag=int(row.lag))
    return TENetwork(graph=graph, table=table)


def multivariate_config(config: NetworkConfig | dict | None = None) -> NetworkConfig:
    """The validated NetworkConfig; InputError for settings this mode does not support (ragwitz)."""
    cfg = validated(NetworkConfig, config)
    if cfg.ragwitz is not None:
        raise InputError("ragwitz", "auto-embedding is not part of the multivariate mode",
                         "null (set params.k_hist / l_hist instead)")
    return cfg


def multivariate_network(data, names: Sequence[str] | None = None, config: NetworkConfig | dict | None = None,
                         *, progress: Callable[[int, int], None] | None = None) -> TENetwork:
    """The greedy multivariate TE network of the columns of `data` ([T, N]), target by target."""
    cfg = multivariate_config(config)
    arr, names = check_data(data, names)
    results = []
    for j in range(arr.shape[1]):
        results.append(select_sources(arr, j, cfg))
        if progress is not None:
            progress(j + 1, arr.shape[1])
    return assemble_multivariate(results, names, cfg)
