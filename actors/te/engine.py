"""Transfer-entropy engine: KSG TE, conditional TE, MI / CMI and surrogate tests, JIDT semantics.

Pure compute on the CPU, no Ray: usable from a notebook, a test, an actor or a Serve replica.

    TE(X -> Y) = I(Y_next ; X_past | Y_past [, other sources' past])

estimated as one KSG conditional MI in the full joint space (actors/te/ksg.py) on the embedding of
actors/te/embedding.py. Every entry point takes `params` (a TEParams or dict) plus keyword
overrides, e.g. `transfer_entropy(x, y, k_hist=2, delay=3)`; bad input raises InputError naming
the field and its allowed range.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from actors.common.budget import checkpoint
from actors.common.config import validated
from actors.common.errors import InputError
from actors.te.batched import ksg_values_device, resolve_backend
from actors.te.config import RagwitzConfig, SignificanceConfig, TEParams
from actors.te.embedding import Embedded, as_series, prepare, start_time, te_embedding
from actors.te.ksg import KSGResult, ksg_cmi
from actors.te.ragwitz import ragwitz
from actors.te.significance import p_value, surrogate_orders


@dataclass(frozen=True)
class TEResult:
    """Average TE (nats), its local values and the neighbour counts, one entry per observation."""

    te: float
    local: np.ndarray        # [n] local TE (nats); te == local.mean()
    times: np.ndarray        # [n] index of the destination sample each local value predicts
    ksg: KSGResult           # counts n_xz (source+dest past), n_yz (dest next+past), n_z (dest past)
    params: TEParams
    delay: int
    embedding: dict | None = None   # the auto-embedding chosen (k_hist, k_tau, l_hist, l_tau), when asked for

    @property
    def n_obs(self) -> int:
        return int(self.local.size)


@dataclass(frozen=True)
class MIResult:
    """Average (conditional) mutual information (nats) with local values and counts."""

    value: float
    local: np.ndarray
    ksg: KSGResult
    params: TEParams


@dataclass(frozen=True)
class TESignificance:
    """Observed TE (at the best delay when several were searched), its surrogates and p-value."""

    te: float
    p_value: float
    lag: int
    surrogates: np.ndarray              # [S] surrogate statistic (max over delays when several)
    te_by_lag: dict[int, float] = field(default_factory=dict)
    n_obs: int = 0
    embedding: dict | None = None       # the auto-embedding chosen, when asked for
    params: TEParams | None = None      # the settings used (after auto-embedding)

    def significant(self, alpha: float = 0.05) -> bool:
        return self.p_value <= alpha


@dataclass
class PreparedTE:
    """Normalised, noised blocks for one source/destination pair: one source block per delay."""

    x: dict[int, np.ndarray]
    y: np.ndarray
    z: np.ndarray
    times: np.ndarray
    params: TEParams

    @property
    def n(self) -> int:
        return int(self.y.shape[0])

    def estimate(self, delay: int, order: np.ndarray | None = None) -> KSGResult:
        """KSG TE at one delay; `order` reorders the source-past rows (a surrogate)."""
        x = self.x[delay] if order is None else self.x[delay][order]
        p = self.params
        return ksg_cmi(x, self.y, self.z, k=p.k, theiler=p.theiler, algorithm=p.algorithm, workers=p.workers,
                       backend=p.backend)


def resolve_params(params: TEParams | dict[str, Any] | None = None, **overrides: Any) -> TEParams:
    """TEParams from a model/dict and keyword overrides; InputError on a bad field."""
    return validated(TEParams, params, **overrides)


def check_inputs(source, target, conditionals: Sequence = ()) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Finite, non-constant 1-D series of one length (InputError names the offending argument)."""
    src = as_series(source, "source")
    tgt = as_series(target, "target", length=src.shape[0])
    conds = [as_series(c, f"conditionals[{i}]", length=src.shape[0]) for i, c in enumerate(conditionals)]
    return src, tgt, conds


