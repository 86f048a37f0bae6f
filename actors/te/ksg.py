"""KSG conditional mutual information I(X; Y | Z) in the full joint space (Frenzel-Pompe), fast CPU path.

Max-norm everywhere, as JIDT. With an empty Z this is KSG mutual information and reproduces JIDT's
MutualInfoCalculatorMultiVariateKraskov1/2 (n_z = N-1 resp. N, digamma(N) term).

Algorithm 1 (JIDT ConditionalMutualInfoCalculatorMultiVariateKraskov1):
    eps_i = distance to the k-th neighbour in (X, Y, Z), point i and its Theiler window excluded;
    n_xz, n_yz, n_z = neighbours strictly closer than eps_i in (X,Z), (Y,Z), Z (window excluded);
    local_i = psi(k) - psi(n_xz + 1) - psi(n_yz + 1) + psi(n_z + 1).
Algorithm 2 (JIDT ...Kraskov2): eps_x, eps_y, eps_z = the largest X, Y, Z distances among the k
    joint neighbours; counts use <= with a separate radius per subspace;
    local_i = psi(k) - 2/k + psi(n_z) - psi(n_xz) - psi(n_yz) + 1/n_xz + 1/n_yz
    (with an empty Z: 1/k instead of 2/k and no 1/n terms, as JIDT).

Neighbour search is scipy's cKDTree with p=inf; "strictly closer than eps" is a ball query of radius
nextafter(eps, 0), which is exact because max-norm distances are compared in the same float64
arithmetic the brute-force oracle (kernels/te/reference.py) uses.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree
from scipy.special import digamma

from actors.common.budget import checkpoint

_BLOCK = 4096        # rows per block when algorithm 2 materialises cKDTree candidate lists
_PAIRS = 2_000_000   # candidate pairs per block on the sorted 1-D path


@dataclass(frozen=True)
class KSGResult:
    """Local values (nats) and the neighbour counts behind them."""

    local: np.ndarray   # [n]
    n_xz: np.ndarray    # [n] int
    n_yz: np.ndarray    # [n] int
    n_z: np.ndarray     # [n] int
    eps: np.ndarray     # [n] joint k-th neighbour distance (alg 1) or [n, 3] (eps_x, eps_y, eps_z) (alg 2)

    @property
    def value(self) -> float:
        """The estimate: mean of the local values."""
        return float(np.mean(self.local))


def _as2d(a: np.ndarray | None, n: int) -> np.ndarray:
    if a is None:
        return np.empty((n, 0))
    a = np.asarray(a, dtype=np.float64)
    return a[:, None] if a.ndim == 1 else a


def knn(joint: np.ndarray, k: int, theiler: int, workers: int) -> tuple[np.ndarray, np.ndarray]:
    """Distances and indices of the k nearest joint neighbours outside |i - j| <= theiler, nearest first.

    Querying k + 2*theiler + 1 points always leaves at least k outside the window, and the k-th
    distance among them is the true k-th distance even under ties (every strictly closer point is
    returned).
    """
    n = joint.shape[0]
    m = k + 2 * theiler + 1
    dist, idx = cKDTree(joint).query(joint, k=list(range(1, m + 1)), p=np.inf, workers=workers)
    keep = np.abs(idx - np.arange(n)[:, None]) > theiler
    # stable order of the kept columns: position of the j-th kept entry per row
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    rows = np.arange(n)[:, None]
    return dist[rows, order], idx[rows, order]


def _max_dist(a: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Max-norm distance between rows i and j of `a` (0 for an empty space)."""
    if a.shape[1] == 0:
        return np.zeros(i.shape[0])
    return np.abs(a[i] - a[j]).max(axis=1)


def _window_hits(space: np.ndarray, radius: np.ndarray, theiler: int, strict: bool) -> np.ndarray:
    """Per row, how many points with |i - j| <= theiler (itself included) lie within radius."""
    n = space.shape[0]
    hits = np.zeros(n, dtype=np.int64)
    rows = np.arange(n)
    for off in range(-theiler, theiler + 1):
        j = rows + off
        ok = (j >= 0) & (j < n)
        d = _max_dist(space, rows[ok], j[ok])
        hits[ok] += (d < radius[ok]) if strict else (d <= radius[ok])
    return hits


