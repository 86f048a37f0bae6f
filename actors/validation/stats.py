"""Two-sample statistics of each collapse dimension, vectorised over columns.

Each `*_stats(ctx, mask)` takes the pooled data and a boolean mask (True = the synthetic group) and
returns {component: value}, larger = more different. The permutation null calls the same function
with shuffled masks, so everything that does not depend on the mask is precomputed once in `Context`
(sorted columns, bin codes, tail cut-offs). Component names are "<statistic>:<column>"; the tests
compare each statistic with scipy / sklearn on the two groups.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from scipy.stats import rankdata

from actors.validation.data import Pooled

_TINY = 1e-12


@dataclass
class Context:
    """Mask-independent precomputation on the pooled rows (sorted columns, bins, tail cut-offs)."""

    pooled: Pooled
    tail_quantile: float = 0.05
    n_pcs: int = 5
    mi_pairs: int = 10
    mi_rows: int = 300
    mi_k: int = 4
    seed: int = 0
    _cache: dict = field(default_factory=dict)

    @cached_property
    def sorted(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(order, valid, tie_end, dx) of each numeric column sorted ascending, NaN last."""
        X = self.pooled.X
        order = np.argsort(X, axis=0, kind="stable")
        xs = np.take_along_axis(X, order, axis=0)
        valid = ~np.isnan(xs)
        nxt = np.vstack([xs[1:], np.full((1, xs.shape[1]), np.nan)])
        tie_end = valid & ~(nxt == xs)
        dx = np.where(valid[1:] & ~np.isnan(xs[1:]), np.diff(xs, axis=0), 0.0)
        return order, valid, tie_end, np.nan_to_num(dx)

    @cached_property
    def sd(self) -> np.ndarray:
        sd = np.nanstd(self.pooled.X, axis=0) if self.pooled.X.shape[1] else np.empty(0)
        return np.where(sd > 0, sd, 1.0)

    @cached_property
    def tails(self) -> tuple[np.ndarray, np.ndarray]:
        X, q = self.pooled.X, self.tail_quantile
        if X.shape[1] == 0:
            return np.empty(0), np.empty(0)
        return np.nanquantile(X, q, axis=0), np.nanquantile(X, 1 - q, axis=0)

    @cached_property
    def discrete(self) -> tuple[np.ndarray, list[int], list[str]]:
        """All columns as codes: numeric -> quantile bin (NaN its own bin), categorical -> category."""
        p = self.pooled
        D = np.hstack([p.bins, p.C]) if p.C.size else p.bins
        sizes = [p.n_bins + 1] * len(p.numeric) + [len(lv) for lv in p.levels]
        return D, sizes, p.numeric + p.categorical

    @cached_property
    def flat_codes(self) -> tuple[np.ndarray, int]:
        """Codes of every column offset into one range (column j -> j * kmax + code), and kmax."""
        D, sizes, _ = self.discrete
        kmax = max(sizes) if sizes else 1
        return D + np.arange(D.shape[1]) * kmax, kmax

    @cached_property
    def pooled_ranks(self) -> np.ndarray:
        """Average ranks of each column over the pooled rows: the rank correlation of a group is the
        Pearson correlation of these (a monotone transform shared by both groups, so it does not
        change under relabelling; ~Spearman, without re-ranking every permutation)."""
        return rankdata(self.pooled.Z, axis=0)

    @cached_property
    def mi_data(self) -> np.ndarray:
        """Pooled z-scores plus Gaussian noise of 1e-8 sd (seeded) so kNN ties break (as JIDT / actors.te)."""
        rng = np.random.default_rng(self.seed)
        Z = self.pooled.Z
        return Z + 1e-8 * rng.standard_normal(Z.shape)

    @cached_property
    def mi_pair_list(self) -> list[tuple[int, int]]:
        """The most dependent numeric column pairs by pooled |Spearman| (mask-independent)."""
        Z = self.pooled.Z
        if Z.shape[1] < 2:
            return []
        r = np.abs(_corr(rankdata(Z, axis=0)))
        iu = np.triu_indices(Z.shape[1], 1)
        keep = np.argsort(-np.nan_to_num(r[iu]), kind="stable")[: self.mi_pairs]
        return [(int(iu[0][i]), int(iu[1][i])) for i in keep]


