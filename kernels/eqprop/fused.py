"""Wide-layer settling (state layers 512-2048): one fused Triton kernel per layer update, the step loop
captured in a CUDA graph.

Layer k's update is one tiled matmul pair with the whole epilogue fused (no intermediate in memory):

    out = act(base + A1 @ B1 [+ A1] + A2 @ B2 [+ A2] - beta * nudge(own, t))
          base = drive (k = 0) or bias b_k;  A1 @ B1 = s_{k-1} W_k^T;  A2 @ B2 = s_{k+1} W_{k+1}
          nudge (output layer): softmax(own) - t ("ce", in the epilogue when one column tile holds the
          whole row, else computed by torch just before) or own - t ("mse")

W_k^T is read through strides (no transposed copy). Precision "bf16" feeds bf16 operands to the tensor
cores (weights converted once per phase, states cast on load), "tf32" fp32 operands on tf32 cores,
"fp32" 3xTF32 (fp32-accurate, tensor cores); accumulation is fp32 in all. "sync" ping-pongs two state sets; "evenodd" updates in
place (layers 0, 2, ... then 1, 3, ...). On CUDA the `steps` sweeps (and the weight conversion) are
captured once per (weights, shapes, steps, beta, cost, update, precision) in a torch.cuda.CUDAGraph and
replayed, so a phase costs one graph launch; under TRITON_INTERPRET=1 (CPU) the same kernels run in a
plain loop.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any

import torch
import triton
import triton.language as tl

from kernels.eqprop.persistent import ACT_CODE, _act, prec_code

__all__ = ["FusedSettler", "Tiles", "clear_graphs", "fused_settle", "layer_update", "sweep_update"]

NUDGE_NONE, NUDGE_CE, NUDGE_MSE, NUDGE_PRE = 0, 1, 2, 3
Tiles = tuple[int, int, int, int, int]   # (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages)
CE_MAX_TILE = 256
GRAPH_CACHE = 8


@triton.jit
def _dot(a, b, PREC: tl.constexpr):
    if PREC == 3:
        return tl.dot(a.to(tl.bfloat16).to(tl.float32), b.to(tl.bfloat16).to(tl.float32), input_precision="ieee")
    elif PREC == 2:
        return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16), out_dtype=tl.float32)
    elif PREC == 1:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="tf32")
    else:   # fp32: 3xTF32 on the tensor cores (~fp32 accuracy)
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="tf32x3")


@triton.jit
def _fused_layer(out_ptr, base_ptr, bias_ptr, a1_ptr, b1_ptr, a2_ptr, b2_ptr, own_ptr, t_ptr, g_ptr,
                 M, N, K1, K2, s_a1, s_b1k, s_b1n, s_a2, s_b2k, s_b2n, beta,
                 HAS_BASE: tl.constexpr, HAS_A1: tl.constexpr, SKIP1: tl.constexpr, HAS_A2: tl.constexpr,
                 SKIP2: tl.constexpr, NUDGE: tl.constexpr, ACT: tl.constexpr, PREC: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    _fused_tile(tl.program_id(0), tl.program_id(1), out_ptr, base_ptr, bias_ptr, a1_ptr, b1_ptr, a2_ptr, b2_ptr,
                own_ptr, t_ptr, g_ptr, M, N, K1, K2, s_a1, s_b1k, s_b1n, s_a2, s_b2k, s_b2n, beta, HAS_BASE, HAS_A1,
                SKIP1, HAS_A2, SKIP2, NUDGE, ACT, PREC, BLOCK_M, BLOCK_N, BLOCK_K)


@triton.jit
def _fused_tile(pid_m, pid_n, out_ptr, base_ptr, bias_ptr, a1_ptr, b1_ptr, a2_ptr, b2_ptr, own_ptr, t_ptr, g_ptr,
                M, N, K1, K2, s_a1, s_b1k, s_b1n, s_a2, s_b2k, s_b2n, beta,
                HAS_BASE: tl.constexpr, HAS_A1: tl.constexpr, SKIP1: tl.constexpr, HAS_A2: tl.constexpr,
                SKIP2: tl.constexpr, NUDGE: tl.constexpr, ACT: tl.constexpr, PREC: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """One BLOCK_M x BLOCK_N output tile of a layer update (states may be fp32 or bf16 in memory; the
    epilogue computes in fp32 and the store rounds to out's dtype)."""
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    mm = rm < M
    mn = rn < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if HAS_A1:
        for k0 in range(0, K1, BLOCK_K):
            kk = k0 + rk
            a = tl.load(a1_ptr + rm[:, None] * s_a1 + kk[None, :], mask=mm[:, None] & (kk[None, :] < K1), other=0.0)
            b = tl.load(b1_ptr + kk[:, None] * s_b1k + rn[None, :] * s_b1n, mask=(kk[:, None] < K1) & mn[None, :],
                        other=0.0)
            acc += _dot(a, b, PREC)
    if HAS_A2:
        for k0 in range(0, K2, BLOCK_K):
            kk = k0 + rk
            a = tl.load(a2_ptr + rm[:, None] * s_a2 + kk[None, :], mask=mm[:, None] & (kk[None, :] < K2), other=0.0)
            b = tl.load(b2_ptr + kk[:, None] * s_b2k + rn[None, :] * s_b2n, mask=(kk[:, None] < K2) & mn[None, :],
                        other=0.0)
            acc += _dot(a, b, PREC)
    m2 = mm[:, None] & mn[None, :]
    off = rm[:, None] * N + rn[None, :]
    if HAS_BASE:
        acc += tl.load(base_ptr + off, mask=m2, other=0.0)
    else:
        acc += tl.load(bias_ptr + rn, mask=mn, other=0.0)[None, :]
    if SKIP1:
        acc += tl.load(a1_ptr + rm[:, None] * s_a1 + rn[None, :], mask=m2, other=0.0).to(tl.float32)
    if SKIP2:
        acc += tl.load(a2_ptr + rm[:, None] * s_a2 + rn[None, :], mask=m2, other=0.0).to(tl.float32)
    if NUDGE == 1:
        own = tl.load(own_ptr + off, mask=m2, other=-1e30).to(tl.float32)
        z = own - tl.max(own, axis=1)[:, None]
        e = tl.where(m2, tl.exp(z), 0.0)
        t = tl.load(t_ptr + off, mask=m2, other=0.0)
        acc -= beta * (e / tl.maximum(tl.sum(e, axis=1), 1e-30)[:, None] - t)   # rows past M: 0, not 0/0
    elif NUDGE == 2:
        own = tl.load(own_ptr + off, mask=m2, other=0.0).to(tl.float32)
        t = tl.load(t_ptr + off, mask=m2, other=0.0)
        acc -= beta * (own - t)
    elif NUDGE == 3:
        acc -= beta * tl.load(g_ptr + off, mask=m2, other=0.0)
    tl.store(out_ptr + off, _act(acc, ACT), mask=m2)


@triton.jit
def _group_layer(pid, cur0, cur1, cur2, cur3, nxt, w_low, w_up, bias, d_ptr, t_ptr, g_ptr, B, nlow, nk, nup, beta,
                 K: tl.constexpr, L: tl.constexpr, SKL: tl.constexpr, SKU: tl.constexpr, NUDGE: tl.constexpr,
                 ACT: tl.constexpr, PREC: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    """Tile `pid` of layer K's update from the current states cur0..cur3 into nxt (row-major tiles)."""
    tiles_n = tl.cdiv(nk, BN)
    if K == 0:
        low = cur0
    elif K == 1:
        low = cur0
    elif K == 2:
        low = cur1
    else:
        low = cur2
    if K == 0:
        up = cur1
    elif K == 1:
        up = cur2
    else:
        up = cur3
    if K == 0:
        own = cur0
    elif K == 1:
        own = cur1
    elif K == 2:
        own = cur2
    else:
        own = cur3
    _fused_tile(pid // tiles_n, pid % tiles_n, nxt, d_ptr, bias, low, w_low, up, w_up, own, t_ptr, g_ptr,
                B, nk, nlow, nup, nlow, 1, nlow, nup, nk, 1, beta,
                K == 0, K > 0, SKL, K < L - 1, SKU, NUDGE, ACT, PREC, BM, BN, BK)


@triton.jit
def _fused_sweep(cur0, cur1, cur2, cur3, nxt0, nxt1, nxt2, nxt3, w1, w2, w3, b1, b2, b3, d_ptr, t_ptr, g_ptr,
                 B, n0, n1, n2, n3, c1, c2, c3, beta, L: tl.constexpr, SK0: tl.constexpr, SK1: tl.constexpr,
                 SK2: tl.constexpr, NUDGE: tl.constexpr, ACT: tl.constexpr, PREC: tl.constexpr,
                 BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, BNL: tl.constexpr):
    """One synchronous sweep of all (<= 4) state layers in one launch: programs [0, c1) update layer 0,
    [c1, c2) layer 1, ... (every layer reads only the old states cur*, writes nxt*). The last layer uses
    BNL-wide column tiles (one tile per row for the softmax nudge); the others BM x BN."""
    pid = tl.program_id(0)
    if pid < c1:
        if L == 1:
            _group_layer(pid, cur0, cur1, cur2, cur3, nxt0, w1, w1, b1, d_ptr, t_ptr, g_ptr, B, n0, n0, n1, beta,
                         0, L, False, SK0, NUDGE, ACT, PREC, BM, BNL, BK)
        else:
            _group_layer(pid, cur0, cur1, cur2, cur3, nxt0, w1, w1, b1, d_ptr, t_ptr, g_ptr, B, n0, n0, n1, beta,
                         0, L, False, SK0, 0, ACT, PREC, BM, BN, BK)
    elif pid < c2:
        if L == 2:
            _group_layer(pid - c1, cur0, cur1, cur2, cur3, nxt1, w1, w2, b1, d_ptr, t_ptr, g_ptr, B, n0, n1, n2, beta,
                         1, L, SK0, SK1, NUDGE, ACT, PREC, BM, BNL, BK)
        else:
            _group_layer(pid - c1, cur0, cur1, cur2, cur3, nxt1, w1, w2, b1, d_ptr, t_ptr, g_ptr, B, n0, n1, n2, beta,
                         1, L, SK0, SK1, 0, ACT, PREC, BM, BN, BK)
    elif pid < c3:
        if L == 3:
            _group_layer(pid - c2, cur0, cur1, cur2, cur3, nxt2, w2, w3, b2, d_ptr, t_ptr, g_ptr, B, n1, n2, n3, beta,
                         2, L, SK1, SK2, NUDGE, ACT, PREC, BM, BNL, BK)
        else:
            _group_layer(pid - c2, cur0, cur1, cur2, cur3, nxt2, w2, w3, b2, d_ptr, t_ptr, g_ptr, B, n1, n2, n3, beta,
                         2, L, SK1, SK2, 0, ACT, PREC, BM, BN, BK)
    else:
        _group_layer(pid - c3, cur0, cur1, cur2, cur3, nxt3, w3, w3, b3, d_ptr, t_ptr, g_ptr, B, n2, n3, n3, beta,
                     3, L, SK2, False, NUDGE, ACT, PREC, BM, BNL, BK)


FILL_SMS = 120   # ~ the 132 SMs of an H100 / H200: pick the largest tile that still gives this many programs


def _blocks(m: int, n: int, ce_last: bool) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps): the largest of 128x128 / 64x128 / 64x64 tiles that still
    fills the GPU (>= FILL_SMS programs: at batch 1024 that is 64x64 for 512 units, 64x128 for 1024,
    128x128 for 2048; the first H200 run used 128x128 everywhere, i.e. 32 programs at 512); one column
    tile for an in-epilogue softmax. Under the interpreter 32x32 (the tile sizes only have to be valid)."""
    if ce_last:
        bn = max(16, triton.next_power_of_2(n))
        return (64 if bn <= 128 else 32), bn, 32, 4
    if os.environ.get("TRITON_INTERPRET") == "1":
        return 32, 32, 32, 4
    if triton.cdiv(m, 128) * triton.cdiv(n, 128) >= FILL_SMS:
        return 128, 128, 32, 8   # BLOCK_K 32: fp32 operands x 3 stages stay under 100 KiB of shared memory
    if triton.cdiv(m, 64) * triton.cdiv(n, 128) >= FILL_SMS:
        return 64, 128, 32, 4
    return 64, 64, 32, 4


def layer_update(out: torch.Tensor, base: torch.Tensor | None, bias: torch.Tensor, a1: torch.Tensor | None,
                 w1: torch.Tensor | None, a2: torch.Tensor | None, w2: torch.Tensor | None, skip1: bool, skip2: bool,
                 nudge: int, own: torch.Tensor | None, target: torch.Tensor | None, g: torch.Tensor | None,
                 beta: float, activation: str, precision: str, tiles: Tiles | None = None) -> None:
    """out = act(base|bias + a1 @ w1^T (+ a1) + a2 @ w2 (+ a2) - beta nudge) in one launch; `w1` is
    W_k (n_k, n_{k-1}) read transposed, `w2` is W_{k+1} (n_{k+1}, n_k). `tiles` overrides the default
    (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) of a layer whose nudge is not the in-epilogue softmax."""
    M, N = out.shape
    ce_last = nudge == NUDGE_CE
    bm, bn, bk, warps = _blocks(M, N, ce_last)
    stages: dict[str, int] = {}
    if tiles is not None and not ce_last:
        bm, bn, bk, warps = tiles[:4]
        stages = {"num_stages": tiles[4]}
    dummy = out
    K1 = a1.shape[1] if a1 is not None else 0
    K2 = a2.shape[1] if a2 is not None else 0
    grid = (triton.cdiv(M, bm), triton.cdiv(N, bn))
    _fused_layer[grid](
        out, base if base is not None else dummy, bias, a1 if a1 is not None else dummy,
        w1 if w1 is not None else dummy, a2 if a2 is not None else dummy, w2 if w2 is not None else dummy,
        own if own is not None else dummy, target if target is not None else dummy, g if g is not None else dummy,
        M, N, K1, K2,
        a1.stride(0) if a1 is not None else 0, w1.stride(1) if w1 is not None else 0,
        w1.stride(0) if w1 is not None else 0,
        a2.stride(0) if a2 is not None else 0, w2.stride(0) if w2 is not None else 0,
        w2.stride(1) if w2 is not None else 0, float(beta),
        HAS_BASE=base is not None, HAS_A1=a1 is not None, SKIP1=skip1, HAS_A2=a2 is not None, SKIP2=skip2,
        NUDGE=nudge, ACT=ACT_CODE[activation], PREC=prec_code(precision),
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps, **stages)


def _last_bn(n_last: int, bn: int) -> int:
    """Column tile of the last layer in the grouped sweep: the whole row when it is <= CE_MAX_TILE (the
    in-epilogue softmax needs it), else the hidden layers' BLOCK_N."""
    return max(16, triton.next_power_of_2(n_last)) if n_last <= CE_MAX_TILE else bn


def sweep_update(cur: list[torch.Tensor], nxt: list[torch.Tensor], drive: torch.Tensor, weights: list[torch.Tensor],
                 biases: list[torch.Tensor], skips: list[bool], nudge: int, target: torch.Tensor | None,
                 g: torch.Tensor, beta: float, activation: str, precision: str, tiles: Tiles) -> None:
    """One synchronous sweep of <= 4 state layers in ONE launch (_fused_sweep): nxt[k] from cur[*]. For a
    "ce" nudge over > CE_MAX_TILE units, g = softmax(s_L) - t is computed by torch just before."""
    L = len(cur)
    B = cur[0].shape[0]
    bm, bn, bk, warps, stages = tiles
    n = [c.shape[1] for c in cur] + [16] * (4 - L)
    bnl = _last_bn(n[L - 1], bn)
    if nudge == NUDGE_CE and n[L - 1] > CE_MAX_TILE:
        nudge = NUDGE_PRE
    if nudge == NUDGE_PRE:
        torch.sub(torch.softmax(cur[L - 1].float(), dim=1), target, out=g)
    t = [triton.cdiv(B, bm) * triton.cdiv(n[k], bnl if k == L - 1 else bn) if k < L else 0 for k in range(4)]
    c1, c2, c3 = t[0], t[0] + t[1], t[0] + t[1] + t[2]
    C = list(cur) + [cur[0]] * (4 - L)
    N = list(nxt) + [nxt[0]] * (4 - L)
    W = list(weights) + [weights[0] if weights else drive] * (3 - len(weights))
    Bs = list(biases) + [biases[0] if biases else drive] * (3 - len(biases))
    sk = list(skips) + [False] * 4
    _fused_sweep[(c3 + t[3],)](C[0], C[1], C[2], C[3], N[0], N[1], N[2], N[3], W[0], W[1], W[2], Bs[0], Bs[1], Bs[2],
                               drive, target if target is not None else drive, g, B, n[0], n[1], n[2], n[3], c1, c2,
                               c3, float(beta), L=L, SK0=sk[0], SK1=sk[1], SK2=sk[2], NUDGE=nudge,
                               ACT=ACT_CODE[activation], PREC=prec_code(precision), BM=bm, BN=bn, BK=bk, BNL=bnl,
                               num_warps=warps, num_stages=stages)


class FusedSettler:
    """Static buffers and (on CUDA) the captured graph of one phase configuration."""

    def __init__(self, drive: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor],
                 skips: list[bool], widths: list[int], beta: float, cost: str, has_target: bool, steps: int,
                 update: str, activation: str, precision: str, graph: bool, tiles: Tiles | None = None,
                 grouped: bool = False, state_dtype: torch.dtype = torch.float32):
        """`tiles` (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) overrides the default tile choice;
        `grouped` runs each synchronous sweep of <= 4 layers as one launch (sweep_update) instead of one
        launch per layer; `state_dtype` bf16 keeps the states in bf16 (half the operand traffic, no cast
        before the bf16 dot; the returned states are fp32)."""
        dev = drive.device
        self.tiles = tiles
        self.grouped = grouped and groupable(update, widths)
        if self.grouped and self.tiles is None:
            bm, bn, bk, warps = _blocks(drive.shape[0], max(widths), False)
            self.tiles = (bm, bn, bk, warps, 3)
        B = drive.shape[0]
        self.src_w = weights
        self.wdtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.w = [w if w.dtype == self.wdtype and w.is_contiguous() else torch.empty(w.shape, device=dev, dtype=self.wdtype)
                  for w in weights]
        self.src_b = biases
        self.biases = [b if b.dtype == torch.float32 and b.is_contiguous() else torch.empty(b.shape, device=dev)
                       for b in biases]
        self.drive = torch.empty_like(drive, dtype=torch.float32)
        self.target = torch.zeros(B, widths[-1], device=dev, dtype=torch.float32) if has_target else None
        n_sets = 2
        self.sets = [[torch.zeros(B, n, device=dev, dtype=state_dtype) for n in widths] for _ in range(n_sets)]
        self.g = torch.empty(B, widths[-1], device=dev, dtype=torch.float32)
        self.skips, self.widths, self.beta, self.cost = skips, widths, beta, cost
        self.steps, self.update, self.activation, self.precision = steps, update, activation, precision
        self.nudge = NUDGE_NONE
        if beta != 0:
            self.nudge = NUDGE_MSE if cost == "mse" else (NUDGE_CE if widths[-1] <= CE_MAX_TILE else NUDGE_PRE)
        self.graph: Any = None
        if graph:
            self._warm_and_capture()

    def _convert(self) -> None:
        for dst, src in [*zip(self.w, self.src_w), *zip(self.biases, self.src_b)]:
            if dst is not src:
                dst.copy_(src)   # inside the graph: the current parameters, converted at every replay

    def _layer(self, k: int, src: list[torch.Tensor], dst: torch.Tensor) -> None:
        L = len(self.widths)
        last = k == L - 1
        nudge = self.nudge if last else NUDGE_NONE
        if nudge == NUDGE_PRE:
            z = torch.softmax(src[k], dim=1)
            torch.sub(z, self.target, out=self.g)
        layer_update(dst, self.drive if k == 0 else None, self.biases[k - 1] if k > 0 else self.drive,
                     src[k - 1] if k > 0 else None, self.w[k - 1] if k > 0 else None,
                     src[k + 1] if not last else None, self.w[k] if not last else None,
                     k > 0 and self.skips[k - 1], (not last) and self.skips[k], nudge, src[k] if last else None,
                     self.target, self.g, self.beta, self.activation, self.precision, self.tiles)

    def _sweep(self, cur: list[torch.Tensor], nxt: list[torch.Tensor]) -> None:
        L = len(self.widths)
        if self.grouped:
            sweep_update(cur, nxt, self.drive, self.w, self.biases, self.skips, self.nudge, self.target, self.g,
                         self.beta, self.activation, self.precision, self.tiles)
        elif self.update == "sync":
            for k in range(L):
                self._layer(k, cur, nxt[k])
        else:   # in place, layers 0, 2, ... then 1, 3, ...; a layer's output cannot alias its own input
            for parity in (0, 1):
                for k in range(parity, L, 2):
                    self._layer(k, cur, nxt[k])
                    cur[k].copy_(nxt[k])

    def _warm_and_capture(self) -> None:
        self._scratch = [torch.empty_like(s) for s in self.sets[0]]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            self._run_graphable()   # compiles the kernels outside the capture
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._run_graphable()

    def _run_graphable(self) -> None:
        self._convert()
        if self.update == "sync":
            for t in range(self.steps):
                self._sweep(self.sets[t % 2], self.sets[(t + 1) % 2])
        else:
            a, b = self.sets
            for t in range(self.steps):
                if t == self.steps - 1:
                    for p, q in zip(b, a):
                        p.copy_(q)
                self._sweep(a, self._scratch)

    def __call__(self, drive: torch.Tensor, states: list[torch.Tensor],
                 target: torch.Tensor | None) -> tuple[list[torch.Tensor], torch.Tensor]:
        self.drive.copy_(drive)
        if self.target is not None and target is not None:
            self.target.copy_(target)
        for dst, src in zip(self.sets[0], states):
            dst.copy_(src)
        if self.graph is not None:
            self.graph.replay()
        else:
            self._scratch = [torch.empty_like(s) for s in self.sets[0]]
            self._run_graphable()
        if self.update == "sync":
            new, old = self.sets[self.steps % 2], self.sets[(self.steps - 1) % 2]
        else:
            new, old = self.sets
        return ([s.float() for s in new] if new[0].dtype != torch.float32 else [s.clone() for s in new],
                torch.stack([(a.float() - b.float()).abs().max() for a, b in zip(new, old)]).max())