def prepare_te(source: np.ndarray, target: np.ndarray, conditionals: Sequence[np.ndarray],
               params: TEParams, delays: Sequence[int]) -> PreparedTE:
    """Embed checked series for each delay on common rows, then z-score and noise every block.

    With one delay the rows are JIDT's; with several, all delays share the latest start so their
    estimates (and surrogates) compare the same destination samples.
    """
    start = max(start_time(params, len(conditionals), u) for u in delays)
    rng = np.random.default_rng(params.seed)
    blocks: dict[int, Embedded] = {u: te_embedding(source, target, conditionals, params, delay=u, start=start)
                                   for u in delays}
    first = blocks[delays[0]]
    kw = {"normalise": params.normalise, "noise": params.noise, "rng": rng}
    x = {u: prepare(b.x, field="source", **kw) for u, b in blocks.items()}
    y = prepare(first.y, field="target", **kw)
    z = prepare(first.z, field="target", **kw)
    return PreparedTE(x=x, y=y, z=z, times=first.times, params=params)


def auto_embed(source: np.ndarray, target: np.ndarray, embedding: RagwitzConfig | dict[str, Any] | None,
               p: TEParams) -> tuple[TEParams, dict | None]:
    """The params with the destination's (and, with embedding.source, the source's) history length and
    delay chosen by the Ragwitz criterion, as JIDT's AUTO_EMBED_METHOD RAGWITZ_DEST_ONLY (RAGWITZ); each
    series is searched on its own. Returns (params, {"k_hist", "k_tau", "l_hist", "l_tau", ...}) or
    (params, None) without an embedding request."""
    if embedding is None:
        return p, None
    cfg = validated(RagwitzConfig, embedding, prefix="embedding.")
    found = {}
    for role, series in (("target", target), ("source", source)):
        if role == "source" and not cfg.source:
            continue
        try:
            found[role] = ragwitz(series, cfg, k=p.k, theiler=p.theiler, workers=p.workers)
        except InputError as exc:
            if exc.field != "series":
                raise
            raise InputError(role, exc.message, exc.allowed) from None
    update = {"k_hist": found["target"].hist, "k_tau": found["target"].tau}
    if "source" in found:
        update |= {"l_hist": found["source"].hist, "l_tau": found["source"].tau}
    p = validated(TEParams, p, **update)
    info = {"method": "ragwitz", "source": cfg.source, "k_hist": p.k_hist, "k_tau": p.k_tau, "l_hist": p.l_hist,
            "l_tau": p.l_tau, "neighbours": cfg.n_neighbours or p.k}
    return p, info


def transfer_entropy(source, target, *, conditionals: Sequence = (),
                     params: TEParams | dict[str, Any] | None = None,
                     embedding: RagwitzConfig | dict[str, Any] | None = None, **overrides: Any) -> TEResult:
    """TE(source -> target) in nats with local values; conditionals make it conditional TE; `embedding`
    (a RagwitzConfig) chooses the destination's (and the source's) history and delay first."""
    p = resolve_params(params, **overrides)
    src, tgt, conds = check_inputs(source, target, conditionals)
    p, emb = auto_embed(src, tgt, embedding, p)
    prep = prepare_te(src, tgt, conds, p, [p.delay])
    res = prep.estimate(p.delay)
    return TEResult(te=res.value, local=res.local, times=prep.times, ksg=res, params=p, delay=p.delay, embedding=emb)


