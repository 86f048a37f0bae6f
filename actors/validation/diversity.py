"""Diversity analyzer: per-column entropy and category coverage, the Vendi score, rare patterns. No Ray.

Vendi score (Friedman & Dieng 2023): exp of the Shannon entropy of the eigenvalues of K / n, K an
RBF similarity matrix of the rows (standardised features, bandwidth = median pairwise distance):
the effective number of distinct rows - 1 for n identical rows, n for n rows far apart.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from actors.common.budget import checkpoint
from actors.common.errors import InputError
from actors.validation.data import check_tables, pool
from actors.validation.detector import model_features


def vendi_score(F: np.ndarray, *, bandwidth: float | None = None) -> float:
    """exp(H(eigenvalues of K/n)) with an RBF kernel; F is [n, d] (rows are items)."""
    from scipy.spatial.distance import pdist, squareform

    n = len(F)
    if n == 0:
        return 0.0
    checkpoint()   # an n x n kernel and its eigenvalues: the costly step
    d = squareform(pdist(F))
    if bandwidth is None:
        off = d[np.triu_indices(n, 1)]
        bandwidth = float(np.median(off[off > 0])) if np.any(off > 0) else 1.0
    w = np.linalg.eigvalsh(np.exp(-(d / bandwidth) ** 2 / 2) / n)
    w = w[w > 1e-12]
    return float(np.exp(-np.sum(w * np.log(w))))


def analyze(table: pd.DataFrame, reference: pd.DataFrame | None = None, *, max_rows: int = 2000,
            rare: float = 0.01, seed: int = 0, text_columns: list[str] | None = None,
            text_rows: int = 1_000) -> dict[str, Any]:
    """Entropy per column (quantile-binned numeric), coverage of the reference's categories, Vendi
    score on up to `max_rows` rows, and categories rarer than `rare` (or absent) vs the reference.

    Free-text columns (`text_columns`, or detected by `text.is_text` when None) are left out of the
    tabular part (as categories every value would be its own level) and get semantic diversity from
    sentence embeddings instead (actors/validation/text.py) under out["text"][column]."""
    ref = reference if reference is not None else table
    check_tables(ref, table)
    if extra := [c for c in table.columns if c not in ref.columns]:
        raise InputError("table", f"columns {extra} are not in the reference", ", ".join(map(str, ref.columns)))
    from actors.validation.text import is_text, text_diversity

    if text_columns is None:
        text_columns = [c for c in table.columns if is_text(table[c]) and is_text(ref[c])]
    elif unknown := [c for c in text_columns if c not in table.columns]:
        raise InputError("text_columns", f"{unknown} are not columns of the table", ", ".join(map(str, table.columns)))
    text = {}
    for c in text_columns:
        checkpoint()   # the request's budget / cancellation, per embedded column
        text[str(c)] = text_diversity(table[c], reference[c] if reference is not None else None, max_rows=text_rows,
                                      seed=seed)
    rest = [c for c in table.columns if c not in text_columns]
    if not rest:
        return {"rows": int(len(table)), "columns": {}, "text": text}
    out = _tabular(table[rest], reference[rest] if reference is not None else None, max_rows, rare, seed)
    if text:
        out["text"] = text
    return out


def _tabular(table: pd.DataFrame, reference: pd.DataFrame | None, max_rows: int, rare: float,
             seed: int) -> dict[str, Any]:
    ref = reference if reference is not None else table
    p = pool(ref, table, max_rows=max_rows, seed=seed)
    from actors.validation.stats import Context, all_counts, entropy_rows

    ctx = Context(p)
    _, _, names = ctx.discrete
    cr, cs = all_counts(ctx, p.is_synth)
    h_t, h_r = entropy_rows(cs), entropy_rows(cr)
    F = model_features(p)
    out: dict[str, Any] = {"rows": int(len(table)), "columns": {}, "vendi": vendi_score(F[p.is_synth])}
    if reference is not None:
        out["vendi_reference"] = vendi_score(F[~p.is_synth])
    for j, c in enumerate(names):
        col = {"entropy": float(h_t[j])}
        if reference is not None:
            col["entropy_reference"] = float(h_r[j])
        if c in p.categorical:
            k = p.categorical.index(c)
            levels = p.levels[k]
            present_r, present_t = cr[j][: len(levels)] > 0, cs[j][: len(levels)] > 0
            col["coverage"] = float((present_r & present_t).sum() / max(present_r.sum(), 1))
            freq = cs[j][: len(levels)] / max(cs[j].sum(), 1)
            col["rare"] = [levels[i] for i in np.flatnonzero((freq < rare) & present_t)]
            col["missing_categories"] = [levels[i] for i in np.flatnonzero(present_r & ~present_t)]
        out["columns"][c] = col
    return out
