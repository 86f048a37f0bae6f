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
Cost is O(rounds * candidates * surrogates) KSG estimates per target.

Screened inclusion (`screen = M`, default off): the statistic of an inclusion round becomes "the largest
conditional TE among the M candidates with the largest *linear* (Gaussian) conditional-TE score", and every
surrogate round recomputes the same statistic on its reordered candidates (the screen re-run on the
surrogate, then KSG on ITS top M, then the max). The test therefore stays a valid max-statistic test of
the screened statistic (the screen is part of the statistic, not a data-dependent pre-selection), while
each round costs M (S + 1) KSG estimates instead of C (S + 1). The price: a candidate the linear screen
ranks below M cannot be chosen in that round (a non-monotone coupling can hide from it); M >= the number
of candidates is the unscreened test exactly. Pruning and the final p-values are unchanged.

Pure compute, no Ray; the result has the same shape as the bivariate te_network.
"""
from __future__ import annotations

import time
import warnings
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


def identity_and(orders: np.ndarray) -> np.ndarray:
    """[1 + S, n]: the identity (the observed estimate) followed by the surrogate orders."""
    return np.vstack([np.arange(orders.shape[1])[None], orders])


def inverse_orders(table: np.ndarray, device=None):
    """The inverse of every row order of `table` ([Q, n]) as a torch int64 tensor (screen_pick's `inv`)."""
    import torch

    inv = np.empty_like(table, dtype=np.int64)
    np.put_along_axis(inv, table.astype(np.int64), np.arange(table.shape[1])[None], axis=1)
    return torch.as_tensor(inv, device=device)


def screen_pick(y, z, x, inv, m: int):
    """[Q, m] int64 (ascending) indices of the m candidates with the largest linear screen score under each
    row order of a table ([Q, n]; a candidate's rows reordered by it, as a surrogate), given the orders'
    inverses `inv` (inverse_orders); torch float64 tensors
    y [n, 1] (target next value), z [n, dz] (past + selected), x [C, n, dx] (candidate blocks), on any device.

    The score of a candidate is the sum over its columns of the squared partial correlation with y given z
    (for one column: the Gaussian conditional TE is -log(1 - score) / 2, the same ranking). A reordering of
    the candidate's rows is applied to y's residual and z's basis instead (r_y . x[pi] = r_y[pi^-1] . x), so
    every order costs one [1 + dz + 1, n] x [n, C dx] product and no permuted copy of x is made."""
    import torch

    n, c, dx = x.shape[1], x.shape[0], x.shape[2]
    dev = x.device
    basis = torch.cat([torch.ones((n, 1), dtype=torch.float64, device=dev), z.to(torch.float64)], 1)
    q, _ = torch.linalg.qr(basis)                                     # [n, 1 + dz] orthonormal
    yy = y[:, 0].to(torch.float64)
    ry = yy - q @ (q.T @ yy)
    ry = ry / ry.norm().clamp_min(1e-300)
    a = torch.cat([ry[:, None], q], 1)                                # [n, 2 + dz]
    inv = inv.to(dev)
    xs = x.to(torch.float64).permute(1, 0, 2).reshape(n, c * dx)      # [n, C dx]
    norm2 = (xs * xs).sum(0)
    out = []
    for q0 in range(0, inv.shape[0], 32):                             # [32, n, 2 + dz] gathers at a time
        proj = a[inv[q0:q0 + 32]].transpose(1, 2) @ xs               # [q, 2 + dz, C dx]
        res2 = (norm2 - (proj[:, 1:] ** 2).sum(1)).clamp_min(1e-300)
        out.append((proj[:, 0] ** 2 / res2).reshape(-1, c, dx).sum(-1))
    score = torch.cat(out)                                            # [Q, C]
    top = torch.sort(score, dim=1, descending=True, stable=True).indices[:, :m]
    return torch.sort(top, dim=1).values.cpu().numpy()


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


def _screened(td: _TargetData, remaining: Sequence[Candidate], selected: Sequence[Candidate], table: np.ndarray,
              screen: int | None) -> np.ndarray:
    """[Q, M] indices into `remaining` of the candidates estimated under each order of `table` (all of them,
    in order, when unscreened or when M >= len(remaining))."""
    if screen is None or screen >= len(remaining):
        return np.tile(np.arange(len(remaining)), (table.shape[0], 1))
    import torch

    t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    z = np.hstack([td.past, *(td.sources[c] for c in selected)])
    return screen_pick(t(td.y), t(z), t(np.stack([td.sources[c] for c in remaining])), inverse_orders(table), screen)


def select_sources(data: np.ndarray, target: int, cfg: NetworkConfig, *, screen: int | None = None,
                   stats: dict | None = None) -> TargetResult:
    """Greedy inclusion by max-statistic tests, then pruning by min-statistic tests, for one target.

    `screen` = M screens every inclusion round (observed and each surrogate) to the M candidates with the
    largest linear score (module docstring); None (default) tests every candidate. `stats`, when given,
    accumulates KSG estimate counts and seconds per phase (include, prune, screen)."""
    sig = cfg.significance
    screen = screen_of(cfg, screen)
    td = _target_data(data, target, cfg)
    selected: list[Candidate] = []
    remaining = sorted(td.sources)
    steps: list[dict] = []
    while remaining:
        table = identity_and(round_orders(td.n, sig, 0, len(steps)))
        t0 = time.perf_counter()
        pick = _screened(td, remaining, selected, table, screen)
        _tally(stats, "screen", 0, t0)
        t0 = time.perf_counter()
        vals = np.array([[td.cmi(remaining[i], selected, None if q == 0 else table[q]) for i in row]
                         for q, row in enumerate(pick)])                        # [1 + S, M]
        _tally(stats, "include", vals.size, t0)
        b = int(np.argmax(vals[0]))                                             # first maximum, in `remaining` order
        best = remaining[pick[0, b]]
        p = p_value(vals[0, b], vals[1:].max(axis=1))
        accepted = p <= sig.alpha
        steps.append({"step": "include", "candidate": list(best), "te": float(vals[0, b]), "p_value": p,
                      "accepted": accepted})
        if not accepted:
            break
        selected.append(best)
        remaining.remove(best)

    te, p_raw, p_seq = {}, {}, {}
    n_include = len(steps)
    while selected:
        others = {c: [s for s in selected if s != c] for c in selected}
        table = identity_and(round_orders(td.n, sig, 1, len(steps) - n_include))
        t0 = time.perf_counter()
        vals = np.array([[td.cmi(c, others[c], None if q == 0 else o) for q, o in enumerate(table)]
                         for c in selected])                                    # [m, 1 + S]
        _tally(stats, "prune", vals.size, t0)
        te = {c: float(vals[i, 0]) for i, c in enumerate(selected)}
        surr = vals[:, 1:]
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


def screen_of(cfg: NetworkConfig, screen: int | None) -> int | None:
    """The screen size: the argument, else the config's `screen` field when it has one; None = off."""
    m = screen if screen is not None else cfg.screen
    if m is not None and m < 1:
        raise InputError("screen", f"{m} candidates", "None (off) or an integer >= 1")
    return m


def _tally(stats: dict | None, phase: str, estimates: int, t0: float) -> None:
    """Add one phase's KSG estimates and seconds since t0 to `stats` ({phase}_estimates, {phase}_s)."""
    if stats is not None:
        stats[f"{phase}_estimates"] = stats.get(f"{phase}_estimates", 0) + int(estimates)
        stats[f"{phase}_s"] = stats.get(f"{phase}_s", 0.0) + time.perf_counter() - t0


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
    sig = cfg.significance
    if 1.0 / (sig.n_surrogates + 1) > sig.alpha:
        warnings.warn(f"multivariate: with {sig.n_surrogates} surrogates the smallest p-value is "
                      f"1/{sig.n_surrogates + 1} > alpha {sig.alpha}, so no source can be selected; "
                      f"use n_surrogates >= {int(np.ceil(1 / sig.alpha - 1 - 1e-9))}", stacklevel=2)
    return cfg


def multivariate_network_results(arr: np.ndarray, cfg: NetworkConfig,
                                 progress: Callable[[int, int], None] | None = None, *,
                                 screen: int | None = None, stats: dict | None = None) -> list[TargetResult]:
    """Every target's selection in this process: batched on a device backend, else target by target
    (`screen`, `stats`: select_sources)."""
    from actors.te.batched import resolve_backend

    device = resolve_backend(cfg.params.backend)
    if device != "cpu":   # every target in lockstep batched kernel launches (multivariate_batched.py)
        from actors.te.multivariate_batched import select_sources_batched

        results = select_sources_batched(arr, range(arr.shape[1]), cfg, backend=device, screen=screen, stats=stats)
        if progress is not None:
            progress(arr.shape[1], arr.shape[1])
        return results
    results = []
    for j in range(arr.shape[1]):
        results.append(select_sources(arr, j, cfg, screen=screen, stats=stats))
        if progress is not None:
            progress(j + 1, arr.shape[1])
    return results


def multivariate_network(data, names: Sequence[str] | None = None, config: NetworkConfig | dict | None = None,
                         *, progress: Callable[[int, int], None] | None = None, screen: int | None = None,
                         stats: dict | None = None) -> TENetwork:
    """The greedy multivariate TE network of the columns of `data` ([T, N]), target by target (CPU) or all
    targets in lockstep batched launches (a device backend: params.backend auto on CUDA, torch, triton).
    `screen` = M: screened inclusion (module docstring); `stats`: per-phase KSG estimate counts and seconds."""
    cfg = multivariate_config(config)
    arr, names = check_data(data, names)
    return assemble_multivariate(multivariate_network_results(arr, cfg, progress, screen=screen, stats=stats),
                                 names, cfg)