def _first_index(sorted_vals: np.ndarray, centre: np.ndarray, bound: np.ndarray, inclusive: bool) -> np.ndarray:
    """Per row, the first j with fl(sorted_vals[j] - centre) >= bound (> bound unless inclusive).

    fl(v - c) is non-decreasing in v, so the predicate is monotone along the sorted array and a
    vectorised binary search finds the boundary exactly, in the same arithmetic as the oracle.
    """
    n = sorted_vals.shape[0]
    lo = np.zeros(centre.shape[0], dtype=np.int64)
    hi = np.full(centre.shape[0], n, dtype=np.int64)
    active = lo < hi
    while active.any():
        mid = (lo + hi) // 2
        diff = sorted_vals[np.minimum(mid, n - 1)] - centre
        ok = diff >= bound if inclusive else diff > bound
        hi = np.where(active & ok, mid, hi)
        lo = np.where(active & ~ok, mid + 1, lo)
        active = lo < hi
    return lo


def _count_1d(v: np.ndarray, radius: np.ndarray, strict: bool) -> np.ndarray:
    """#{j : |v_j - v_i| < r_i} (or <= r_i), point itself included, by binary search on sorted v.

    Since fl(v_j - v_i) = -fl(v_i - v_j), |v_j - v_i| < r  <=>  -r < fl(v_j - v_i) < r: one interval.
    """
    vals = np.sort(v)
    left = _first_index(vals, v, -radius, inclusive=not strict)   # first with diff > -r (>= -r)
    right = _first_index(vals, v, radius, inclusive=strict)       # first with diff >= r (> r)
    return right - left


def _count(space: np.ndarray, radius: np.ndarray, theiler: int, strict: bool, workers: int) -> np.ndarray:
    """#{j : |i - j| > theiler, ||s_i - s_j||_inf < r_i} (or <= r_i when not strict) for every i."""
    if space.shape[1] == 1:
        counts = _count_1d(space[:, 0], radius, strict)
    else:
        r = np.nextafter(radius, 0.0) if strict else radius  # d <= nextafter(r, 0)  <=>  d < r
        counts = cKDTree(space).query_ball_point(space, r, p=np.inf, return_length=True,
                                                 workers=workers).astype(np.int64)
    counts -= _window_hits(space, radius, theiler, strict=strict)
    if strict:
        counts[radius <= 0] = 0   # nothing is strictly closer than 0 (the ball query counted ties at 0)
    return counts


def _count_strict(space: np.ndarray, eps: np.ndarray, theiler: int, workers: int) -> np.ndarray:
    """#{j : |i - j| > theiler, ||s_i - s_j||_inf < eps_i} for every i."""
    return _count(space, eps, theiler, True, workers)


def _ksg1(x, y, z, k, theiler, workers) -> KSGResult:
    n = x.shape[0]
    dist, _ = knn(np.hstack([x, y, z]), k, theiler, workers)
    eps = dist[:, k - 1]
    n_xz = _count_strict(np.hstack([x, z]), eps, theiler, workers)
    n_yz = _count_strict(np.hstack([y, z]), eps, theiler, workers)
    if z.shape[1]:
        n_z = _count_strict(z, eps, theiler, workers)
    else:
        n_z = np.full(n, n - 1, dtype=np.int64)  # JIDT: N - 1, Theiler window not applied
    local = digamma(k) - digamma(n_xz + 1) - digamma(n_yz + 1) + digamma(n_z + 1)
    return KSGResult(local=local, n_xz=n_xz, n_yz=n_yz, n_z=n_z, eps=eps)


def _z_candidates(z: np.ndarray, eps_z: np.ndarray, workers: int):
    """Yield (i, j) arrays of all pairs with ||z_i - z_j||_inf <= eps_z[i], in row blocks.

    A 1-D Z uses exact sorted ranges (vectorised); a multivariate Z uses cKDTree ball lists.
    """
    n = z.shape[0]
    if z.shape[1] == 1:
        order = np.argsort(z[:, 0], kind="stable")
        vals = z[order, 0]
        left = _first_index(vals, z[:, 0], -eps_z, inclusive=True)
        right = _first_index(vals, z[:, 0], eps_z, inclusive=False)
        lens = right - left
        ends = np.cumsum(lens)
        lo = 0
        while lo < n:  # blocks of about _PAIRS candidate pairs
            hi = int(np.searchsorted(ends, (ends[lo - 1] if lo else 0) + _PAIRS, side="right"))
            hi = min(max(hi, lo + 1), n)
            rows = np.arange(lo, hi)
            cnt = lens[rows]
            i = np.repeat(rows, cnt)
            offset = np.arange(i.size) - np.repeat(np.cumsum(cnt) - cnt, cnt)
            yield rows, i, order[np.repeat(left[rows], cnt) + offset]
            lo = hi
        return
    tree = cKDTree(z)
    for lo in range(0, n, _BLOCK):
        rows = np.arange(lo, min(lo + _BLOCK, n))
        lists = tree.query_ball_point(z[rows], eps_z[rows], p=np.inf, workers=workers)
        cnt = np.fromiter((len(c) for c in lists), dtype=np.int64, count=rows.size)
        j = np.concatenate([np.asarray(c, dtype=np.int64) for c in lists]) if cnt.sum() else np.empty(0, np.int64)
        yield rows, np.repeat(rows, cnt), j