_GRAPHS: OrderedDict[tuple, FusedSettler] = OrderedDict()

# the fastest measured wide path (H200, 2026-12-03, batch 1024, 30 sync sweeps, [784, H, H, 10] bf16):
# one grouped launch per sweep, 64 x 128 x 64 tiles, 4 warps, 3 stages, bf16 states: 0.20 / 0.40 / 1.35 ms
# at H 512 / 1024 / 2048 = 3.8x / 2.5x / 1.3x the graph-captured bf16 cuBLAS loop (per-layer launches:
# 1.3x / 0.92x / 0.55x), rel err 1.8-2.1e-3 vs float64
BF16_SWEEP_TILES: Tiles = (64, 128, 64, 4, 3)


def groupable(update: str, widths: list[int]) -> bool:
    """Whether a phase can run as one grouped launch per sweep (sweep_update: synchronous, <= 4 layers)."""
    return update == "sync" and len(widths) <= 4


def bf16_sweep_options(drive: torch.Tensor, precision: str, update: str, widths: list[int]) -> dict[str, Any]:
    """FusedSettler options for a bf16 phase on CUDA that can be grouped (grouped sweep, BF16_SWEEP_TILES,
    bf16 states: the measured configuration); none elsewhere: fp32 / tf32 keep fp32 states (training
    precision), deeper or even/odd phases the per-layer default, the interpreter its small tiles."""
    if precision != "bf16" or not drive.is_cuda or not groupable(update, widths):
        return {}
    return {"grouped": True, "tiles": BF16_SWEEP_TILES, "state_dtype": torch.bfloat16}


