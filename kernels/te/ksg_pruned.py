"""KSG with exact pruning: each destination's rows sorted by the first conditioning coordinate.

The brute-force kernel (ksg_triton.py) streams every candidate past every query. In the max norm a
candidate m with |z_m - z_i| > eps_i (z = the destination's past, first coordinate) can neither
enter the k-NN set of query i nor be counted strictly inside eps_i in any marginal that contains z
(n_xz, n_yz, n_z all do). So the rows of every destination block are sorted once by z[:, 0] (shared
by all its sources and surrogates: the row order is an index array), a program owns BLOCK queries
that are consecutive in that order, and it scans only the candidates whose z lies in the union of
the queries' windows:
  phase A  k-NN over a small fixed window of sorted positions around the block: an upper bound b_i
           >= eps_i for every query (the K-th distance over a subset of the candidates);
  phase B  the k-NN insertion over the rest of the block's range [z_i - b_i, z_i + b_i]: in one
           binary-searched range, or (rings=True) in rings of `win` positions outward, b_i
           re-tightened after each ring, until the next z on both sides lies beyond every bound;
           afterwards the K-th smallest is eps_i exactly;
  counts   binary search for [z_i - eps_i, z_i + eps_i] and the strict counts over that range.
2-D k-NN layout (strip > 0; LONG picks it for n >= 5000): the z-sorted positions are cut into strips
of `strip` positions, each re-sorted by y[:, 0]; a query block lies inside one strip (close in z and y),
phase A scans its neighbours within the strip and phase B, for every strip holding a z within the bounds,
only the run of y within the bounds (two binary searches per strip). The counts keep the 1-D layout:
n_xz has no y, so y cannot prune them. Measured on one H100 (jobs.bench.te --strips): 1.37x on the
kernel at T = 1e4 (strip 512, window 128), 0.75-0.97x at T = 1e3 (strip loop overhead; the 1-D phase A
already covers most of the window).
A candidate's source row is read from SROW[q, d, m] = perms[q, order_d[m]] (built once per launch),
so each step costs one dependent load for x, as in the brute-force kernel.
Both ranges are widened by a relative 1e-6 so float rounding of the bounds never drops a candidate
(scanning a superset is always exact). The Theiler window, the x gather through the item's row order,
the float64 digamma table and the float64 per-program partial sums are those of ksg_triton.py, so on
float64 blocks the counts equal the oracle's (kernels/te/reference.py) exactly.

Algorithm 1 with a conditioning block (dz >= 1: every TE) takes this path; algorithm 2 (its
tie-breaking by row index needs the rows in time order) and plain MI (no z) fall back to the
brute-force kernel. Pruning only changes which candidates are visited, never a comparison.
Scanned fraction of the candidates (simulated, Gaussian data, block 32): ~37% at T = 1e3, ~20% at
T = 1e4. Measured on one H100 (jobs.bench.te, 2026-11-23): whole-network kernel time 7.2 ms vs 14.2 ms
brute force (N=100, T=1e3), 277 ms vs 1,249 ms (T=1e4), 748 ms vs 1,222 ms (N=1000, T=1e3); table in
docs/benchmarks.md ("Transfer entropy").
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kernels.te.batch import BatchResult, KSGBatch, digamma_table
from kernels.te.ksg_triton import MAX_K, _insert, _qload, _sdist, _xdist, group_items, ksg_batch_triton

# launch defaults, picked by `jobs.bench.te --tune` on one H100 (N=100, T=1e3 network, 2026-11-23 03:31:
# 7.14 ms; rings=True 7.72 ms); --tune re-picks them, and ATTRACTOR_TE_PRUNED_CONFIG (JSON) overrides
# them in every process that inherits it (Ray workers too)
CONFIG = {"block": 32, "group": 4, "num_warps": 1, "stages": 1, "unroll": 2, "win": 128, "rings": False,
          "strip": 0}   # strip > 0: the 2-D (z strips sorted by y) k-NN layout, positions per strip
CONFIG.update(json.loads(os.environ.get("ATTRACTOR_TE_PRUNED_CONFIG") or "{}"))
# long series: the 2-D k-NN layout (measured on one H100, jobs.bench.te --strips, 2026-11-23 04:03: N=100,
# T=1e4 kernel 205 ms at strip 512 / window 128 vs 281 ms 1-D; at T=1e3 every strip was slower, 0.75-0.97x);
# applied when n >= min_n (a threshold between the two measured lengths) and the caller names no strip
LONG = {"min_n": 5000, "strip": 512, "win": 128}
_MARGIN = 1e-6   # relative widening of the binary-search bounds (float32 ulp is 6e-8)


@triton.jit
def _bound(base, n, val, nbits, STRIDE: tl.constexpr, UPPER: tl.constexpr):
    """First sorted position j in [0, n] with base[j * STRIDE] >= val (UPPER: > val); nbits steps."""
    lo = n * 0
    hi = n + 0
    for _ in range(nbits):
        mid = (lo + hi) // 2
        v = tl.load(base + mid * STRIDE, mask=mid < n, other=float("inf"))
        if UPPER:
            left = v <= val
        else:
            left = v < val
        act = lo < hi
        lo = tl.where(act & left, mid + 1, lo)
        hi = tl.where(act & (left == 0), mid, hi)
    return lo


@triton.jit
def _joint(xq, yq, zq, r, xoff, poff, yb, zb, ob, m, theiler,
           DX: tl.constexpr, DXP: tl.constexpr, DY: tl.constexpr, DYP: tl.constexpr, DZ: tl.constexpr,
           DZP: tl.constexpr):
    """[BLOCK, G] joint max-norm distance to the candidate at sorted position m (Theiler window -> inf);
    poff [G] points at each slot's source rows in this destination's sorted order (one hop, not two)."""
    rm = tl.load(ob + m)
    dyz = tl.maximum(_sdist(yq, yb, m, DY, DYP), _sdist(zq, zb, m, DZ, DZP))
    dyz = tl.where(tl.abs(r - rm) <= theiler, float("inf"), dyz)
    return tl.maximum(_xdist(xq, xoff, tl.load(poff + m), DX, DXP), dyz)


@triton.jit
def _kth(b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15, K: tl.constexpr):
    """The K-th smallest (the last assigned register)."""
    e = b0
    if K > 1:
        e = b1
    if K > 2:
        e = b2
    if K > 3:
        e = b3
    if K > 4:
        e = b4
    if K > 5:
        e = b5
    if K > 6:
        e = b6
    if K > 7:
        e = b7
    if K > 8:
        e = b8
    if K > 9:
        e = b9
    if K > 10:
        e = b10
    if K > 11:
        e = b11
    if K > 12:
        e = b12
    if K > 13:
        e = b13
    if K > 14:
        e = b14
    if K > 15:
        e = b15
    return e


@triton.jit
def _zrange(z0, rad, both):
    """[zlo, zhi]: every z with |z - z0_i| <= rad_i for some live query, widened by _MARGIN."""
    inf = float("inf")
    zlo = tl.min(tl.min(tl.where(both, z0 - rad, inf), axis=1), axis=0)
    zhi = tl.max(tl.max(tl.where(both, z0 + rad, -inf), axis=1), axis=0)
    zlo = zlo - (tl.abs(zlo) + 1.0) * 1e-6   # = _MARGIN: rounding never drops a candidate
    zhi = zhi + (tl.abs(zhi) + 1.0) * 1e-6
    return zlo, zhi


@triton.jit
def _window(z0, rad, both, zb, n, nbits, DZ: tl.constexpr):
    """Sorted positions [lo, hi) holding every candidate with |z - z0_i| <= rad_i for some live query."""
    zlo, zhi = _zrange(z0, rad, both)
    return _bound(zb, n, zlo, nbits, DZ, False), _bound(zb, n, zhi, nbits, DZ, True)


@triton.jit
def _pruned_kernel(X, YS, ZS, ORD, SROW, YS2, ZS2, ORD2, SROW2, SLOTS, GDST, ITEM, PSI, PART, EPS, NXZ, NYZ, NZ,
                   n, n_dst, theiler, n_blocks, win, nbits, strip, sbits,
                   K: tl.constexpr, G: tl.constexpr, DX: tl.constexpr, DXP: tl.constexpr, DY: tl.constexpr,
                   DYP: tl.constexpr, DZ: tl.constexpr, DZP: tl.constexpr, STORE: tl.constexpr,
                   BLOCK: tl.constexpr, STAGES: tl.constexpr, UNROLL: tl.constexpr, RINGS: tl.constexpr,
                   TWOD: tl.constexpr):
    grp = tl.program_id(0).to(tl.int64)
    pid = tl.program_id(1)
    g = tl.arange(0, G)
    src = tl.load(SLOTS + (grp * G + g) * 2)
    used = src >= 0
    src = tl.where(used, src, 0).to(tl.int64)
    perm = tl.load(SLOTS + (grp * G + g) * 2 + 1, mask=used, other=0).to(tl.int64)
    dst = tl.load(GDST + grp).to(tl.int64)
    xoff = X + src * n * DX
    poff = SROW + (perm * n_dst + dst) * n   # [G]: source row of each sorted position under the slot's order
    yb = YS + dst * n * DY     # destination blocks in sorted order
    zb = ZS + dst * n * DZ
    ob = ORD + dst * n         # sorted position -> original row
    # the k-NN layout: the same arrays, or (TWOD) strips of `strip` z-sorted positions each sorted by y
    pk = SROW2 + (perm * n_dst + dst) * n
    yk = YS2 + dst * n * DY
    zk = ZS2 + dst * n * DZ
    ok = ORD2 + dst * n
    j0 = pid * BLOCK
    j = j0 + tl.arange(0, BLOCK)[:, None]      # [BLOCK, 1] positions of the queries in the k-NN layout
    valid = j < n
    both = valid & used[None, :]
    r = tl.load(ok + j, mask=valid, other=0)    # original rows (Theiler window, outputs)
    prow = tl.load(pk[None, :] + j, mask=both, other=0)
    xq = _qload(xoff[None, :], prow, both, DX, DXP)
    yq = _qload(yk, j, valid, DY, DYP)
    zq = _qload(zk, j, valid, DZ, DZP)
    z0 = tl.load(zk + j * DZ, mask=valid, other=0.0)
    inf = float("inf")
    b0 = tl.full([BLOCK, G], inf, YS.dtype.element_ty)
    b1, b2, b3, b4, b5, b6, b7 = b0, b0, b0, b0, b0, b0, b0
    b8, b9, b10, b11, b12, b13, b14, b15 = b0, b0, b0, b0, b0, b0, b0, b0
    # ---- phase A: k-NN over the positions [a0, a1) around the block (TWOD: within its strip) -> bounds on eps
    s0 = (j0 // tl.maximum(strip, 1)) * strip
    a0 = tl.maximum(j0 - win, s0 if TWOD else 0)
    a1 = tl.minimum(j0 + BLOCK + win, tl.minimum(s0 + strip, n) if TWOD else n)
    for m in tl.range(a0, a1, num_stages=STAGES, loop_unroll_factor=UNROLL):
        v = _joint(xq, yq, zq, r, xoff, pk, yk, zk, ok, m, theiler, DX, DXP, DY, DYP, DZ, DZP)
        b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15 = _insert(
            b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15, v, K)
    bound = _kth(b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15, K)
    if TWOD:
        # ---- phase B over the strips that hold a z within the bounds (found in the z-sorted layout), in
        # each only the y-sorted run within the bounds (binary search); the phase-A range is skipped
        lo, hi = _window(z0, bound, both, zb, n, nbits, DZ)
        y0 = tl.load(yk + j * DY, mask=valid, other=0.0)
        ylo, yhi = _zrange(y0, bound, both)
        for s in range(lo // strip, (hi + strip - 1) // strip):
            st = s * strip
            ns = tl.minimum(strip, n - st)
            c0 = st + _bound(yk + st * DY, ns, ylo, sbits, DY, False)
            c1 = st + _bound(yk + st * DY, ns, yhi, sbits, DY, True)
            own = st == s0
            n1 = tl.maximum(tl.minimum(c1, tl.where(own, a0, c1)) - c0, 0)   # [c0, a0) in the own strip
            e1 = tl.maximum(c0, tl.where(own, a1, c1))
            n2 = tl.maximum(c1 - e1, 0)                                       # [a1, c1) in the own strip
            for t in tl.range(0, n1 + n2, num_stages=STAGES, loop_unroll_factor=UNROLL):
                m = tl.where(t < n1, c0 + t, e1 + (t - n1))
                v = _joint(xq, yq, zq, r, xoff, pk, yk, zk, ok, m, theiler, DX, DXP, DY, DYP, DZ, DZP)
                b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15 = _insert(
                    b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15, v, K)
    elif RINGS:
        # ---- phase B as rings of `win` positions outward on each side, the bound re-tightened after each
        # ring; a side stops when its next candidate's z lies outside every query's current bound
        step = tl.maximum(win, 1)
        zlo, zhi = _zrange(z0, bound, both)
        go_lo = (a0 > 0) & (tl.load(zb + (a0 - 1) * DZ, mask=a0 > 0, other=-inf) >= zlo)
        go_hi = (a1 < n) & (tl.load(zb + a1 * DZ, mask=a1 < n, other=inf) <= zhi)
        while go_lo | go_hi:
            nl = tl.where(go_lo, tl.minimum(step, a0), 0)   # >= 1 when go_lo: the loop ends
            nh = tl.where(go_hi, tl.minimum(step, n - a1), 0)
            for t in tl.range(0, nl + nh, num_stages=STAGES, loop_unroll_factor=UNROLL):
                m = tl.where(t < nl, a0 - 1 - t, a1 + (t - nl))   # outward: nearest z first
                v = _joint(xq, yq, zq, r, xoff, poff, yb, zb, ob, m, theiler, DX, DXP, DY, DYP, DZ, DZP)
                b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15 = _insert(
                    b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15, v, K)
            a0 = a0 - nl
            a1 = a1 + nh
            bound = _kth(b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15, K)
            zlo, zhi = _zrange(z0, bound, both)
            go_lo = (a0 > 0) & (tl.load(zb + (a0 - 1) * DZ, mask=a0 > 0, other=-inf) >= zlo)
            go_hi = (a1 < n) & (tl.load(zb + a1 * DZ, mask=a1 < n, other=inf) <= zhi)
    else:
        # ---- phase B in one go: the whole range the phase A bounds allow
        lo, hi = _window(z0, bound, both, zb, n, nbits, DZ)
        na = tl.maximum(a0 - lo, 0)
        nb = tl.maximum(hi - a1, 0)
        for t in tl.range(0, na + nb, num_stages=STAGES, loop_unroll_factor=UNROLL):
            m = tl.where(t < na, lo + t, a1 + (t - na))
            v = _joint(xq, yq, zq, r, xoff, poff, yb, zb, ob, m, theiler, DX, DXP, DY, DYP, DZ, DZP)
            b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15 = _insert(
                b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15, v, K)
    eps = _kth(b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15, K)
    # ---- counts strictly inside eps, over the candidates with |dz| <= eps only
    c0, c1 = _window(z0, eps, both, zb, n, nbits, DZ)
    zero = tl.zeros([BLOCK, G], tl.int32)
    nxz, nyz, nz = zero, zero, zero
    for m in tl.range(c0, c1, num_stages=STAGES, loop_unroll_factor=UNROLL):
        rm = tl.load(ob + m)
        out = tl.abs(r - rm) <= theiler
        dz = tl.where(out, inf, _sdist(zq, zb, m, DZ, DZP))
        nz += (dz < eps).to(tl.int32)
        nyz += (tl.maximum(_sdist(yq, yb, m, DY, DYP), dz) < eps).to(tl.int32)
        nxz += (tl.maximum(_xdist(xq, xoff, tl.load(poff + m), DX, DXP), dz) < eps).to(tl.int32)
    local = (tl.load(PSI + K) - tl.load(PSI + nxz + 1, mask=both, other=0.0)
             - tl.load(PSI + nyz + 1, mask=both, other=0.0) + tl.load(PSI + nz + 1, mask=both, other=0.0))
    tl.store(PART + (grp * G + g) * n_blocks + pid, tl.sum(tl.where(both, local, 0.0), axis=0), mask=used)
    if STORE:
        item = tl.load(ITEM + grp * G + g, mask=used, other=0).to(tl.int64)
        o = item[None, :] * n + r
        tl.store(EPS + o, eps, mask=both)
        tl.store(NXZ + o, nxz, mask=both)
        tl.store(NYZ + o, nyz, mask=both)
        tl.store(NZ + o, nz, mask=both)


@dataclass(frozen=True)
class SortedLayout:
    """Every destination block with its rows sorted by z[:, 0]: ys [G, n, dy], zs [G, n, dz], order [G, n]."""

    ys: torch.Tensor
    zs: torch.Tensor
    order: torch.Tensor   # int32, sorted position -> original row


def sort_destinations(y: torch.Tensor, z: torch.Tensor) -> SortedLayout:
    """One device sort for all destinations; ties keep time order (stable), which no result depends on."""
    order = torch.sort(z[:, :, 0], dim=1, stable=True).indices
    idx = order[:, :, None]
    ys = torch.gather(y, 1, idx.expand(-1, -1, y.shape[2])).contiguous()
    zs = torch.gather(z, 1, idx.expand(-1, -1, z.shape[2])).contiguous()
    return SortedLayout(ys=ys, zs=zs, order=order.to(torch.int32).contiguous())


def strip_layout(lay: SortedLayout, strip: int) -> SortedLayout:
    """The 2-D k-NN layout: the z-sorted rows cut into strips of `strip` positions, each strip re-sorted by
    y[:, 0], so a query block (inside one strip) is close in z and y and phase B can skip by y too."""
    g, n = lay.order.shape
    key = torch.arange(n, device=lay.ys.device) // strip   # strip index dominates, then y within it
    y0 = lay.ys[:, :, 0]
    yrank = torch.sort(y0, dim=1, stable=True).indices.argsort(dim=1)   # y rank of every sorted position
    within = torch.sort(key[None, :] * n + yrank, dim=1).indices
    idx = within[:, :, None]
    return SortedLayout(ys=torch.gather(lay.ys, 1, idx.expand(-1, -1, lay.ys.shape[2])).contiguous(),
                        zs=torch.gather(lay.zs, 1, idx.expand(-1, -1, lay.zs.shape[2])).contiguous(),
                        order=torch.gather(lay.order, 1, within.to(torch.int64)).contiguous())


def prunable(batch: KSGBatch, k: int, algorithm: int) -> bool:
    """Whether this kernel serves the batch (algorithm 1, a conditioning block, k <= 16)."""
    return algorithm == 1 and batch.has_z and k <= MAX_K


class PreparedLaunch:
    """A batch with its item groups, sorted layout and output buffers built once, run many times.

    `run()` is then launches only (no host sync, no allocation): the network path builds one per
    chunk, the benchmark reuses one to time the steady state.
    """

    def __init__(self, batch: KSGBatch, *, k: int = 4, theiler: int = 0, store: bool = False,
                 layout: SortedLayout | None = None, max_groups: int = 1 << 20, **cfg):
        batch.check(k, theiler, 1)
        if not prunable(batch, k, 1):
            raise ValueError("the pruned kernel needs algorithm 1, a conditioning block (dz >= 1) and k <= 16")
        given = {key: v for key, v in cfg.items() if v is not None}
        c = {**CONFIG, **given}
        if batch.n >= LONG["min_n"] and "strip" not in given and not c["strip"]:
            c.update(strip=LONG["strip"], win=given.get("win", LONG["win"]))
        self.batch, self.k, self.theiler, self.store, self.cfg, self.max_groups = batch, k, theiler, store, c, max_groups
        n, dev = batch.n, batch.x.device
        self.layout = layout or sort_destinations(batch.y, batch.z)
        self.psi = digamma_table(n, dev)
        # source row at each sorted position of each destination, per row order: [Q, G, n]
        self.srow = batch.perms[:, self.layout.order.long()].contiguous()
        strip = int(c.get("strip") or 0)
        if strip:   # the 2-D k-NN layout; a query block must lie inside one strip
            strip = triton.cdiv(strip, c["block"]) * c["block"]
            self.knn = strip_layout(self.layout, strip)
            self.ksrow = batch.perms[:, self.knn.order.long()].contiguous()
        else:
            self.knn, self.ksrow = self.layout, self.srow
        self.strip = strip
        self.slots, self.gdst, self.item_of = group_items(batch.items, c["group"])
        self.n_blocks = triton.cdiv(n, c["block"])
        self.part = torch.full((self.slots.shape[0], c["group"], self.n_blocks), float("nan"), dtype=torch.float64,
                               device=dev)
        self.n_items = int(batch.items.shape[0])
        flat = self.item_of.view(-1).long()   # slot -> item; empty slots write to a spare last entry (no sync)
        self._dest = torch.where(flat >= 0, flat, self.n_items)
        self._te = torch.full((self.n_items + 1,), float("nan"), dtype=torch.float64, device=dev)
        self.te = self._te[:self.n_items]
        if store:
            self.eps = torch.full((self.n_items, n), -1.0, dtype=batch.x.dtype, device=dev)
            self.counts = [torch.full((self.n_items, n), -1, dtype=torch.int32, device=dev) for _ in range(3)]
        else:
            self.eps = torch.empty(1, dtype=batch.x.dtype, device=dev)
            self.counts = [torch.empty(1, dtype=torch.int32, device=dev) for _ in range(3)]

    def run(self) -> torch.Tensor:
        """Launch and return the [B] float64 estimates (on the device; the buffer is reused)."""
        b, c, lay = self.batch, self.cfg, self.layout
        n = b.n
        dx, dy, dz = (int(t.shape[2]) for t in (b.x, b.y, b.z))
        for g0 in range(0, self.slots.shape[0], self.max_groups):
            ng = min(self.max_groups, self.slots.shape[0] - g0)
            _pruned_kernel[(ng, self.n_blocks)](
                b.x, lay.ys, lay.zs, lay.order, self.srow, self.knn.ys, self.knn.zs, self.knn.order, self.ksrow,
                self.slots[g0:], self.gdst[g0:], self.item_of[g0:],
                self.psi, self.part[g0:], self.eps, *self.counts,
                n, int(lay.order.shape[0]), self.theiler, self.n_blocks, c["win"], n.bit_length(),
                max(self.strip, 1), max(self.strip, 1).bit_length(),
                K=self.k, G=c["group"], DX=dx, DXP=_pow2(dx), DY=dy, DYP=_pow2(dy), DZ=dz, DZP=_pow2(dz),
                STORE=self.store, BLOCK=c["block"], STAGES=c["stages"], UNROLL=c["unroll"], RINGS=c["rings"],
                TWOD=self.strip > 0, num_warps=c["num_warps"])
        self._te.scatter_(0, self._dest, self.part.view(-1, self.n_blocks).sum(dim=1) / n)
        return self.te

    def result(self) -> BatchResult:
        te = self.run()
        if not self.store:
            return BatchResult(te=te)
        return BatchResult(te=te, eps=self.eps, n_xz=self.counts[0], n_yz=self.counts[1], n_z=self.counts[2])


def _pow2(d: int) -> int:
    return max(1, triton.next_power_of_2(max(d, 1)))


def ksg_batch_pruned(batch: KSGBatch, *, k: int = 4, theiler: int = 0, algorithm: int = 1, store: bool = True,
                     **cfg) -> BatchResult:
    """Every item's KSG estimate with the pruned kernel; algorithm 2 / no z go to the brute-force kernel."""
    if not prunable(batch, k, algorithm):
        return ksg_batch_triton(batch, k=k, theiler=theiler, algorithm=algorithm, store=store)
    return PreparedLaunch(batch, k=k, theiler=theiler, store=store, **cfg).result()


