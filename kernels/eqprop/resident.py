"""Persistent settling kernel with the weights resident in shared memory ("resident" variant, layers <= 256).

Why the other two persistent variants are slow at 256 units (H200 run: 7-9x eager, 1.2-1.45x graph bf16):
both compute s @ W with the *batch* rows as the matmul's M (BLOCK_B = 16), which the compiler maps to
mma.sync (MMAv2): both operands pass through registers. A 256 x 256 bf16 weight is 128 KiB, half the
register file, so "onchip" re-reads it from L2 into registers (and spills) at every sweep, and "chunked"
re-reads it in unpipelined K-chunks and round-trips the states through a global scratch; 64 programs
(batch 1024 / 16) each stream 2 x 128-256 KiB of weights per sweep from L2.

This variant transposes the problem: states are held as s_k^T (P_k x BLOCK_B: hidden units x batch
columns), and a layer update is

    a_k^T = W_k s_{k-1}^T + W_{k+1}^T s_{k+1}^T + b_k (+ skips) - beta * dC/ds (last layer)

so the *weight* is the matmul's A operand (M = P_k >= 64) and the batch tile is N. On sm_90 that is a
wgmma (MMAv3) whose A operand is read from shared memory: the weights are loaded once before the step
loop and the compiler's shared-memory copy of them (placed right after their load) stays live for all
sweeps, so each sweep reads W from shared memory (not L2) and the only per-sweep shared-memory writes
are the small state operands (P x BLOCK_B). W_{k+1}^T is tl.trans of the same loaded tile. Layers of
16-32 units (the output) use mma.sync. Precisions as in persistent.py ("bf16" stores the weights in bf16:
a 256-wide layer pair is 128 KiB of shared memory; fp32 / tf32 weights at 256 would need 256 KiB and
are refused with OutOfResources at launch). Runs on the CPU under TRITON_INTERPRET=1.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import triton
import triton.language as tl

from kernels.eqprop.persistent import ACT_CODE, COST_CODE, MAX_LAYERS, _act, _pad, _wdtype, fits, prec_code

__all__ = ["prepare_resident"]


@triton.jit
def _tmm(w, s, PREC: tl.constexpr):
    """w (M x K) @ s (K x N), fp32 accumulation."""
    if PREC == 3:   # bf16 emulated exactly (the interpreter's bf16 dot is broken)
        return tl.dot(w.to(tl.bfloat16).to(tl.float32), s.to(tl.bfloat16).to(tl.float32), input_precision="ieee")
    elif PREC == 2:
        return tl.dot(w.to(tl.bfloat16), s.to(tl.bfloat16), out_dtype=tl.float32)
    elif PREC == 1:
        return tl.dot(w.to(tl.float32), s, input_precision="tf32")
    else:
        return tl.dot(w.to(tl.float32), s, input_precision="tf32x3")


@triton.jit
def _tcost_grad(s, t, m, COST: tl.constexpr):
    """dC/ds of the transposed output layer s (P x BLOCK_B): the softmax runs over axis 0 (units)."""
    if COST == 0:
        z = tl.where(m > 0, s, float("-inf"))
        z = z - tl.max(z, axis=0)[None, :]
        e = tl.exp(z)
        return e / tl.sum(e, axis=0)[None, :] - t
    else:
        return s - t


@triton.jit
def _tlayer(base, lower, wl, upper, wut, own, t, beta, m, HAS_LOWER: tl.constexpr, SKIP_LOWER: tl.constexpr,
            HAS_UPPER: tl.constexpr, SKIP_UPPER: tl.constexpr, LAST: tl.constexpr, NUDGE: tl.constexpr,
            COST: tl.constexpr, ACT: tl.constexpr, PREC: tl.constexpr):
    a = base
    if HAS_LOWER:
        a = a + _tmm(wl, lower, PREC)
        if SKIP_LOWER:
            a = a + lower
    if HAS_UPPER:
        a = a + _tmm(wut, upper, PREC)
        if SKIP_UPPER:
            a = a + upper
    if LAST:
        if NUDGE:
            a = a - beta * _tcost_grad(own, t, m, COST)
    return _act(a, ACT) * m


@triton.jit
def _tsweep(s0, s1, s2, s3, d, t, b1, b2, b3, w1, w2, w3, w1t, w2t, w3t, beta, m0, m1, m2, m3,
            L: tl.constexpr, SYNC: tl.constexpr, SK0: tl.constexpr, SK1: tl.constexpr, SK2: tl.constexpr,
            NUDGE: tl.constexpr, COST: tl.constexpr, ACT: tl.constexpr, PREC: tl.constexpr):
    n0 = _tlayer(d, s0, w1, s1, w1t, s0, t, beta, m0, False, False, L > 1, SK0, L == 1, NUDGE, COST, ACT, PREC)
    n2 = s2
    if L > 2:
        n2 = _tlayer(b2, s1, w2, s3, w3t, s2, t, beta, m2, True, SK1, L > 3, SK2, L == 3, NUDGE, COST, ACT, PREC)
    q0 = n0
    q2 = n2
    if SYNC:
        q0 = s0
        q2 = s2
    n1 = s1
    if L > 1:
        n1 = _tlayer(b1, q0, w1, q2, w2t, s1, t, beta, m1, True, SK0, L > 2, SK1, L == 2, NUDGE, COST, ACT, PREC)
    n3 = s3
    if L > 3:
        n3 = _tlayer(b3, q2, w3, s3, w3t, s3, t, beta, m3, True, SK2, False, False, True, NUDGE, COST, ACT, PREC)
    return n0, n1, n2, n3


@triton.jit
def _tload_w(wp, k: tl.constexpr, PO: tl.constexpr, PI: tl.constexpr, L: tl.constexpr):
    """W_k as stored, padded (P_k, P_{k-1}); a 16 x 16 zero tile when the layer does not exist."""
    if k < L:
        w = tl.load(wp + tl.arange(0, PO)[:, None] * PI + tl.arange(0, PI)[None, :])
    else:
        w = tl.zeros((16, 16), dtype=wp.dtype.element_ty)
    return w


@triton.jit
def _tload_s(sp, cols, cmask, P: tl.constexpr, k: tl.constexpr, L: tl.constexpr, BLOCK_B: tl.constexpr):
    """Rows `cols` of a (B, P) buffer, transposed: (P, BLOCK_B)."""
    if k < L:
        units = tl.arange(0, P)
        s = tl.load(sp + cols[None, :] * P + units[:, None], mask=cmask[None, :], other=0.0)
    else:
        s = tl.zeros((16, BLOCK_B), dtype=tl.float32)
    return s


@triton.jit
def _tmask(n, P: tl.constexpr):
    return (tl.arange(0, P) < n).to(tl.float32)[:, None]


@triton.jit
def _tstore_s(sp, cols, cmask, new, old, r, P: tl.constexpr, k: tl.constexpr, L: tl.constexpr):
    if k < L:
        units = tl.arange(0, P)
        tl.store(sp + cols[None, :] * P + units[:, None], new, mask=cmask[None, :])
        ch = tl.abs(new - old) * cmask[None, :].to(tl.float32)
        r = tl.maximum(r, tl.max(tl.max(ch, axis=0), axis=0))
    return r


@triton.jit
def _settle_resident(s0p, s1p, s2p, s3p, d_ptr, t_ptr, w1p, w2p, w3p, b1p, b2p, b3p, res_ptr, B, steps, beta,
                     n0, n1, n2, n3, P0: tl.constexpr, P1: tl.constexpr, P2: tl.constexpr, P3: tl.constexpr,
                     PL: tl.constexpr, BLOCK_B: tl.constexpr, L: tl.constexpr, SYNC: tl.constexpr,
                     SK0: tl.constexpr, SK1: tl.constexpr, SK2: tl.constexpr, NUDGE: tl.constexpr,
                     COST: tl.constexpr, ACT: tl.constexpr, PREC: tl.constexpr):
    pid = tl.program_id(0)
    cols = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    cmask = cols < B
    m0 = _tmask(n0, P0)
    m1 = _tmask(n1, P1)
    m2 = _tmask(n2, P2)
    m3 = _tmask(n3, P3)
    d = _tload_s(d_ptr, cols, cmask, P0, 0, L, BLOCK_B)
    t = _tload_s(t_ptr, cols, cmask, PL, 0, L, BLOCK_B)
    b1 = tl.load(b1p + tl.arange(0, P1))[:, None]
    b2 = tl.load(b2p + tl.arange(0, P2))[:, None]
    b3 = tl.load(b3p + tl.arange(0, P3))[:, None]
    s0 = _tload_s(s0p, cols, cmask, P0, 0, L, BLOCK_B)
    s1 = _tload_s(s1p, cols, cmask, P1, 1, L, BLOCK_B)
    s2 = _tload_s(s2p, cols, cmask, P2, 2, L, BLOCK_B)
    s3 = _tload_s(s3p, cols, cmask, P3, 3, L, BLOCK_B)
    # loaded once, before the loop: their shared-memory copies (dot operands) live for all sweeps
    w1 = _tload_w(w1p, 1, P1, P0, L)
    w2 = _tload_w(w2p, 2, P2, P1, L)
    w3 = _tload_w(w3p, 3, P3, P2, L)
    w1t = tl.trans(w1)
    w2t = tl.trans(w2)
    w3t = tl.trans(w3)
    for _ in range(steps - 1):
        s0, s1, s2, s3 = _tsweep(s0, s1, s2, s3, d, t, b1, b2, b3, w1, w2, w3, w1t, w2t, w3t, beta,
                                 m0, m1, m2, m3, L, SYNC, SK0, SK1, SK2, NUDGE, COST, ACT, PREC)
    n0_, n1_, n2_, n3_ = _tsweep(s0, s1, s2, s3, d, t, b1, b2, b3, w1, w2, w3, w1t, w2t, w3t, beta,
                                 m0, m1, m2, m3, L, SYNC, SK0, SK1, SK2, NUDGE, COST, ACT, PREC)
    r = tl.max(tl.max(tl.zeros((16, BLOCK_B), dtype=tl.float32), axis=0), axis=0)
    r = _tstore_s(s0p, cols, cmask, n0_, s0, r, P0, 0, L)
    r = _tstore_s(s1p, cols, cmask, n1_, s1, r, P1, 1, L)
    r = _tstore_s(s2p, cols, cmask, n2_, s2, r, P2, 2, L)
    r = _tstore_s(s3p, cols, cmask, n3_, s3, r, P3, 3, L)
    tl.store(res_ptr + pid, r)


def prepare_resident(drive: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor], skips: list[bool],
                     states: list[torch.Tensor], beta: float, cost: str, target: torch.Tensor | None, steps: int,
                     update: str, activation: str, precision: str = "bf16", block_b: int = 16,
                     num_warps: int = 4,
                     num_stages: int | None = None) -> tuple[Callable[[], None],
                                                             Callable[[], tuple[list[torch.Tensor], torch.Tensor]]]:
    """(launch, collect) of the resident variant (see the module docstring); same contract as
    persistent.prepare: states written in place in padded (B, P_k) buffers, the residual per program."""
    widths = [s.shape[1] for s in states]
    if not fits(widths):
        raise ValueError(f"resident kernel: {len(widths)} state layers of widths {widths}; "
                         f"allowed 1..{MAX_LAYERS} layers <= 256 wide")
    L = len(widths)
    B = drive.shape[0]
    P = [_pad(n) for n in widths] + [16] * (MAX_LAYERS - L)
    dev = drive.device
    f32 = torch.float32

    def padded(t: torch.Tensor | None, rows: int, cols: int, dtype: torch.dtype = f32) -> torch.Tensor:
        out = torch.zeros(rows, cols, device=dev, dtype=dtype)
        if t is not None:
            out[: t.shape[0], : t.shape[1]] = t
        return out

    S = [padded(states[k] if k < L else None, B if k < L else 1, P[k]) for k in range(MAX_LAYERS)]
    D = padded(drive, B, P[0])
    T = padded(target, B, P[L - 1])
    W = [padded(weights[k - 1] if k < L else None, P[k], P[k - 1], _wdtype(precision)) for k in range(1, MAX_LAYERS)]
    Bs = [padded(biases[k - 1][None, :] if k < L else None, 1, P[k]) for k in range(1, MAX_LAYERS)]
    grid = (triton.cdiv(B, block_b),)
    res = torch.zeros(grid[0], device=dev, dtype=f32)
    sk = list(skips) + [False] * MAX_LAYERS
    n = widths + [0] * (MAX_LAYERS - L)
    extra = {} if num_stages is None else {"num_stages": num_stages}

    def launch() -> None:
        _settle_resident[grid](S[0], S[1], S[2], S[3], D, T, W[0], W[1], W[2], Bs[0], Bs[1], Bs[2], res, B, steps,
                               float(beta), n[0], n[1], n[2], n[3], P0=P[0], P1=P[1], P2=P[2], P3=P[3],
                               PL=P[L - 1], BLOCK_B=block_b, L=L, SYNC=update == "sync", SK0=sk[0], SK1=sk[1],
                               SK2=sk[2], NUDGE=beta != 0, COST=COST_CODE[cost], ACT=ACT_CODE[activation],
                               PREC=prec_code(precision), num_warps=num_warps, **extra)

    def collect() -> tuple[list[torch.Tensor], torch.Tensor]:
        return [S[k][:, : widths[k]] for k in range(L)], res.max()

    return launch, collect
