"""Bivariate TE networks: every ordered pair (source -> target) of N series, best delay, surrogate
p-values, then one network-level correction, as a networkx DiGraph.

Work splits into independent pair jobs (`pair_te`), each seeded from (seed, source, target) so a
pair's answer does not depend on which worker or shard computed it, and one cheap `assemble_network`
that corrects across pairs. The Ray pool (actors/te/pool.py) shards exactly these pair jobs.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import networkx as nx
import numpy as np
import pandas as pd

from actors.common.budget import checkpoint
from actors.common.config import validated
from actors.common.errors import InputError
from actors.te.batched import network_backend, pairs_te_batched
from actors.te.config import NetworkConfig, TEParams
from actors.te.embedding import as_series
from actors.te.engine import check_inputs, prepare_te, surrogate_statistics
from actors.te.ragwitz import ragwitz
from actors.te.significance import fdr_bh, max_statistic, p_value, significance_warnings, surrogate_orders

# per-task work that auto batch sizes aim at (resolve_pairs_per_task)
DEVICE_ITEMS_PER_TASK = 1 << 22        # KSG estimates (pair x delay x row order) per device task: one full launch
CPU_ROWS_PER_TASK = 1_000_000          # embedded rows x estimates per CPU task (a few seconds of cKDTree)


@dataclass(frozen=True)
class PairResult:
    """TE of one ordered pair at its best delay, the raw surrogate p-value and the surrogates."""

    source: int
    target: int
    te: float
    lag: int
    p_raw: float
    surrogates: np.ndarray            # [S], max over delays under the same reordering
    te_by_lag: dict[int, float]
    n_obs: int


@dataclass
class TENetwork:
    """All pairs (table) and the significant ones (graph edges carry te, p_value, lag)."""

    graph: nx.DiGraph
    table: pd.DataFrame               # one row per ordered pair: source, target, te, lag, p_raw, p_value, significant

    def edges(self) -> pd.DataFrame:
        """Significant edges as (source, target, te, p_value, lag)."""
        cols = ["source", "target", "te", "p_value", "lag"]
        return self.table.loc[self.table["significant"], cols].reset_index(drop=True)


def pair_seed(seed: int, source: int, target: int) -> int:
    """A seed for one pair that does not depend on sharding."""
    return int(np.random.SeedSequence([seed, source, target]).generate_state(1)[0])


def check_data(data, names: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """[T, N] float64 matrix with N >= 2 finite, non-constant columns, and their names."""
    arr = as_series(data, "data", allow_2d=True)
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise InputError("data", f"has shape {arr.shape}", "a [T, N] matrix with N >= 2 variables")
    names = [str(i) for i in range(arr.shape[1])] if names is None else [str(n) for n in names]
    if len(names) != arr.shape[1] or len(set(names)) != len(names):
        raise InputError("names", f"{len(names)} names (unique: {len(set(names))}) for {arr.shape[1]} columns",
                         f"{arr.shape[1]} unique names")
    return arr, names


def auto_embeddings(data: np.ndarray, cfg: NetworkConfig) -> dict[int, tuple[int, int]]:
    """Ragwitz (history, delay) per column when cfg.ragwitz is set, else {} (use cfg.params)."""
    if cfg.ragwitz is None:
        return {}
    out = {}
    for j in range(data.shape[1]):
        try:
            emb = ragwitz(data[:, j], cfg.ragwitz, k=cfg.params.k, theiler=cfg.params.theiler)
        except InputError as exc:
            if exc.field != "series":
                raise
            raise InputError(f"data[:, {j}]", exc.message, exc.allowed) from None
        out[j] = (emb.hist, emb.tau)
    return out


def pair_params(cfg: NetworkConfig, source: int, target: int,
                embeddings: dict[int, tuple[int, int]] | None = None) -> TEParams:
    """The pair's TEParams: auto-embedded histories (if any) and a pair-specific noise seed."""
    update: dict = {"seed": pair_seed(cfg.params.seed, source, target)}
    if embeddings:
        update["k_hist"], update["k_tau"] = embeddings[target]
        if cfg.ragwitz is not None and cfg.ragwitz.source:
            update["l_hist"], update["l_tau"] = embeddings[source]
    return validated(TEParams, cfg.params, **update)


def pair_te(data: np.ndarray, source: int, target: int, cfg: NetworkConfig,
            params: TEParams | None = None) -> PairResult:
    """TE(source -> target) over cfg's delays, with its surrogate distribution and raw p-value.

    An input error names the column (`data[:, j]`), not the pair's roles."""
    params = params or pair_params(cfg, source, target)
    delays = cfg.lag_values()
    try:
        src, tgt, _ = check_inputs(data[:, source], data[:, target])
        prep = prepare_te(src, tgt, [], params, delays)
    except InputError as exc:
        if exc.field not in ("source", "target"):
            raise
        column = source if exc.field == "source" else target
        raise InputError(f"data[:, {column}]", exc.message, exc.allowed) from None
    by_lag = {u: prep.estimate(u).value for u in delays}
    best = max(delays, key=lambda u: by_lag[u])
    rng = np.random.default_rng(pair_seed(cfg.significance.seed, source, target))
    surr = surrogate_statistics(prep, delays, surrogate_orders(prep.n, cfg.significance, rng))
    return PairResult(source=source, target=target, te=by_lag[best], lag=best,
                      p_raw=p_value(by_lag[best], surr), surrogates=surr, te_by_lag=by_lag, n_obs=prep.n)


