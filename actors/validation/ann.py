"""Nearest-neighbour search for localization: exact FAISS below a size, an approximate index above.

Exact search (IndexFlatL2) costs n_queries x n_reference distance evaluations: fine for 10^5 rows,
hours for the real-vs-real leave-one-out pass at 10^6. Above `exact_below` reference rows,
`method="auto"` uses IVF-Flat (k-means coarse quantiser with nlist ~ 4 sqrt(n) lists trained on a
sample, `nprobe` lists searched per query: a query scans ~ nprobe / nlist of the rows, distances
within a scanned list are exact). HNSW (a navigable small-world graph, `ef_search` candidates) is
the alternative; slower to build on 2 cores. Approximate search can only miss the true neighbour,
never report one closer than it: the returned distance is >= the exact one (checked by the tests),
and recall@1 against exact search on a sample is measured by jobs/bench/validation_scale.py (docs/validation.md).
Engine code: no Ray.
"""
from __future__ import annotations

import numpy as np

from actors.common.budget import checkpoint
from actors.common.errors import InputError
from actors.validation.config import NeighbourSearch as Method

QUERY_BATCH = 16_384   # queries per FAISS search call: the request budget is checked between calls


def build_index(reference: np.ndarray, method: Method = "auto", *, exact_below: int = 50_000, nprobe: int = 16,
                ef_search: int = 128, seed: int = 0):
    """A FAISS index over the reference rows (float32); `method` as in the module docstring."""
    import faiss

    ref = np.ascontiguousarray(reference, dtype=np.float32)
    n, d = ref.shape
    if method not in ("auto", "exact", "ivf", "hnsw"):
        raise InputError("ann", f"unknown method {method!r}", "auto, exact, ivf, hnsw")
    if method == "auto":
        method = "exact" if n < exact_below else "ivf"
    if method == "exact" or n < 1_000:
        index = faiss.IndexFlatL2(d)
    elif method == "hnsw":
        index = faiss.IndexHNSWFlat(d, 32)
        index.hnsw.efSearch = ef_search
    else:
        nlist = int(max(16, min(4 * np.sqrt(n), n // 39)))      # FAISS wants >= 39 training points per list
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
        train = ref[np.random.default_rng(seed).choice(n, min(n, 40 * nlist), replace=False)]
        index.cp.seed, index.cp.niter = seed, 10           # coarse lists: 10 k-means rounds are plenty
        index.train(train)
        index.nprobe = min(nprobe, nlist)
    index.add(ref)
    return index


def nearest(reference: np.ndarray, queries: np.ndarray, *, k: int = 1, method: Method = "auto",
            exclude_self: bool | np.ndarray = False, exact_below: int = 50_000, index=None, **kw) -> tuple[np.ndarray, np.ndarray]:
    """(Euclidean distance, index) of each query's k-th nearest reference row.

    exclude_self: True when the queries ARE the reference rows (same order), or the reference row
    id of each query; that row is skipped (leave-one-out), also when an approximate index fails to
    return it first.
    index: a `build_index(reference, ...)` to reuse (training IVF at 10^6 rows takes a while).
    """
    index = index if index is not None else build_index(reference, method, exact_below=exact_below, **kw)
    q = np.ascontiguousarray(queries, dtype=np.float32)
    self_ids = np.arange(len(q)) if exclude_self is True else exclude_self
    skip = self_ids is not False and self_ids is not None
    parts = []
    for start in range(0, len(q), QUERY_BATCH):
        checkpoint()
        parts.append(index.search(q[start:start + QUERY_BATCH], k + int(skip)))
    d2 = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, k + int(skip)), np.float32)
    ii = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, k + int(skip)), np.int64)
    if skip:
        own = ii == np.asarray(self_ids)[:, None]
        # drop the row itself where found, else the last column (the k+1-th)
        drop = np.where(own.any(axis=1), own.argmax(axis=1), k)
        keep = np.ones_like(own)
        keep[np.arange(len(q)), drop] = False
        d2, ii = d2[keep].reshape(len(q), k), ii[keep].reshape(len(q), k)
    d2, ii = d2[:, k - 1], ii[:, k - 1]
    missing = ii < 0                                    # IVF: fewer than k rows in the probed lists
    d = np.sqrt(np.maximum(d2, 0.0)).astype(np.float64)
    d[missing] = np.inf
    return d, ii.astype(np.int64)


def recall_at_1(exact_distance: np.ndarray, approx_distance: np.ndarray, rtol: float = 1e-4) -> float:
    """Share of queries whose approximate nearest distance equals the exact one (ties count as found)."""
    return float(np.mean(approx_distance <= exact_distance * (1 + rtol) + 1e-6))
