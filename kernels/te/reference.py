"""Brute-force float64 KSG conditional MI: the oracle for actors/te/ksg.py (tests only, O(n^2) memory).

Written from the definitions, sharing no code with the fast path: full pairwise max-norm distance
matrices per subspace, the Theiler window (|i - j| <= theiler, the point itself included) set to
infinity, k-th neighbour by sorting, counts by direct comparison.
"""
from __future__ import annotations

import numpy as np
from scipy.special import digamma


def pairwise_maxnorm(a: np.ndarray) -> np.ndarray:
    """[n, n] matrix of max_d |a_id - a_jd| (zeros for an empty [n, 0] space)."""
    a = np.asarray(a, dtype=np.float64)
    a = a[:, None] if a.ndim == 1 else a
    n = a.shape[0]
    out = np.zeros((n, n))
    for d in range(a.shape[1]):
        np.maximum(out, np.abs(a[:, d][:, None] - a[:, d][None, :]), out=out)
    return out


def reference_cmi(x: np.ndarray, y: np.ndarray, z: np.ndarray | None = None, *, k: int = 4,
                  theiler: int = 0, algorithm: int = 1) -> dict[str, np.ndarray]:
    """Local KSG values and counts {local, n_xz, n_yz, n_z} for I(X; Y | Z), JIDT conventions."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    z = np.empty((n, 0)) if z is None else np.asarray(z, dtype=np.float64)
    dx, dy, dz = pairwise_maxnorm(x), pairwise_maxnorm(y), pairwise_maxnorm(z)
    has_z = (z.ndim == 2 and z.shape[1] > 0) or z.ndim == 1
    excluded = np.abs(np.arange(n)[:, None] - np.arange(n)[None, :]) <= theiler
    joint = np.maximum(np.maximum(dx, dy), dz)
    joint[excluded] = np.inf
    dxz, dyz = np.maximum(dx, dz), np.maximum(dy, dz)
    out = {}
    if algorithm == 1:
        eps = np.sort(joint, axis=1)[:, k - 1][:, None]
        n_xz = ((dxz < eps) & ~excluded).sum(axis=1)
        n_yz = ((dyz < eps) & ~excluded).sum(axis=1)
        n_z = ((dz < eps) & ~excluded).sum(axis=1) if has_z else np.full(n, n - 1)
        local = digamma(k) - digamma(n_xz + 1) - digamma(n_yz + 1) + digamma(n_z + 1)
        out["eps"] = eps[:, 0]
    else:
        nbr = np.argsort(joint, axis=1, kind="stable")[:, :k]
        rows = np.arange(n)[:, None]
        ex = dx[rows, nbr].max(axis=1)[:, None]
        ey = dy[rows, nbr].max(axis=1)[:, None]
        ez = dz[rows, nbr].max(axis=1)[:, None]
        in_z = (dz <= ez) & ~excluded
        n_xz = (in_z & (dx <= ex)).sum(axis=1)
        n_yz = (in_z & (dy <= ey)).sum(axis=1)
        if has_z:
            n_z = in_z.sum(axis=1)
            local = (digamma(k) - 2.0 / k + digamma(n_z) - digamma(n_xz) - digamma(n_yz)
                     + 1.0 / n_xz + 1.0 / n_yz)
        else:
            n_z = np.full(n, n)
            local = digamma(k) - 1.0 / k + digamma(n_z) - digamma(n_xz) - digamma(n_yz)
        out["eps"] = np.hstack([ex, ey, ez])
    out.update(local=local, n_xz=n_xz, n_yz=n_yz, n_z=n_z)
    return out


def reference_te_embedding(source, target, *, k_hist=1, k_tau=1, l_hist=1, l_tau=1, delay=1):
    """(x_past, y_next, y_past) by explicit loops over destination times, for checking embedding.py."""
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    start = max((k_hist - 1) * k_tau, (l_hist - 1) * l_tau + delay - 1)
    xs, ys, zs = [], [], []
    for t in range(start, len(target) - 1):
        ys.append([target[t + 1]])
        zs.append([target[t - i * k_tau] for i in range(k_hist)])
        xs.append([source[t + 1 - delay - i * l_tau] for i in range(l_hist)])
    return np.array(xs), np.array(ys), np.array(zs)