def clear_graphs() -> None:
    """Drop the captured graphs (and their static buffers)."""
    _GRAPHS.clear()


def fused_settle(drive: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor], skips: list[bool],
                 states: list[torch.Tensor], beta: float, cost: str, target: torch.Tensor | None, steps: int,
                 update: str, activation: str, precision: str = "fp32",
                 graph: bool | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
    """One phase with the fused per-layer kernel; on CUDA (graph None/True) replayed from a captured
    CUDA graph cached per configuration (at most GRAPH_CACHE kept). Returns (fp32 states, residual as a
    0-d device tensor)."""
    widths = [s.shape[1] for s in states]
    use_graph = drive.is_cuda if graph is None else graph
    key = (str(drive.device), drive.shape[0], tuple(widths), tuple((w.data_ptr(), tuple(w.shape), w.dtype) for w in weights),
           tuple(b.data_ptr() for b in biases), tuple(skips), float(beta), cost, target is not None, steps, update,
           activation, precision, use_graph)
    settler = _GRAPHS.get(key) if use_graph else None
    if settler is None:
        settler = FusedSettler(drive, weights, biases, skips, widths, beta, cost, target is not None, steps, update,
                               activation, precision, graph=use_graph, **bf16_sweep_options(drive, precision, update, widths))
        if use_graph:
            _GRAPHS[key] = settler
            while len(_GRAPHS) > GRAPH_CACHE:
                _GRAPHS.popitem(last=False)
    else:
        _GRAPHS.move_to_end(key)
    return settler(drive, states, target)