def conditional_mutual_information(x, y, z=None, *, params: TEParams | dict[str, Any] | None = None,
                                   **overrides: Any) -> MIResult:
    """KSG I(X; Y | Z) in nats for [T] or [T, d] samples (Z optional; without it this is MI).

    Uses k, algorithm, normalise, noise, seed, theiler and workers of TEParams.
    """
    p = resolve_params(params, **overrides)
    xa = as_series(x, "x", allow_2d=True)
    ya = as_series(y, "y", length=xa.shape[0], allow_2d=True)
    za = None if z is None else as_series(z, "z", length=xa.shape[0], allow_2d=True)
    n = xa.shape[0]
    if p.k >= n - 2 * p.theiler:
        raise InputError("k", f"k={p.k} needs more than k samples outside the Theiler window; there are {n}",
                         f"1 <= k <= {max(n - 2 * p.theiler - 1, 0)}")
    rng = np.random.default_rng(p.seed)
    kw = {"normalise": p.normalise, "noise": p.noise, "rng": rng}
    blocks = [prepare(a.reshape(a.shape[0], -1), field=f, **kw) for a, f in ((xa, "x"), (ya, "y"))]
    zb = None if za is None else prepare(za.reshape(za.shape[0], -1), field="z", **kw)
    res = ksg_cmi(blocks[0], blocks[1], zb, k=p.k, theiler=p.theiler, algorithm=p.algorithm, workers=p.workers)
    return MIResult(value=res.value, local=res.local, ksg=res, params=p)


def mutual_information(x, y, *, params: TEParams | dict[str, Any] | None = None, **overrides: Any) -> MIResult:
    """KSG I(X; Y) in nats (JIDT MutualInfoCalculatorMultiVariateKraskov1 by default)."""
    return conditional_mutual_information(x, y, None, params=params, **overrides)


def surrogate_statistics(prep: PreparedTE, delays: Sequence[int], orders: np.ndarray) -> np.ndarray:
    """[S] surrogate TE, the maximum over `delays` under the same reordering of the source rows.

    On a device backend all delays x surrogates go to the kernel in one batch; on the cpu path each
    surrogate is a checkpoint of the caller's budget (actors.common.budget: deadline, cancellation).
    """
    p = prep.params
    kind = "cpu" if p.backend == "cpu" else resolve_backend(p.backend)
    if kind != "cpu":
        vals = ksg_values_device([prep.x[u] for u in delays], prep.y, prep.z, orders, k=p.k, theiler=p.theiler,
                                 algorithm=p.algorithm, backend=kind)
        return vals.max(axis=0)
    out = np.empty(len(orders))
    for s, order in enumerate(orders):
        checkpoint()
        out[s] = max(prep.estimate(u, order).value for u in delays)
    return out


def te_significance(source, target, *, conditionals: Sequence = (),
                    params: TEParams | dict[str, Any] | None = None,
                    significance: SignificanceConfig | dict[str, Any] | None = None,
                    lags: Sequence[int] | None = None, embedding: RagwitzConfig | dict[str, Any] | None = None,
                    **overrides: Any) -> TESignificance:
    """Observed TE (best delay in `lags`, else params.delay) and its surrogate p-value.

    With several delays the surrogate statistic is also the maximum over delays, so the test
    accounts for the search.
    """
    p = resolve_params(params, **overrides)
    sig = validated(SignificanceConfig, significance, prefix="significance.")
    delays = _check_lags(lags, p)
    src, tgt, conds = check_inputs(source, target, conditionals)
    p, emb = auto_embed(src, tgt, embedding, p)
    prep = prepare_te(src, tgt, conds, p, delays)
    by_lag = {u: prep.estimate(u).value for u in delays}
    best = max(delays, key=lambda u: by_lag[u])
    orders = surrogate_orders(prep.n, sig, np.random.default_rng(sig.seed))
    surr = surrogate_statistics(prep, delays, orders)
    return TESignificance(te=by_lag[best], p_value=p_value(by_lag[best], surr), lag=best, surrogates=surr,
                          te_by_lag=by_lag, n_obs=prep.n, embedding=emb, params=p)


def _check_lags(lags: Sequence[int] | None, p: TEParams) -> list[int]:
    if lags is None:
        return [p.delay]
    delays = [int(u) for u in lags]
    if not delays or min(delays) < 1:
        raise InputError("lags", f"{list(lags)} is empty or holds a delay < 1", "a non-empty list of delays >= 1")
    return sorted(set(delays))
