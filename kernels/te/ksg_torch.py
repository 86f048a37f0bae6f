"""Torch twin of the fused KSG kernel: chunked brute-force max-norm distances, CPU or CUDA.

The library path the Triton kernel (ksg_triton.py) has to beat, and the CI reference for it: on
float64 blocks it does the oracle's arithmetic (|a - b| and max in float64, the same comparisons),
so its counts equal kernels/te/reference.py exactly. Memory is bounded by processing
`max_elems` (item x query row x candidate) distances at a time.
"""
from __future__ import annotations

import torch

from kernels.te.batch import BatchResult, KSGBatch, digamma_table, local_values


def _maxnorm(q: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """[b, r, n] max_d |q[b, r, d] - c[b, m, d]| (zeros when d = 0)."""
    if q.shape[-1] == 0:
        return q.new_zeros((q.shape[0], q.shape[1], c.shape[1]))
    return (q[:, :, None, :] - c[:, None, :, :]).abs().amax(-1)


def _chunk_counts(xs, ys, zs, rows, k, theiler, algorithm, has_z, n):
    """eps and counts of query `rows` for a chunk of items, all candidates at once."""
    cand = torch.arange(n, device=xs.device)
    excluded = (rows[:, None] - cand[None, :]).abs() <= theiler          # [r, n]
    dx = _maxnorm(xs[:, rows], xs)
    dy = _maxnorm(ys[:, rows], ys)
    dz = _maxnorm(zs[:, rows], zs)
    joint = torch.maximum(torch.maximum(dx, dy), dz).masked_fill(excluded, float("inf"))
    ok = ~excluded
    if algorithm == 1:
        eps = joint.kthvalue(k, dim=-1).values                          # [b, r]
        e = eps[..., None]
        n_xz = ((torch.maximum(dx, dz) < e) & ok).sum(-1)
        n_yz = ((torch.maximum(dy, dz) < e) & ok).sum(-1)
        n_z = ((dz < e) & ok).sum(-1) if has_z else torch.full_like(n_xz, n - 1)
        return eps, n_xz, n_yz, n_z
    nbr = joint.sort(dim=-1, stable=True).indices[..., :k]              # ties by row index
    ex, ey, ez = (d.gather(-1, nbr).amax(-1) for d in (dx, dy, dz))
    in_z = (dz <= ez[..., None]) & ok
    n_xz = (in_z & (dx <= ex[..., None])).sum(-1)
    n_yz = (in_z & (dy <= ey[..., None])).sum(-1)
    n_z = in_z.sum(-1) if has_z else torch.full_like(n_xz, n)
    return torch.stack([ex, ey, ez], dim=-1), n_xz, n_yz, n_z


def ksg_batch_torch(batch: KSGBatch, *, k: int = 4, theiler: int = 0, algorithm: int = 1,
                    store: bool = True, max_elems: int = 1 << 24) -> BatchResult:
    """Every item's KSG estimate (and, with store, eps and counts) by chunked dense distances."""
    batch.check(k, theiler, algorithm)
    n, dev = batch.n, batch.x.device
    items = batch.items.long()
    n_items = items.shape[0]
    psi = digamma_table(n, dev)
    rows_per = max(1, min(n, max_elems // n))
    items_per = max(1, max_elems // (rows_per * n))
    te = torch.full((n_items,), float("nan"), dtype=torch.float64, device=dev)
    out = {}
    if store:
        eps_shape = (n_items, n) if algorithm == 1 else (n_items, n, 3)
        out = {"eps": torch.full(eps_shape, -1.0, dtype=batch.x.dtype, device=dev),   # poison: unwritten shows
               **{c: torch.full((n_items, n), -1, dtype=torch.int64, device=dev) for c in ("n_xz", "n_yz", "n_z")}}
    for i0 in range(0, n_items, items_per):
        it = items[i0:i0 + items_per]
        xs = batch.x[it[:, 0, None], batch.perms.long()[it[:, 2]]]    # [b, n, dx] source rows reordered
        ys, zs = batch.y[it[:, 1]], batch.z[it[:, 1]]
        total = torch.zeros(it.shape[0], dtype=torch.float64, device=dev)
        for r0 in range(0, n, rows_per):
            rows = torch.arange(r0, min(n, r0 + rows_per), device=dev)
            eps, n_xz, n_yz, n_z = _chunk_counts(xs, ys, zs, rows, k, theiler, algorithm, batch.has_z, n)
            local = local_values(n_xz, n_yz, n_z, k=k, algorithm=algorithm, has_z=batch.has_z, psi=psi)
            total += local.sum(-1)
            if store:
                sl = (slice(i0, i0 + it.shape[0]), slice(r0, r0 + rows.shape[0]))
                out["eps"][sl] = eps
                for name, val in (("n_xz", n_xz), ("n_yz", n_yz), ("n_z", n_z)):
                    out[name][sl] = val
        te[i0:i0 + it.shape[0]] = total / n
    return BatchResult(te=te, **out)