def network_warnings(cfg: NetworkConfig, n_vars: int) -> list[str]:
    """significance_warnings for this network: n_vars (n_vars - 1) pair tests (bivariate), or per target
    the (n_vars - 1) x lags candidates of the max-statistic inclusion test (multivariate)."""
    sig = cfg.significance
    n_tests = n_vars * (n_vars - 1) if cfg.mode == "bivariate" else (n_vars - 1) * len(cfg.lag_values())
    return significance_warnings(cfg.correction, sig.alpha, sig.n_surrogates, n_tests, n_vars, mode=cfg.mode)


def resolve_pairs_per_task(requested: int | str, cfg: NetworkConfig, n_vars: int, n_samples: int, *,
                           device: bool) -> int:
    """pairs_per_task, "auto" chosen from the problem. On a device whole targets go to a task (pairs are cut
    target-major, so a target's destination blocks serve all its sources in one launch), as many as fill
    about one launch of DEVICE_ITEMS_PER_TASK estimates, and at least 4 tasks when there are 4 targets
    (resume granularity, several GPUs). On the CPU about CPU_ROWS_PER_TASK rows x estimates per task."""
    if requested != "auto":
        return int(requested)
    n_pairs = max(1, n_vars * (n_vars - 1))
    per_pair = len(cfg.lag_values()) * (cfg.significance.n_surrogates + 1)
    if device:
        per_target = max(1, (n_vars - 1) * per_pair)
        targets = max(1, min(DEVICE_ITEMS_PER_TASK // per_target, -(-n_vars // 4)))
        return max(1, min(targets * (n_vars - 1), n_pairs))
    pairs = CPU_ROWS_PER_TASK // max(1, n_samples * per_pair)
    return int(max(1, min(pairs, 256, -(-n_pairs // 4))))


def all_pairs(n_vars: int) -> list[tuple[int, int]]:
    """Every ordered pair (source, target) with source != target, source-major."""
    return [(i, j) for i in range(n_vars) for j in range(n_vars) if i != j]


def assemble_network(results: Sequence[PairResult], names: Sequence[str], cfg: NetworkConfig) -> TENetwork:
    """Correct p-values across all pairs (max-statistic, BH FDR or none) and build the DiGraph."""
    results = sorted(results, key=lambda r: (r.source, r.target))
    te = np.array([r.te for r in results])
    p_raw = np.array([r.p_raw for r in results])
    alpha = cfg.significance.alpha
    if cfg.correction == "max":
        p_adj = max_statistic(te, np.stack([r.surrogates for r in results])) if results else np.empty(0)
        significant = p_adj <= alpha
    elif cfg.correction == "fdr":
        significant, p_adj = fdr_bh(p_raw, alpha)
    else:
        p_adj, significant = p_raw, p_raw <= alpha
    table = pd.DataFrame({
        "source": [names[r.source] for r in results], "target": [names[r.target] for r in results],
        "te": te, "lag": [r.lag for r in results], "p_raw": p_raw, "p_value": p_adj,
        "significant": np.asarray(significant, dtype=bool), "n_obs": [r.n_obs for r in results]})
    graph = nx.DiGraph(correction=cfg.correction, alpha=alpha, n_surrogates=cfg.significance.n_surrogates,
                       surrogate_method=cfg.significance.method, units="nats")
    graph.add_nodes_from(names)
    for row in table.itertuples(index=False):
        if row.significant:
            graph.add_edge(row.source, row.target, te=float(row.te), p_value=float(row.p_value),
                           p_raw=float(row.p_raw), lag=int(row.lag))
    return TENetwork(graph=graph, table=table)


def te_network(data, names: Sequence[str] | None = None, config: NetworkConfig | dict | None = None,
               *, progress: Callable[[int, int], None] | None = None) -> TENetwork:
    """The TE network of the columns of `data` ([T, N]), computed here: pair by pair (bivariate), or
    target by target with greedy conditioning when cfg.mode == "multivariate"."""
    cfg = validated(NetworkConfig, config)
    if cfg.mode == "multivariate":
        from actors.te.multivariate import multivariate_network  # it imports this module

        return multivariate_network(data, names, cfg, progress=progress)
    arr, names = check_data(data, names)
    embeddings = auto_embeddings(arr, cfg)
    pairs = all_pairs(arr.shape[1])
    device = network_backend(cfg, embeddings)
    if device != "cpu":   # every pair x delay x surrogate in batched kernel launches
        results = pairs_te_batched(arr, pairs, cfg, backend=device)
        if progress is not None:
            progress(len(pairs), len(pairs))
        return assemble_network(results, names, cfg)
    results = []
    for done, (i, j) in enumerate(pairs, start=1):
        checkpoint()   # the caller's budget / cancellation (actors.common.budget)
        results.append(pair_te(arr, i, j, cfg, pair_params(cfg, i, j, embeddings)))
        if progress is not None:
            progress(done, len(pairs))
    return assemble_network(results, names, cfg)