def ks_wasserstein(ctx: Context, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per numeric column: two-sample KS D and Wasserstein-1 / pooled sd, NaN ignored."""
    order, valid, tie_end, dx = ctx.sorted
    if order.shape[1] == 0:
        return np.empty(0), np.empty(0)
    s = mask[order] & valid
    r = ~mask[order] & valid
    cs, cr = np.cumsum(s, axis=0), np.cumsum(r, axis=0)
    ns, nr = np.maximum(cs[-1], 1), np.maximum(cr[-1], 1)
    diff = np.abs(cs / ns - cr / nr)
    ks = np.max(np.where(tie_end, diff, 0.0), axis=0)
    w1 = np.sum(diff[:-1] * dx, axis=0) / ctx.sd
    return ks, w1


def all_counts(ctx: Context, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[n_columns, kmax] real and synthetic counts of every column's codes, by one bincount each."""
    flat, kmax = ctx.flat_codes
    m = flat.shape[1] * kmax
    return (np.bincount(flat[~mask].ravel(), minlength=m).reshape(-1, kmax).astype(float),
            np.bincount(flat[mask].ravel(), minlength=m).reshape(-1, kmax).astype(float))


def js_rows(cr: np.ndarray, cs: np.ndarray) -> np.ndarray:
    """Row-wise Jensen-Shannon distance (natural log) of count vectors."""
    p = cr / np.maximum(cr.sum(axis=1, keepdims=True), _TINY)
    q = cs / np.maximum(cs.sum(axis=1, keepdims=True), _TINY)
    m = 0.5 * (p + q)
    return np.sqrt(np.maximum(0.5 * _kl_rows(p, m) + 0.5 * _kl_rows(q, m), 0.0))


def kl_rows(cr: np.ndarray, cs: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Row-wise KL(real || synthetic), add-0.5 smoothing on each column's own `sizes` codes."""
    live = np.arange(cr.shape[1])[None, :] < sizes[:, None]
    p = np.where(live, cr + 0.5, 0.0)
    q = np.where(live, cs + 0.5, 0.0)
    return _kl_rows(p / p.sum(axis=1, keepdims=True), q / q.sum(axis=1, keepdims=True))


def _kl_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        t = np.where(p > 0, p * np.log(p / q), 0.0)
    return t.sum(axis=1)


def entropy_rows(c: np.ndarray) -> np.ndarray:
    """Row-wise Shannon entropy (nats) of count vectors."""
    p = c / np.maximum(c.sum(axis=1, keepdims=True), _TINY)
    with np.errstate(all="ignore"):
        return -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)


def chi2_rows(cr: np.ndarray, cs: np.ndarray) -> np.ndarray:
    """Row-wise Pearson chi-squared of the 2 x K tables [cr; cs] (empty categories dropped)."""
    T = np.stack([cr, cs], axis=1)
    return chi2_tables(T)


def chi2_tables(T: np.ndarray) -> np.ndarray:
    """Pearson chi-squared of a stack of tables [m, r, c]; empty rows/columns contribute nothing."""
    n = T.sum(axis=(1, 2))
    E = T.sum(axis=2)[:, :, None] * T.sum(axis=1)[:, None, :] / np.maximum(n, _TINY)[:, None, None]
    with np.errstate(all="ignore"):
        return np.where(E > 0, (T - E) ** 2 / E, 0.0).sum(axis=(1, 2))


def cramers_v_tables(T: np.ndarray) -> np.ndarray:
    """Cramér's V (no bias correction) of a stack of tables [m, r, c], empty rows/columns ignored."""
    k = np.minimum((T.sum(axis=2) > 0).sum(axis=1), (T.sum(axis=1) > 0).sum(axis=1)) - 1
    n = T.sum(axis=(1, 2))
    with np.errstate(all="ignore"):
        v = np.sqrt(chi2_tables(T) / (n * k))
    return np.where(k >= 1, v, 0.0)


def auc_from_scores(scores: np.ndarray, mask: np.ndarray) -> float:
    """ROC AUC of `scores` for the positives in `mask` (Mann-Whitney, average ranks for ties)."""
    ranks = rankdata(scores)
    return auc_from_ranks(ranks, mask)


def auc_from_ranks(ranks: np.ndarray, mask: np.ndarray) -> float | np.ndarray:
    """AUC from pooled ranks; `mask` may be [N] or [B, N] (one AUC per row)."""
    n1 = mask.sum(axis=-1)
    n0 = mask.shape[-1] - n1
    return ((mask * ranks).sum(axis=-1) - n1 * (n1 + 1) / 2) / (n1 * n0)


def _corr(A: np.ndarray) -> np.ndarray:
    A = A - A.mean(axis=0)
    sd = np.sqrt((A * A).sum(axis=0))
    with np.errstate(all="ignore"):
        r = (A.T @ A) / np.outer(sd, sd)
    return np.nan_to_num(r)


# ---- the dimensions -------------------------------------------------------------------------------

def marginals(ctx: Context, mask: np.ndarray) -> dict[str, float]:
    """KS and normalised Wasserstein per numeric column, chi-squared per categorical, missing-rate gap."""
    p = ctx.pooled
    ks, w1 = ks_wasserstein(ctx, mask)
    miss = np.isnan(p.X)
    gap = np.abs(miss[mask].mean(axis=0) - miss[~mask].mean(axis=0)) if p.numeric else np.empty(0)
    out: dict[str, float] = {}
    for j, c in enumerate(p.numeric):
        out[f"ks:{c}"] = float(ks[j])
        out[f"wasserstein:{c}"] = float(w1[j])
        out[f"missing:{c}"] = float(gap[j])
    if p.categorical:
        cr, cs = all_counts(ctx, mask)
        chi = chi2_rows(cr[len(p.numeric):], cs[len(p.numeric):])
        out.update({f"chi2:{c}": float(v) for c, v in zip(p.categorical, chi)})
    return out


def divergence(ctx: Context, mask: np.ndarray) -> dict[str, float]:
    """Jensen-Shannon distance and smoothed KL(real || synthetic) of binned / categorical columns."""
    _, sizes, names = ctx.discrete
    cr, cs = all_counts(ctx, mask)
    js, kl = js_rows(cr, cs), kl_rows(cr, cs, np.asarray(sizes))
    out: dict[str, float] = {}
    for j, c in enumerate(names):
        out[f"js:{c}"] = float(js[j])
        out[f"kl:{c}"] = float(kl[j])
    return out


def coverage(ctx: Context, mask: np.ndarray) -> dict[str, float]:
    """Entropy gap, variance log-ratio and tail-mass log-ratio per numeric column; entropy and
    category coverage (share of real categories absent from the synthetic data) per categorical."""
    p = ctx.pooled
    _, _, names = ctx.discrete
    cr, cs = all_counts(ctx, mask)
    dh = np.abs(entropy_rows(cs) - entropy_rows(cr))
    out: dict[str, float] = {f"entropy:{c}": float(v) for c, v in zip(names, dh)}
    if p.numeric:
        lo, hi = ctx.tails
        xr, xs = p.X[~mask], p.X[mask]
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            var = np.log((np.nanvar(xs, axis=0) + _TINY) / (np.nanvar(xr, axis=0) + _TINY))
            nr, ns = (~np.isnan(xr)).sum(axis=0), (~np.isnan(xs)).sum(axis=0)
            tr = ((xr < lo) | (xr > hi)).sum(axis=0) / np.maximum(nr, 1)
            ts = ((xs < lo) | (xs > hi)).sum(axis=0) / np.maximum(ns, 1)
            tails = np.log((ts + 1 / np.maximum(ns, 1)) / (tr + 1 / np.maximum(nr, 1)))
        var = np.where(ns < 2, -np.inf, np.nan_to_num(var, nan=0.0))
        for j, c in enumerate(p.numeric):
            out[f"variance:{c}"] = abs(float(var[j]))
            out[f"tails:{c}"] = abs(float(tails[j]))
        # a generator that shrinks / truncates does it to every column: the signed mean has the power
        out["variance:*"] = abs(float(np.mean(var)))
        out["tails:*"] = abs(float(np.mean(tails)))
    for j, c in enumerate(p.categorical, start=len(p.numeric)):
        real_cats = cr[j] > 0
        out[f"coverage:{c}"] = float(1 - (real_cats & (cs[j] > 0)).sum() / max(real_cats.sum(), 1))
    return out


def correlation(ctx: Context, mask: np.ndarray) -> dict[str, float]:
    """Per column: mean |difference| of its Pearson and rank-correlation rows (numeric) and of its Cramér's V
    row against every other column (categorical); plus the Frobenius norm of the Pearson gap."""
    p = ctx.pooled
    out: dict[str, float] = {}
    if len(p.numeric) >= 2:
        Zr, Zs = p.Z[~mask], p.Z[mask]
        dp = np.abs(_corr(Zr) - _corr(Zs))
        R = ctx.pooled_ranks
        ds = np.abs(_corr(R[~mask]) - _corr(R[mask]))
        k = len(p.numeric) - 1
        for j, c in enumerate(p.numeric):
            out[f"pearson:{c}"] = float(dp[j].sum() / k)
            out[f"spearman:{c}"] = float(ds[j].sum() / k)
        out["pearson:*"] = float(np.sqrt((dp ** 2).sum() / 2))
    D, sizes, names = ctx.discrete
    if len(names) < 2:
        return out
    kmax = max(sizes)
    for a in range(len(p.numeric), len(names)):
        others = [b for b in range(len(names)) if b != a]
        v = [cramers_v_tables(_tables(D[g], a, others, sizes[a], kmax)) for g in (~mask, mask)]
        out[f"cramer:{names[a]}"] = float(np.mean(np.abs(v[0] - v[1])))
    return out


def _tables(D: np.ndarray, a: int, others: list[int], ka: int, kmax: int) -> np.ndarray:
    """[len(others), ka, kmax] contingency tables of column a against each other column."""
    flat = (np.arange(len(others)) * ka * kmax)[None, :] + D[:, [a]] * kmax + D[:, others]
    m = len(others) * ka * kmax
    return np.bincount(flat.ravel(), minlength=m).reshape(len(others), ka, kmax).astype(float)


def spectral(ctx: Context, mask: np.ndarray) -> dict[str, float]:
    """PCA explained-variance spectrum gap (L1, top n_pcs), total-variance log-ratio, and the
    subspace distance sum(sin^2 principal angles) between the top principal subspaces."""
    Z = ctx.pooled.Z
    if Z.shape[1] < 2:
        return {}
    k = min(ctx.n_pcs, Z.shape[1] - 1)
    evr_r, tot_r, V_r = _pca(Z[~mask], k)
    evr_s, tot_s, V_s = _pca(Z[mask], k)
    return {"spectrum:*": float(np.abs(evr_r - evr_s).sum()),
            "total_variance:*": abs(float(np.log((tot_s + _TINY) / (tot_r + _TINY)))),
            "subspace:*": float(k - np.sum((V_r.T @ V_s) ** 2))}   # = sum sin^2(principal angles)


def _pca(A: np.ndarray, k: int) -> tuple[np.ndarray, float, np.ndarray]:
    """(explained-variance ratios of the top k, total variance, [p, k] principal axes)."""
    A = A - A.mean(axis=0)
    _, s, vt = np.linalg.svd(A, full_matrices=False)
    var = s ** 2
    return var[:k] / max(var.sum(), _TINY), float(var.sum() / max(len(A) - 1, 1)), vt[:k].T


def dependence(ctx: Context, mask: np.ndarray) -> dict[str, float]:
    """|KSG MI(real) - KSG MI(synthetic)| (nats) for the most dependent column pairs, on mi_rows rows."""
    names = ctx.pooled.numeric
    pairs = ctx.mi_pair_list
    if not pairs:
        return {}
    sel = ctx._cache.get("mi_sel")
    if sel is None:
        rng = np.random.default_rng(ctx.seed)
        sel = [np.sort(rng.permutation(int(n))[: ctx.mi_rows]) for n in ((~mask).sum(), mask.sum())]
        ctx._cache["mi_sel"] = sel
    a, b = np.array(pairs).T
    k = min(ctx.mi_k, min(len(s) for s in sel) - 1)   # tables smaller than mi_k + 1 rows a side: fewer neighbours
    mi = []
    for g, rows in ((~mask, sel[0]), (mask, sel[1])):
        W = ctx.mi_data[np.flatnonzero(g)[rows]]
        mi.append(ksg_mi_batch(W[:, a].T, W[:, b].T, k))
    d = np.abs(mi[0] - mi[1])
    return {f"mi:{names[i]}|{names[j]}": float(v) for i, j, v in zip(a, b, d)}


def ksg_mi_batch(x: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """KSG algorithm-1 MI (nats, max-norm) of P pairs of series at once: x, y are [P, n].

    The same estimator as actors.te.mutual_information (JIDT MutualInfoCalculatorMultiVariateKraskov1)
    on already z-scored, noised inputs, done on dense [P, n, n] distance blocks: for the few hundred
    rows the detector uses, this is ~50x faster than one cKDTree query per pair and permutation.
    """
    from scipy.special import digamma

    n = x.shape[1]
    dx = np.abs(x[:, :, None] - x[:, None, :])
    dy = np.abs(y[:, :, None] - y[:, None, :])
    dz = np.maximum(dx, dy)
    eye = np.eye(n, dtype=bool)[None]
    dz[np.broadcast_to(eye, dz.shape)] = np.inf
    eps = np.partition(dz, k - 1, axis=2)[:, :, k - 1:k]
    nx = (dx < eps).sum(axis=2) - 1      # minus the point itself (distance 0 < eps)
    ny = (dy < eps).sum(axis=2) - 1
    return digamma(k) + digamma(n) - (digamma(nx + 1) + digamma(ny + 1)).mean(axis=1)


STATISTICS = {"marginals": marginals, "divergence": divergence, "correlation": correlation,
              "coverage": coverage, "spectral": spectral, "dependence": dependence}


def component_columns(component: str) -> list[str]:
    """The input columns a component is about ("ks:x" -> [x], "mi:a|b" -> [a, b], "spectrum:*" -> [])."""
    _, _, rest = component.partition(":")
    if rest == "*":
        return []
    return rest.split("|") if component.startswith("mi:") else [rest]
