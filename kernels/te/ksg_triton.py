"""Fused brute-force KSG kernel in Triton: k-NN in the max norm, marginal counts and local values.

One program owns BLOCK query rows of one item (see kernels/te/batch.py for the item layout) and
streams every candidate row past them, one row per step, so nothing O(n^2) touches memory:
  pass 1  joint distance to each candidate (Theiler window -> inf), insertion into the K smallest,
          kept sorted in registers (k <= 16: a compare-swap chain per candidate);
  pass 2  algorithm 1: n_xz, n_yz, n_z strictly closer than eps = K-th smallest;
          algorithm 2: the per-subspace radii of the K joint neighbours (ties by row index), then
  pass 3  the <= counts with those radii;
then psi(...) of the counts from a float64 digamma table and one float64 partial sum per program
(summed on the torch side, so results are deterministic). Candidate coordinates are gathered
through the item's row order, so surrogates cost no copies.

Runs on CUDA, and on CPU under TRITON_INTERPRET=1 (slow, for CI on small inputs). Works for
float32 (fast; see batch.py for the precision) and float64 blocks (counts equal the oracle's).
Timings and the comparison with the torch twin: docs/benchmarks.md ("Transfer entropy").
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.te.batch import BatchResult, KSGBatch, digamma_table

MAX_K = 16


@triton.jit
def _swap(b, v):
    """(min, max): one compare-swap step of the sorted insertion."""
    return tl.minimum(b, v), tl.maximum(b, v)


@triton.jit
def _rows(base, rows, valid, D: tl.constexpr, DP: tl.constexpr):
    """[BLOCK, DP] coordinates of `rows` of a [n, D] block (padding columns are 0)."""
    cols = tl.arange(0, DP)
    return tl.load(base + rows[:, None] * D + cols[None, :], mask=valid[:, None] & (cols[None, :] < D), other=0.0)


@triton.jit
def _dist(q, base, m, D: tl.constexpr, DP: tl.constexpr):
    """[BLOCK] max-norm distance from the query rows q to candidate row m of a [n, D] block."""
    cols = tl.arange(0, DP)
    c = tl.load(base + m * D + cols, mask=cols < D, other=0.0)
    return tl.max(tl.abs(q - c[None, :]), axis=1)


@triton.jit
def _ksg_kernel(X, Y, Z, PERM, ITEMS, PSI, PART, EPS, NXZ, NYZ, NZ,
                n, theiler, n_blocks,
                K: tl.constexpr, DX: tl.constexpr, DXP: tl.constexpr, DY: tl.constexpr, DYP: tl.constexpr,
                DZ: tl.constexpr, DZP: tl.constexpr, ALG: tl.constexpr, STORE: tl.constexpr,
                BLOCK: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    pid = tl.program_id(1)
    src = tl.load(ITEMS + b * 3).to(tl.int64)
    dst = tl.load(ITEMS + b * 3 + 1).to(tl.int64)
    q = tl.load(ITEMS + b * 3 + 2).to(tl.int64)
    xb = X + src * n * DX
    yb = Y + dst * n * DY
    zb = Z + dst * n * DZ
    pb = PERM + q * n
    rows = pid * BLOCK + tl.arange(0, BLOCK)
    valid = rows < n
    prow = tl.load(pb + rows, mask=valid, other=0)
    xq = _rows(xb, prow, valid, DX, DXP)
    yq = _rows(yb, rows, valid, DY, DYP)
    if DZ > 0:
        zq = _rows(zb, rows, valid, DZ, DZP)
    inf = float("inf")
    b0 = tl.full([BLOCK], inf, xq.dtype)
    b1, b2, b3, b4, b5, b6, b7 = b0, b0, b0, b0, b0, b0, b0
    b8, b9, b10, b11, b12, b13, b14, b15 = b0, b0, b0, b0, b0, b0, b0, b0
    # ---- pass 1: the K smallest joint distances, sorted, in registers
    for m in range(0, n):
        pm = tl.load(pb + m)
        d = tl.maximum(_dist(xq, xb, pm, DX, DXP), _dist(yq, yb, m, DY, DYP))
        if DZ > 0:
            d = tl.maximum(d, _dist(zq, zb, m, DZ, DZP))
        v = tl.where(tl.abs(rows - m) <= theiler, inf, d)
        b0, v = _swap(b0, v)
        if K > 1:
            b1, v = _swap(b1, v)
        if K > 2:
            b2, v = _swap(b2, v)
        if K > 3:
            b3, v = _swap(b3, v)
        if K > 4:
            b4, v = _swap(b4, v)
        if K > 5:
            b5, v = _swap(b5, v)
        if K > 6:
            b6, v = _swap(b6, v)
        if K > 7:
            b7, v = _swap(b7, v)
        if K > 8:
            b8, v = _swap(b8, v)
        if K > 9:
            b9, v = _swap(b9, v)
        if K > 10:
            b10, v = _swap(b10, v)
        if K > 11:
            b11, v = _swap(b11, v)
        if K > 12:
            b12, v = _swap(b12, v)
        if K > 13:
            b13, v = _swap(b13, v)
        if K > 14:
            b14, v = _swap(b14, v)
        if K > 15:
            b15, v = _swap(b15, v)
    # eps = the K-th smallest (the largest of the K kept; unused slots stay inf and are skipped)
    eps = b0
    if K > 1:
        eps = b1
    if K > 2:
        eps = b2
    if K > 3:
        eps = b3
    if K > 4:
        eps = b4
    if K > 5:
        eps = b5
    if K > 6:
        eps = b6
    if K > 7:
        eps = b7
    if K > 8:
        eps = b8
    if K > 9:
        eps = b9
    if K > 10:
        eps = b10
    if K > 11:
        eps = b11
    if K > 12:
        eps = b12
    if K > 13:
        eps = b13
    if K > 14:
        eps = b14
    if K > 15:
        eps = b15
    zero = tl.zeros([BLOCK], tl.int32)
    psi_k = tl.load(PSI + K)
    if ALG == 1:
        # ---- pass 2: marginal counts strictly inside eps, Theiler window excluded
        nxz, nyz, nz = zero, zero, zero
        for m in range(0, n):
            pm = tl.load(pb + m)
            ok = tl.abs(rows - m) > theiler
            dx = _dist(xq, xb, pm, DX, DXP)
            dy = _dist(yq, yb, m, DY, DYP)
            if DZ > 0:
                dz = _dist(zq, zb, m, DZ, DZP)
                nz += (ok & (dz < eps)).to(tl.int32)
                dx = tl.maximum(dx, dz)
                dy = tl.maximum(dy, dz)
            nxz += (ok & (dx < eps)).to(tl.int32)
            nyz += (ok & (dy < eps)).to(tl.int32)
        if DZ == 0:
            nz = zero + (n - 1)   # JIDT MI: N - 1, no window
        local = (psi_k - tl.load(PSI + nxz + 1, mask=valid, other=0.0) - tl.load(PSI + nyz + 1, mask=valid, other=0.0)
                 + tl.load(PSI + nz + 1, mask=valid, other=0.0))
    else:
        # ---- pass 2: subspace radii of the K joint neighbours; of the ties at eps take the first rows
        less = zero
        if K > 1:
            less += (b0 < eps).to(tl.int32)
        if K > 2:
            less += (b1 < eps).to(tl.int32)
        if K > 3:
            less += (b2 < eps).to(tl.int32)
        if K > 4:
            less += (b3 < eps).to(tl.int32)
        if K > 5:
            less += (b4 < eps).to(tl.int32)
        if K > 6:
            less += (b5 < eps).to(tl.int32)
        if K > 7:
            less += (b6 < eps).to(tl.int32)
        if K > 8:
            less += (b7 < eps).to(tl.int32)
        if K > 9:
            less += (b8 < eps).to(tl.int32)
        if K > 10:
            less += (b9 < eps).to(tl.int32)
        if K > 11:
            less += (b10 < eps).to(tl.int32)
        if K > 12:
            less += (b11 < eps).to(tl.int32)
        if K > 13:
            less += (b12 < eps).to(tl.int32)
        if K > 14:
            less += (b13 < eps).to(tl.int32)
        if K > 15:
            less += (b14 < eps).to(tl.int32)
        need = K - less
        ties = zero
        ex = tl.zeros([BLOCK], xq.dtype)
        ey, ez = ex, ex
        for m in range(0, n):
            pm = tl.load(pb + m)
            dx = _dist(xq, xb, pm, DX, DXP)
            dy = _dist(yq, yb, m, DY, DYP)
            d = tl.maximum(dx, dy)
            if DZ > 0:
                dz = _dist(zq, zb, m, DZ, DZP)
                d = tl.maximum(d, dz)
            d = tl.where(tl.abs(rows - m) <= theiler, inf, d)
            tie = d == eps
            take = (d < eps) | (tie & (ties < need))
            ties += tie.to(tl.int32)
            ex = tl.where(take, tl.maximum(ex, dx), ex)
            ey = tl.where(take, tl.maximum(ey, dy), ey)
            if DZ > 0:
                ez = tl.where(take, tl.maximum(ez, dz), ez)
        # ---- pass 3: <= counts with the subspace radii
        nxz, nyz, nz = zero, zero, zero
        for m in range(0, n):
            pm = tl.load(pb + m)
            ok = tl.abs(rows - m) > theiler
            if DZ > 0:
                ok = ok & (_dist(zq, zb, m, DZ, DZP) <= ez)
                nz += ok.to(tl.int32)
            nxz += (ok & (_dist(xq, xb, pm, DX, DXP) <= ex)).to(tl.int32)
            nyz += (ok & (_dist(yq, yb, m, DY, DYP) <= ey)).to(tl.int32)
        one = tl.full([BLOCK], 1.0, tl.float64)
        fx = tl.maximum(nxz, 1).to(tl.float64)
        fy = tl.maximum(nyz, 1).to(tl.float64)
        local = (psi_k - tl.load(PSI + nxz, mask=valid, other=0.0) - tl.load(PSI + nyz, mask=valid, other=0.0))
        if DZ > 0:
            local += tl.load(PSI + nz, mask=valid, other=0.0) - 2.0 / K + one / fx + one / fy
        else:
            nz = zero + n          # JIDT MI: N, no window
            local += tl.load(PSI + n) - 1.0 / K
    tl.store(PART + b * n_blocks + pid, tl.sum(tl.where(valid, local, 0.0), axis=0))
    if STORE:
        out = b * n + rows
        if ALG == 1:
            tl.store(EPS + out, eps, mask=valid)
        else:
            tl.store(EPS + out * 3, ex, mask=valid)
            tl.store(EPS + out * 3 + 1, ey, mask=valid)
            tl.store(EPS + out * 3 + 2, ez, mask=valid)
        tl.store(NXZ + out, nxz, mask=valid)
        tl.store(NYZ + out, nyz, mask=valid)
        tl.store(NZ + out, nz, mask=valid)


def _pow2(d: int) -> int:
    return max(1, triton.next_power_of_2(max(d, 1)))


def ksg_batch_triton(batch: KSGBatch, *, k: int = 4, theiler: int = 0, algorithm: int = 1,
                     store: bool = True, block: int = 128, num_warps: int = 4,
                     max_items: int = 1 << 20) -> BatchResult:
    """Every item's KSG estimate with the fused kernel (items launched in groups of max_items)."""
    batch.check(k, theiler, algorithm)
    if k > MAX_K:
        raise ValueError(f"the Triton kernel keeps k <= {MAX_K} neighbours in registers, got k={k}")
    n, dev = batch.n, batch.x.device
    n_items = int(batch.items.shape[0])
    n_blocks = triton.cdiv(n, block)
    psi = digamma_table(n, dev)
    part = torch.full((n_items, n_blocks), float("nan"), dtype=torch.float64, device=dev)  # poison
    dx, dy, dz = (int(t.shape[2]) for t in (batch.x, batch.y, batch.z))
    z = batch.z if dz else batch.y   # any valid pointer; never read when dz == 0
    if store:
        eps = torch.full((n_items, n) if algorithm == 1 else (n_items, n, 3), -1.0, dtype=batch.x.dtype, device=dev)
        counts = [torch.full((n_items, n), -1, dtype=torch.int32, device=dev) for _ in range(3)]
    else:   # tiny dummies: STORE=False compiles the stores out
        eps = torch.empty(1, dtype=batch.x.dtype, device=dev)
        counts = [torch.empty(1, dtype=torch.int32, device=dev) for _ in range(3)]
    x, y, perms, items = batch.x.contiguous(), batch.y.contiguous(), batch.perms.contiguous(), batch.items.contiguous()
    for i0 in range(0, n_items, max_items):
        nb = min(max_items, n_items - i0)
        off = i0 * n
        _ksg_kernel[(nb, n_blocks)](
            x, y, z.contiguous(), perms, items[i0:], psi, part[i0:],
            eps.view(-1)[off * (1 if algorithm == 1 else 3):] if store else eps,
            *((c.view(-1)[off:] if store else c) for c in counts),
            n, theiler, n_blocks,
            K=k, DX=dx, DXP=_pow2(dx), DY=dy, DYP=_pow2(dy), DZ=dz, DZP=_pow2(dz), ALG=algorithm,
            STORE=store, BLOCK=block, num_warps=num_warps)
    te = part.sum(dim=1) / n
    if not store:
        return BatchResult(te=te)
    return BatchResult(te=te, eps=eps, n_xz=counts[0], n_yz=counts[1], n_z=counts[2])
