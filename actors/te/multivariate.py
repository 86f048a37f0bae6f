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


def block_rng(seed: int, column: int, role: int, lag: int = 0) -> np.random.Generator:
    """The noise generator of one prepared block: column `column` as next value (role 0), past (role 1)
    or source past at delay `lag` (role 2). Seeded by the block alone, so every target that uses a source
    sees the same block (the batched device path builds each block once for all targets)."""
    return np.random.default_rng([seed, column, role, lag])


def round_orders(n: int, sig, phase: int, round_index: int) -> np.ndarray:
    """[S, n] surrogate row orders of inclusion (phase 0) or pruning (phase 1) round `round_index`, the
    same for every target (so a batched launch shares one order table across targets)."""
    return surrogate_orders(n, sig, np.random.default_rng([sig.seed, phase, round_index]))


def first_row(cfg: NetworkConfig) -> int:
    """Index t of the first target past all lags share."""
    p = cfg.params
    return max((p.k_hist - 1) * p.k_tau, (p.l_hist - 1) * p.l_tau + max(cfg.lag_values()) - 1)


def prepared_block(data: np.ndarray, cfg: NetworkConfig, column: int, role: int, lag: int = 0) -> np.ndarray:
    """One z-scored, noised block on the common rows: next value (role 0), past (1), source past at `lag` (2)."""
    p = cfg.params
    t = np.arange(first_row(cfg), data.shape[0] - 1)
    if role == 0:
        raw = data[t + 1, column][:, None]
    elif role == 1:
        raw = delay_embed(data[:, column], t, p.k_hist, p.k_tau)
    else:
        raw = delay_embed(data[:, column], t + 1 - lag, p.l_hist, p.l_tau)
    return prepare(raw, normalise=p.normalise, noise=p.noise, rng=block_rng(p.seed, column, role, lag),
                   field=f"data[:, {column}]")


def check_rows(data: np.ndarray, cfg: NetworkConfig) -> int:
    """The number of common rows, or an InputError when the series is too short for the embedding."""
    t0, length = first_row(cfg), data.shape[0]
    n_obs = length - 1 - t0
    check_observations(n_obs, cfg.params, length, t0)
    return n_obs


def _target_data(data: np.ndarray, target: int, cfg: NetworkConfig) -> _TargetData:
    """Embed the target and every candidate on the rows all lags share, then z-score and noise each block
    (each block's noise seeded by the block: block_rng)."""
    check_rows(data, cfg)
    y = prepared_block(data, cfg, target, 0)
    past = prepared_block(data, cfg, target, 1)
    sources = {(i, u): prepared_block(data, cfg, i, 2, u)
               for i in range(data.shape[1]) if i != target for u in cfg.lag_values()}
    return _TargetData(y=y, past=past, sources=sources, params=cfg.params)


def _surrogate_table(td: _TargetData, cands: Sequence[Candidate], cond_of: Callable[[Candidate], list[Candidate]],
                     orders: np.ndarray) -> np.ndarray:
    """[len(cands), S] surrogate TE of each candidate under the same source reorderings."""
    return np.array([[td.cmi(c, cond_of(c), o) for o in orders] for c in cands]).reshape(len(cands), len(orders))


def select_sources(data: np.ndarray, target: int, cfg: NetworkConfig) -> TargetResult:
    """Greedy inclusion by max-statistic tests, then pruning by min-statistic tests, for one target."""
    sig = cfg.significance
    td = _target_data(data, target, cfg)
    selected: list[Candidate] = []
    remaining = sorted(td.sources)
    steps: list[dict] = []
    while remaining:
        te = {c: td.cmi(c, selected) for c in remaining}
        best = max(remaining, key=lambda c: te[c])
        surr = _surrogate_table(td, remaining, lambda _c: selected, round_orders(td.n, sig, 0, len(steps)))
        p = p_value(te[best], surr.max(axis=0))
        accepted = p <= sig.alpha
        steps.append({"step": "include", "candidate": list(best), "te": te[best], "p_value": p, "accepted": accepted})
        if not accepted:
            break
        selected.append(best)
        remaining.remove(best)

    te, p_raw, p_seq = {}, {}, {}
    n_include = len(steps)
    while selected:
        others = {c: [s for s in selected if s != c] for c in selected}
        te = {c: td.cmi(c, others[c]) for c in selected}
        surr = _surrogate_table(td, selected, lambda c, o=others: o[c], round_orders(td.n, sig, 1, len(steps) - n_include))
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


def multivariate_network_results(arr: np.ndarray, cfg: NetworkConfig,
                                 progress: Callable[[int, int], None] | None = None) -> list[TargetResult]:
    """Every target's selection in this process: batched on a device backend, else target by target."""
    from actors.te.batched import resolve_backend

    device = resolve_backend(cfg.params.backend)
    if device != "cpu":   # every target in lockstep batched kernel launches (multivariate_batched.py)
        from actors.te.multivariate_batched import select_sources_batched

        results = select_sources_batched(arr, range(arr.shape[1]), cfg, backend=device)
        if progress is not None:
            progress(arr.shape[1], arr.shape[1])
        return results
    results = []
    for j in range(arr.shape[1]):
        results.append(select_sources(arr, j, cfg))
        if progress is not None:
            progress(j + 1, arr.shape[1])
    return results


def multivariate_network(data, names: Sequence[str] | None = None, config: NetworkConfig | dict | None = None,
                         *, progress: Callable[[int, int], None] | None = None) -> TENetwork:
    """The greedy multivariate TE network of the columns of `data` ([T, N]), target by target (CPU) or all
    targets in lockstep batched launches (a device backend: params.backend auto on CUDA, torch, triton)."""
    cfg = multivariate_config(config)
    arr, names = check_data(data, names)
    return assemble_multivariate(multivariate_network_results(arr, cfg, progress), names, cfg)