def _ksg2_counts(x, y, z, eps3, theiler, workers) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n_xz, n_yz, n_z with <= and per-subspace radii (JIDT Kraskov2), Theiler window excluded."""
    n = x.shape[0]
    eps_x, eps_y, eps_z = eps3.T
    if z.shape[1] == 0:
        n_xz = _count(x, eps_x, theiler, False, workers)
        n_yz = _count(y, eps_y, theiler, False, workers)
        return n_xz, n_yz, np.full(n, n, dtype=np.int64)  # JIDT: N, Theiler window not applied
    n_xz = np.zeros(n, dtype=np.int64)
    n_yz = np.zeros(n, dtype=np.int64)
    n_z = np.zeros(n, dtype=np.int64)
    for rows, i, j in _z_candidates(z, eps_z, workers):
        checkpoint()   # per block of candidate pairs: the caller's budget / cancellation
        out = np.abs(i - j) > theiler
        i, j = i[out], j[out]
        local_row = i - rows[0]
        n_z[rows] = np.bincount(local_row, minlength=rows.size)
        n_xz[rows] = np.bincount(local_row, weights=_max_dist(x, i, j) <= eps_x[i], minlength=rows.size)
        n_yz[rows] = np.bincount(local_row, weights=_max_dist(y, i, j) <= eps_y[i], minlength=rows.size)
    return n_xz, n_yz, n_z


def _ksg2(x, y, z, k, theiler, workers) -> KSGResult:
    n = x.shape[0]
    _, nbr = knn(np.hstack([x, y, z]), k, theiler, workers)
    i = np.repeat(np.arange(n), k)
    j = nbr.ravel()
    eps3 = np.stack([_max_dist(s, i, j).reshape(n, k).max(axis=1) for s in (x, y, z)], axis=1)
    n_xz, n_yz, n_z = _ksg2_counts(x, y, z, eps3, theiler, workers)
    if z.shape[1]:
        local = (digamma(k) - 2.0 / k + digamma(n_z) - digamma(n_xz) - digamma(n_yz)
                 + 1.0 / n_xz + 1.0 / n_yz)
    else:
        local = digamma(k) - 1.0 / k + digamma(n_z) - digamma(n_xz) - digamma(n_yz)
    return KSGResult(local=local, n_xz=n_xz, n_yz=n_yz, n_z=n_z, eps=eps3)


def ksg_cmi(x: np.ndarray, y: np.ndarray, z: np.ndarray | None = None, *, k: int = 4, theiler: int = 0,
            algorithm: int = 1, workers: int = 1, backend: str = "cpu") -> KSGResult:
    """KSG estimate of I(X; Y | Z) in nats on already-prepared [n, d] blocks (Z may be empty/None).

    Callers check that n > k + 2*theiler (engine.py does); this function only computes. A backend
    other than "cpu" runs the torch twin or the Triton kernel (actors/te/batched.py).
    """
    x = _as2d(x, len(x))
    n = x.shape[0]
    y, z = _as2d(y, n), _as2d(z, n)
    if backend != "cpu":
        from actors.te.batched import ksg_cmi_device, resolve_backend

        kind = resolve_backend(backend)
        if kind != "cpu":
            return ksg_cmi_device(x, y, z, k=k, theiler=theiler, algorithm=algorithm, backend=kind)
    if algorithm == 1:
        return _ksg1(x, y, z, k, theiler, workers)
    if algorithm == 2:
        return _ksg2(x, y, z, k, theiler, workers)
    raise ValueError(f"algorithm must be 1 or 2, got {algorithm}")
