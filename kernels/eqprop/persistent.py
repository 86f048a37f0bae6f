"""Persistent Triton settling kernel: every step of one phase in one launch (state layers <= 256 wide).

One program owns BLOCK_B batch rows and keeps their states s_0..s_{L-1} (L <= 4 state layers, each
padded to P = a power of two >= 16 columns) in registers for the whole phase; the constant input drive
W_0 x + b_0 is computed once outside (one matmul) and loaded once. The state-to-state weights W_1..W_{L-1}
(padded to P x P, fp32 or bf16 in memory) are held in registers when they are small
((L - 1) * P * P <= WREG_LIMIT), else re-read from L2 at every step. A sweep is, per state layer k,

    a_k = [k = 0: drive | k > 0: s_{k-1} W_k^T + b_k (+ s_{k-1} when skip)] + s_{k+1} W_{k+1} (+ s_{k+1})
          - beta * dC/ds (last layer only: softmax(s) - t for "ce", s - t for "mse")
    s_k = act(a_k) * mask_k                (padded columns stay 0)

in "sync" order (all from the old states) or "evenodd" (layers 0, 2 first, then 1, 3 from the new
0, 2). The matmuls accumulate in fp32 (precision "bf16": bf16 operands; "tf32": tensor-core tf32;
"fp32": exact IEEE fp32). After steps-1 sweeps in a device loop, the last sweep writes the states and
the program's largest unit change (the residual) to `res`. Runs on CUDA, and on the CPU under
TRITON_INTERPRET=1 (slowly; the tests compare it with the torch settle there).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

__all__ = ["MAX_LAYERS", "MAX_WIDTH", "fits", "persistent_settle"]

MAX_WIDTH = 256
MAX_LAYERS = 4
WREG_LIMIT = 128 * 128
ACT_CODE = {"hardsigmoid": 0, "sigmoid": 1, "tanh": 2}
COST_CODE = {"ce": 0, "mse": 1}
PREC_CODE = {"fp32": 0, "tf32": 1, "bf16": 2}


def prec_code(precision: str) -> int:
    """The kernels' PREC constexpr: bf16 is emulated exactly (bf16-rounded operands, fp32 dot) under
    TRITON_INTERPRET=1, whose bf16 tl.dot returns garbage (triton 3.9)."""
    if precision == "bf16" and os.environ.get("TRITON_INTERPRET") == "1":
        return 3
    return PREC_CODE[precision]


def fits(widths: list[int]) -> bool:
    """Whether state layers of these widths run in the persistent kernel."""
    return 1 <= len(widths) <= MAX_LAYERS and max(widths) <= MAX_WIDTH


@triton.jit
def _act(z, ACT: tl.constexpr):
    if ACT == 0:
        return tl.minimum(tl.maximum(z / 6.0 + 0.5, 0.0), 1.0)
    elif ACT == 1:
        return 1.0 / (1.0 + tl.exp(-z))
    else:
        return 2.0 / (1.0 + tl.exp(-2.0 * z)) - 1.0


@triton.jit
def _mm(a, w, PREC: tl.constexpr):
    if PREC == 3:   # bf16 operands, fp32 products and sums, as an IEEE fp32 dot (the interpreter's bf16 dot is broken)
        return tl.dot(a.to(tl.bfloat16).to(tl.float32), w.to(tl.bfloat16).to(tl.float32), input_precision="ieee")
    elif PREC == 2:
        return tl.dot(a.to(tl.bfloat16), w.to(tl.bfloat16), out_dtype=tl.float32)
    elif PREC == 1:
        return tl.dot(a, w.to(tl.float32), input_precision="tf32")
    else:
        return tl.dot(a, w.to(tl.float32), input_precision="ieee")


@triton.jit
def _cost_grad(s, t, m, COST: tl.constexpr):
    if COST == 0:
        z = tl.where(m > 0, s, float("-inf"))
        z = z - tl.max(z, axis=1)[:, None]
        e = tl.exp(z)
        return e / tl.sum(e, axis=1)[:, None] - t
    else:
        return s - t


@triton.jit
def _layer(base, lower, wt, upper, w, own, t, beta, m, HAS_LOWER: tl.constexpr, SKIP_LOWER: tl.constexpr,
           HAS_UPPER: tl.constexpr, SKIP_UPPER: tl.constexpr, LAST: tl.constexpr, NUDGE: tl.constexpr,
           COST: tl.constexpr, ACT: tl.constexpr, PREC: tl.constexpr):
    a = base
    if HAS_LOWER:
        a = a + _mm(lower, wt, PREC)
        if SKIP_LOWER:
            a = a + lower
    if HAS_UPPER:
        a = a + _mm(upper, w, PREC)
        if SKIP_UPPER:
            a = a + upper
    if LAST:
        if NUDGE:
            a = a - beta * _cost_grad(own, t, m, COST)
    return _act(a, ACT) * m


@triton.jit
def _sweep(s0, s1, s2, s3, d, t, b1, b2, b3, w1, w1t, w2, w2t, w3, w3t, beta, m0, m1, m2, m3,
           L: tl.constexpr, SYNC: tl.constexpr, SK0: tl.constexpr, SK1: tl.constexpr, SK2: tl.constexpr,
           NUDGE: tl.constexpr, COST: tl.constexpr, ACT: tl.constexpr, PREC: tl.constexpr):
    n0 = _layer(d, s0, w1t, s1, w1, s0, t, beta, m0, False, False, L > 1, SK0, L == 1, NUDGE, COST, ACT, PREC)
    n2 = s2
    if L > 2:
        n2 = _layer(b2, s1, w2t, s3, w3, s2, t, beta, m2, True, SK1, L > 3, SK2, L == 3, NUDGE, COST, ACT, PREC)
    q0 = n0
    q2 = n2
    if SYNC:
        q0 = s0
        q2 = s2
    n1 = s1
    if L > 1:
        n1 = _layer(b1, q0, w1t, q2, w2, s1, t, beta, m1, True, SK0, L > 2, SK1, L == 2, NUDGE, COST, ACT, PREC)
    n3 = s3
    if L > 3:
        n3 = _layer(b3, q2, w3t, s3, w3, s3, t, beta, m3, True, SK2, False, False, True, NUDGE, COST, ACT, PREC)
    return n0, n1, n2, n3


@triton.jit
def _load_w(wp, k: tl.constexpr, P: tl.constexpr, L: tl.constexpr):
    """(W_k, W_k^T) of the stacked padded weights (zeros when the layer does not exist)."""
    r = tl.arange(0, P)
    if k < L:
        base = wp + (k - 1) * P * P
        w = tl.load(base + r[:, None] * P + r[None, :])
        wt = tl.load(base + r[None, :] * P + r[:, None])
    else:
        w = tl.zeros((P, P), dtype=tl.float32)
        wt = tl.zeros((P, P), dtype=tl.float32)
    return w, wt


@triton.jit
def _settle_kernel(s_ptr, d_ptr, t_ptr, w_ptr, b_ptr, res_ptr, B, steps, beta, n0, n1, n2, n3,
                   P: tl.constexpr, BLOCK_B: tl.constexpr, L: tl.constexpr, SYNC: tl.constexpr,
                   SK0: tl.constexpr, SK1: tl.constexpr, SK2: tl.constexpr, NUDGE: tl.constexpr,
                   COST: tl.constexpr, ACT: tl.constexpr, PREC: tl.constexpr, WREG: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.arange(0, P)
    rmask = rows < B
    off = rows[:, None] * P + cols[None, :]
    lmask = rmask[:, None] & (cols[None, :] < P)
    layer = B * P
    m0 = (cols < n0).to(tl.float32)[None, :]
    m1 = (cols < n1).to(tl.float32)[None, :]
    m2 = (cols < n2).to(tl.float32)[None, :]
    m3 = (cols < n3).to(tl.float32)[None, :]
    d = tl.load(d_ptr + off, mask=lmask, other=0.0)
    t = tl.load(t_ptr + off, mask=lmask, other=0.0)
    b1 = tl.load(b_ptr + 1 * P + cols)[None, :]
    b2 = tl.load(b_ptr + 2 * P + cols)[None, :]
    b3 = tl.load(b_ptr + 3 * P + cols)[None, :]
    s0 = tl.load(s_ptr + off, mask=lmask, other=0.0)
    s1 = tl.zeros((BLOCK_B, P), dtype=tl.float32)
    s2 = tl.zeros((BLOCK_B, P), dtype=tl.float32)
    s3 = tl.zeros((BLOCK_B, P), dtype=tl.float32)
    if L > 1:
        s1 = tl.load(s_ptr + layer + off, mask=lmask, other=0.0)
    if L > 2:
        s2 = tl.load(s_ptr + 2 * layer + off, mask=lmask, other=0.0)
    if L > 3:
        s3 = tl.load(s_ptr + 3 * layer + off, mask=lmask, other=0.0)
    if WREG:
        w1, w1t = _load_w(w_ptr, 1, P, L)
        w2, w2t = _load_w(w_ptr, 2, P, L)
        w3, w3t = _load_w(w_ptr, 3, P, L)
    for _ in range(steps - 1):
        if not WREG:
            w1, w1t = _load_w(w_ptr, 1, P, L)
            w2, w2t = _load_w(w_ptr, 2, P, L)
            w3, w3t = _load_w(w_ptr, 3, P, L)
        s0, s1, s2, s3 = _sweep(s0, s1, s2, s3, d, t, b1, b2, b3, w1, w1t, w2, w2t, w3, w3t, beta,
                                m0, m1, m2, m3, L, SYNC, SK0, SK1, SK2, NUDGE, COST, ACT, PREC)
    if not WREG:
        w1, w1t = _load_w(w_ptr, 1, P, L)
        w2, w2t = _load_w(w_ptr, 2, P, L)
        w3, w3t = _load_w(w_ptr, 3, P, L)
    n0, n1, n2, n3 = _sweep(s0, s1, s2, s3, d, t, b1, b2, b3, w1, w1t, w2, w2t, w3, w3t, beta,
                            m0, m1, m2, m3, L, SYNC, SK0, SK1, SK2, NUDGE, COST, ACT, PREC)
    rm = rmask[:, None].to(tl.float32)
    r = tl.max(tl.max(tl.abs(n0 - s0) * rm, axis=1), axis=0)
    tl.store(s_ptr + off, n0, mask=lmask)
    if L > 1:
        r = tl.maximum(r, tl.max(tl.max(tl.abs(n1 - s1) * rm, axis=1), axis=0))
        tl.store(s_ptr + layer + off, n1, mask=lmask)
    if L > 2:
        r = tl.maximum(r, tl.max(tl.max(tl.abs(n2 - s2) * rm, axis=1), axis=0))
        tl.store(s_ptr + 2 * layer + off, n2, mask=lmask)
    if L > 3:
        r = tl.maximum(r, tl.max(tl.max(tl.abs(n3 - s3) * rm, axis=1), axis=0))
        tl.store(s_ptr + 3 * layer + off, n3, mask=lmask)
    tl.store(res_ptr + pid, r)


def _pad_width(widths: list[int]) -> int:
    return max(16, triton.next_power_of_2(max(widths)))


def persistent_settle(drive: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor],
                      skips: list[bool], states: list[torch.Tensor], beta: float, cost: str,
                      target: torch.Tensor | None, steps: int, update: str, activation: str,
                      precision: str = "fp32", block_b: int = 16,
                      num_warps: int = 4) -> tuple[list[torch.Tensor], float]:
    """One phase in one launch. `drive` = W_0 x + b_0 (batch, n_1); `weights`/`biases` = W_1.. / b_1..
    of the state-to-state layers (W_k: (n_{k+1}, n_k)); `states` the start (fp32). Returns the states
    (fp32, unpadded) and the residual of the last sweep."""
    widths = [s.shape[1] for s in states]
    if not fits(widths):
        raise ValueError(f"persistent kernel: {len(widths)} state layers of widths {widths}; "
                         f"allowed 1..{MAX_LAYERS} layers <= {MAX_WIDTH} wide")
    L = len(widths)
    B = drive.shape[0]
    P = _pad_width(widths)
    dev = drive.device
    wdtype = torch.float32   # cast to bf16 in registers (PREC 2): one weight buffer for all precisions
    S = torch.zeros(L, B, P, device=dev, dtype=torch.float32)
    for k, s in enumerate(states):
        S[k, :, : widths[k]] = s.float()
    D = torch.zeros(B, P, device=dev, dtype=torch.float32)
    D[:, : widths[0]] = drive.float()
    T = torch.zeros(B, P, device=dev, dtype=torch.float32)
    if target is not None:
        T[:, : widths[-1]] = target.float()
    W = torch.zeros(max(L - 1, 1), P, P, device=dev, dtype=wdtype)
    for k, w in enumerate(weights):
        W[k, : w.shape[0], : w.shape[1]] = w.to(wdtype)
    Bs = torch.zeros(MAX_LAYERS, P, device=dev, dtype=torch.float32)
    for k, b in enumerate(biases, start=1):
        Bs[k, : b.shape[0]] = b.float()
    grid = (triton.cdiv(B, block_b),)
    res = torch.zeros(grid[0], device=dev, dtype=torch.float32)
    sk = list(skips) + [False] * MAX_LAYERS
    n = widths + [0] * (MAX_LAYERS - L)
    _settle_kernel[grid](S, D, T, W, Bs, res, B, steps, float(beta), n[0], n[1], n[2], n[3],
                         P=P, BLOCK_B=block_b, L=L, SYNC=update == "sync", SK0=sk[0], SK1=sk[1], SK2=sk[2],
                         NUDGE=beta != 0, COST=COST_CODE[cost], ACT=ACT_CODE[activation],
                         PREC=prec_code(precision), WREG=(L - 1) * P * P <= WREG_LIMIT, num_warps=num_warps)
    return [S[k, :, : widths[k]] for k in range(L)], float(res.max())