def tune(batch: KSGBatch, *, k: int = 4, reps: int = 3) -> dict:
    """Time launch configs on `batch` (CUDA events): block x group x warps, then loop unrolling, then the
    phase-A window; the fastest whose estimates equal the first config's becomes CONFIG. Returns the timings."""
    timings: dict[tuple, float] = {}
    ref = None

    def run(cfg: dict) -> None:
        nonlocal ref
        try:
            launch = PreparedLaunch(batch, k=k, **cfg)
            te = launch.run().clone()   # compiles
        except Exception as exc:  # a config this Triton cannot build: skip it
            print(f"  skip {cfg}: {type(exc).__name__}: {str(exc)[:120]}")
            return
        ref = te if ref is None else ref
        if not torch.allclose(te, ref, rtol=0, atol=1e-12):
            raise AssertionError(f"launch config {cfg} changed the estimates")
        best = float("inf")
        for _ in range(reps):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            launch.run()
            b.record()
            torch.cuda.synchronize()
            best = min(best, a.elapsed_time(b) / 1e3)
        timings[tuple(sorted(cfg.items()))] = best

    base = dict(CONFIG)
    for block in (16, 32, 64):
        for group in (4, 8):
            for warps in (1, 2):
                if block * group >= 32 * warps:
                    run({**base, "block": block, "group": group, "num_warps": warps})
    best = dict(min(timings, key=timings.get))
    for unroll in (1, 4):
        run({**best, "unroll": unroll})
    best = dict(min(timings, key=timings.get))
    for win in (16, 32, 128):
        run({**best, "win": win})
    best = dict(min(timings, key=timings.get))
    run({**best, "rings": not best["rings"]})
    CONFIG.update(dict(min(timings, key=timings.get)))
    return timings
