"""Persistent Triton settling kernels: every step of one phase in one launch (state layers <= 256 wide).

Three variants (prepare(..., variant=None) picks onchip when every padded layer is <= 128 wide, resident
(resident.py) above that, chunked where resident does not fit):
- onchip: described below; states in registers, whole weight tiles as dot operands.
- chunked: the states of a program's rows in a double-buffered global scratch (only that program
  touches them, so they stay in L1/L2), each matmul in K-chunks of 64 (BLOCK_B x 64 and 64 x P
  operands: fits shared memory at P = 256, where a whole 256 x 256 fp32 operand, 256 KiB, does not),
  a barrier between the parity groups (evenodd) and after each sweep.

The onchip variant:
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
"fp32": 3xTF32, fp32-accurate products on the tensor cores). After steps-1 sweeps in a device loop, the last sweep writes the states and
the program's largest unit change (the residual) to `res`. Runs on CUDA, and on the CPU under
TRITON_INTERPRET=1 (slowly; the tests compare it with the torch settle there).
"""
from __future__ import annotations

import os
from collections.abc import Callable

import torch
import triton
import triton.language as tl
from triton.runtime.errors import OutOfResources

__all__ = ["MAX_LAYERS", "MAX_WIDTH", "fits", "persistent_settle", "prepare"]

MAX_WIDTH = 256
MAX_LAYERS = 4
WREG_LIMIT = 128 * 128
ONCHIP_MAX = 128     # widest (padded) layer of the onchip variant: a 128 x 128 fp32 dot operand is 64 KiB of smem
CHUNK_K = 64         # K-chunk of the chunked variant's matmuls
ACT_CODE = {"hardsigmoid": 0, "sigmoid": 1, "tanh": 2}
COST_CODE = {"ce": 0, "mse": 1}
PREC_CODE = {"fp32": 0, "tf32": 1, "bf16": 2}


def prec_code(precision: str) -> int:
    """The kernels' PREC constexpr: bf16 is emulated exactly (bf16-rounded operands, fp32 dot) under
    TRITON_INTERPRET=1, whose bf16 tl.dot returns garbage (triton 3.9)."""
    if precision == "bf16" and os.environ.get("TRITON_INTERPRET") == "1":
        return 3
    return PREC_CODE[precision]


def default_warps(p: int) -> int:
    """8 warps from P = 128 up: with 4, ptxas (sm_90, triton 3.9) spilled ~1 KiB per thread at 255
    registers in both variants; 8 cut that to ~136 bytes (bf16)."""
    return 8 if p >= 128 else 4


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
    else:   # fp32: 3xTF32 on the tensor cores (~fp32 accuracy; an IEEE FMA dot compiles for minutes at P = 256)
        return tl.dot(a, w.to(tl.float32), input_precision="tf32x3")


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
def _sweep(s0, s1, s2, s3, d, t, b1, b2, b3, w1, w2, w3, beta, m0, m1, m2, m3,
           L: tl.constexpr, SYNC: tl.constexpr, SK0: tl.constexpr, SK1: tl.constexpr, SK2: tl.constexpr,
           NUDGE: tl.constexpr, COST: tl.constexpr, ACT: tl.constexpr, PREC: tl.constexpr):
    """One sweep; W_k^T is tl.trans(W_k) (a layout change on chip, no second load)."""
    n0 = _layer(d, s0, w1, s1, w1, s0, t, beta, m0, False, False, L > 1, SK0, L == 1, NUDGE, COST, ACT, PREC)
    n2 = s2
    if L > 2:
        n2 = _layer(b2, s1, tl.trans(w2), s3, w3, s2, t, beta, m2, True, SK1, L > 3, SK2, L == 3, NUDGE, COST,
                    ACT, PREC)
    q0 = n0
    q2 = n2
    if SYNC:
        q0 = s0
        q2 = s2
    n1 = s1
    if L > 1:
        n1 = _layer(b1, q0, tl.trans(w1), q2, w2, s1, t, beta, m1, True, SK0, L > 2, SK1, L == 2, NUDGE, COST,
                    ACT, PREC)
    n3 = s3
    if L > 3:
        n3 = _layer(b3, q2, tl.trans(w3), s3, w3, s3, t, beta, m3, True, SK2, False, False, True, NUDGE, COST,
                    ACT, PREC)
    return n0, n1, n2, n3


@triton.jit
def _load_w(wp, k: tl.constexpr, PO: tl.constexpr, PI: tl.constexpr, L: tl.constexpr):
    """W_k padded to (P_k, P_{k-1}) (a 16 x 16 zero tile when the layer does not exist)."""
    if k < L:
        w = tl.load(wp + tl.arange(0, PO)[:, None] * PI + tl.arange(0, PI)[None, :])
    else:
        w = tl.zeros((16, 16), dtype=tl.float32)
    return w


@triton.jit
def _load_s(sp, rows, rmask, P: tl.constexpr, k: tl.constexpr, L: tl.constexpr, BLOCK_B: tl.constexpr):
    if k < L:
        cols = tl.arange(0, P)
        s = tl.load(sp + rows[:, None] * P + cols[None, :], mask=rmask[:, None] & (cols[None, :] < P), other=0.0)
    else:
        s = tl.zeros((BLOCK_B, 16), dtype=tl.float32)
    return s


@triton.jit
def _mask(n, P: tl.constexpr):
    return (tl.arange(0, P) < n).to(tl.float32)[None, :]


@triton.jit
def _store_s(sp, rows, rmask, new, old, r, P: tl.constexpr, k: tl.constexpr, L: tl.constexpr):
    """Store layer k's final state; fold its largest change (valid rows) into the residual r."""
    if k < L:
        cols = tl.arange(0, P)
        tl.store(sp + rows[:, None] * P + cols[None, :], new, mask=rmask[:, None] & (cols[None, :] < P))
        ch = tl.abs(new - old) * rmask[:, None].to(tl.float32)
        r = tl.maximum(r, tl.max(tl.max(ch, axis=1), axis=0))
    return r


@triton.jit
def _settle_kernel(s0p, s1p, s2p, s3p, d_ptr, t_ptr, w1p, w2p, w3p, b1p, b2p, b3p, res_ptr, B, steps, beta,
                   n0, n1, n2, n3, P0: tl.constexpr, P1: tl.constexpr, P2: tl.constexpr, P3: tl.constexpr,
                   PL: tl.constexpr, BLOCK_B: tl.constexpr, L: tl.constexpr, SYNC: tl.constexpr,
                   SK0: tl.constexpr, SK1: tl.constexpr, SK2: tl.constexpr, NUDGE: tl.constexpr,
                   COST: tl.constexpr, ACT: tl.constexpr, PREC: tl.constexpr, WREG: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    rmask = rows < B
    m0 = _mask(n0, P0)
    m1 = _mask(n1, P1)
    m2 = _mask(n2, P2)
    m3 = _mask(n3, P3)
    d = _load_s(d_ptr, rows, rmask, P0, 0, L, BLOCK_B)
    t = _load_s(t_ptr, rows, rmask, PL, 0, L, BLOCK_B)
    b1 = tl.load(b1p + tl.arange(0, P1))[None, :]
    b2 = tl.load(b2p + tl.arange(0, P2))[None, :]
    b3 = tl.load(b3p + tl.arange(0, P3))[None, :]
    s0 = _load_s(s0p, rows, rmask, P0, 0, L, BLOCK_B)
    s1 = _load_s(s1p, rows, rmask, P1, 1, L, BLOCK_B)
    s2 = _load_s(s2p, rows, rmask, P2, 2, L, BLOCK_B)
    s3 = _load_s(s3p, rows, rmask, P3, 3, L, BLOCK_B)
    if WREG:
        w1 = _load_w(w1p, 1, P1, P0, L)
        w2 = _load_w(w2p, 2, P2, P1, L)
        w3 = _load_w(w3p, 3, P3, P2, L)
    for _ in range(steps - 1):
        if not WREG:   # re-read from L2 at every step (too large to keep on chip)
            w1 = _load_w(w1p, 1, P1, P0, L)
            w2 = _load_w(w2p, 2, P2, P1, L)
            w3 = _load_w(w3p, 3, P3, P2, L)
        s0, s1, s2, s3 = _sweep(s0, s1, s2, s3, d, t, b1, b2, b3, w1, w2, w3, beta,
                                m0, m1, m2, m3, L, SYNC, SK0, SK1, SK2, NUDGE, COST, ACT, PREC)
    if not WREG:
        w1 = _load_w(w1p, 1, P1, P0, L)
        w2 = _load_w(w2p, 2, P2, P1, L)
        w3 = _load_w(w3p, 3, P3, P2, L)
    n0_, n1_, n2_, n3_ = _sweep(s0, s1, s2, s3, d, t, b1, b2, b3, w1, w2, w3, beta,
                                m0, m1, m2, m3, L, SYNC, SK0, SK1, SK2, NUDGE, COST, ACT, PREC)
    r = tl.max(tl.max(tl.zeros((BLOCK_B, 16), dtype=tl.float32), axis=1), axis=0)
    r = _store_s(s0p, rows, rmask, n0_, s0, r, P0, 0, L)
    r = _store_s(s1p, rows, rmask, n1_, s1, r, P1, 1, L)
    r = _store_s(s2p, rows, rmask, n2_, s2, r, P2, 2, L)
    r = _store_s(s3p, rows, rmask, n3_, s3, r, P3, 3, L)
    tl.store(res_ptr + pid, r)


# ---- the chunked variant: states in an L1/L2-resident scratch, matmuls in K-chunks ----------------

@triton.jit
def _chunk_dot(acc, sp, rows, rmask, wp, w_sn, w_sk, KP: tl.constexpr, NP: tl.constexpr, BK: tl.constexpr,
               BLOCK_B: tl.constexpr, PREC: tl.constexpr):
    """acc += S[rows, :KP] @ M with M[kk, n] = wp[n * w_sn + kk * w_sk], in K-chunks of BK (operands of
    BLOCK_B x BK and BK x NP: small enough for shared memory at NP = 256). The scratch states are read
    with .cg (L2, coherent with this program's own stores across the barrier; never a stale cache)."""
    n = tl.arange(0, NP)
    for kc in tl.static_range(0, KP, BK):
        kk = kc + tl.arange(0, BK)
        a = tl.load(sp + rows[:, None] * KP + kk[None, :], mask=rmask[:, None], other=0.0, cache_modifier=".cg")
        b = tl.load(wp + n[None, :] * w_sn + kk[:, None] * w_sk)
        acc += _mm(a, b, PREC)
    return acc


@triton.jit
def _chunk_layer(rows, rmask, cur_par, nxt_par, low_par, up_par, B, sp, lp, up, wl, wu, bp, d_ptr, t_ptr, beta, nk,
                 FIRST: tl.constexpr, LAST: tl.constexpr, P: tl.constexpr, PLW: tl.constexpr, PUP: tl.constexpr,
                 SKL: tl.constexpr, SKU: tl.constexpr, NUDGE: tl.constexpr, COST: tl.constexpr, ACT: tl.constexpr,
                 PREC: tl.constexpr, BKL: tl.constexpr, BKU: tl.constexpr, BLOCK_B: tl.constexpr):
    """Update one state layer (own scratch sp, P wide) of this program's rows: the lower neighbour
    (lp, PLW wide, weights wl = W_k (P, PLW)) from half low_par, the upper (up, PUP wide, wu = W_{k+1}
    (PUP, P)) from half up_par, its own old value (for the nudge) from cur_par; writes half nxt_par."""
    cols = tl.arange(0, P)
    tile = rows[:, None] * P + cols[None, :]
    m2 = rmask[:, None] & (cols[None, :] < P)
    if FIRST:
        acc = tl.load(d_ptr + tile, mask=m2, other=0.0)
    else:
        acc = tl.zeros((BLOCK_B, P), dtype=tl.float32) + tl.load(bp + cols)[None, :]
        acc = _chunk_dot(acc, lp + low_par * B * PLW, rows, rmask, wl, PLW, 1, PLW, P, BKL, BLOCK_B, PREC)
        if SKL:
            acc += tl.load(lp + low_par * B * PLW + tile, mask=m2, other=0.0, cache_modifier=".cg")
    if not LAST:
        acc = _chunk_dot(acc, up + up_par * B * PUP, rows, rmask, wu, 1, P, PUP, P, BKU, BLOCK_B, PREC)
        if SKU:
            acc += tl.load(up + up_par * B * PUP + tile, mask=m2, other=0.0, cache_modifier=".cg")
    m = (cols < nk).to(tl.float32)[None, :]
    if LAST:
        if NUDGE:
            own = tl.load(sp + cur_par * B * P + tile, mask=m2, other=0.0, cache_modifier=".cg")
            t = tl.load(t_ptr + tile, mask=m2, other=0.0)
            acc = acc - beta * _cost_grad(own, t, m, COST)
    tl.store(sp + nxt_par * B * P + tile, _act(acc, ACT) * m, mask=m2)


@triton.jit
def _settle_chunked(s0p, s1p, s2p, s3p, d_ptr, t_ptr, w1p, w2p, w3p, b1p, b2p, b3p, B, steps, beta,
                    n0, n1, n2, n3, P0: tl.constexpr, P1: tl.constexpr, P2: tl.constexpr, P3: tl.constexpr,
                    BLOCK_B: tl.constexpr, L: tl.constexpr, SYNC: tl.constexpr, SK0: tl.constexpr,
                    SK1: tl.constexpr, SK2: tl.constexpr, NUDGE: tl.constexpr, COST: tl.constexpr,
                    ACT: tl.constexpr, PREC: tl.constexpr, K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr,
                    K3: tl.constexpr):
    """All sweeps in one launch; the states of this program's rows live in a double-buffered scratch
    (s_kp[2, B, P_k], L1/L2-resident: only this program touches its rows), the matmuls run in K-chunks
    (K_k = the chunk over layer k's width). Sweep t reads half t % 2 and writes half (t + 1) % 2;
    evenodd layers 1, 3 read the fresh 0, 2 (written earlier in the same sweep)."""
    pid = tl.program_id(0)
    rows = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    rmask = rows < B
    for t in range(steps):
        cur = t % 2
        nxt = 1 - cur
        fresh = cur
        if not SYNC:
            fresh = nxt
        _chunk_layer(rows, rmask, cur, nxt, cur, cur, B, s0p, s0p, s1p, w1p, w1p, b1p, d_ptr, t_ptr, beta, n0,
                     True, L == 1, P0, P0, P1, False, SK0, NUDGE, COST, ACT, PREC, K0, K1, BLOCK_B)
        if L > 2:
            _chunk_layer(rows, rmask, cur, nxt, cur, cur, B, s2p, s1p, s3p, w2p, w3p, b2p, d_ptr, t_ptr, beta, n2,
                         False, L == 3, P2, P1, P3, SK1, SK2, NUDGE, COST, ACT, PREC, K1, K3, BLOCK_B)
        if not SYNC:
            tl.debug_barrier()   # layers 1, 3 read what other threads of this program just wrote
        if L > 1:
            _chunk_layer(rows, rmask, cur, nxt, fresh, fresh, B, s1p, s0p, s2p, w1p, w2p, b1p, d_ptr, t_ptr, beta, n1,
                         False, L == 2, P1, P0, P2, SK0, SK1, NUDGE, COST, ACT, PREC, K0, K2, BLOCK_B)
        if L > 3:
            _chunk_layer(rows, rmask, cur, nxt, fresh, fresh, B, s3p, s2p, s3p, w3p, w3p, b3p, d_ptr, t_ptr, beta, n3,
                         False, True, P3, P2, P3, SK2, False, NUDGE, COST, ACT, PREC, K2, K3, BLOCK_B)
        tl.debug_barrier()   # the next sweep reads this sweep's states


def _wdtype(precision: str) -> torch.dtype:
    """The weights' dtype in memory: bf16 for bf16 operands (half the L2 traffic of the per-sweep
    weight reads; the kernel would round them to bf16 anyway), else fp32."""
    return torch.bfloat16 if precision == "bf16" else torch.float32


def _pad(n: int) -> int:
    return max(16, triton.next_power_of_2(n))


def _prepare_chunked(drive: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor], skips: list[bool],
                     states: list[torch.Tensor], beta: float, cost: str, target: torch.Tensor | None, steps: int,
                     update: str, activation: str, precision: str, block_b: int,
                     num_warps: int, num_stages: int | None = None) -> tuple[Callable[[], None], Callable[[], tuple[list[torch.Tensor], torch.Tensor]]]:
    widths = [s.shape[1] for s in states]
    L = len(widths)
    B = drive.shape[0]
    P = [_pad(n) for n in widths] + [16] * (MAX_LAYERS - L)
    dev = drive.device
    f32 = torch.float32
    S = [torch.zeros(2, B if k < L else 1, P[k], device=dev, dtype=f32) for k in range(MAX_LAYERS)]
    start = [torch.zeros(B, P[k], device=dev, dtype=f32) for k in range(L)]
    for k in range(L):
        start[k][:, : widths[k]] = states[k]
    D = torch.zeros(B, P[0], device=dev, dtype=f32)
    D[:, : widths[0]] = drive
    T = torch.zeros(B, P[L - 1], device=dev, dtype=f32)
    if target is not None:
        T[:, : widths[-1]] = target
    W, Bs = [], []
    for k in range(1, MAX_LAYERS):
        w = torch.zeros(P[k], P[k - 1], device=dev, dtype=_wdtype(precision))
        b = torch.zeros(P[k], device=dev, dtype=f32)
        if k < L:
            w[: widths[k], : widths[k - 1]] = weights[k - 1]
            b[: widths[k]] = biases[k - 1]
        W.append(w)
        Bs.append(b)
    K = [min(P[k], CHUNK_K) for k in range(MAX_LAYERS)]
    sk = list(skips) + [False] * MAX_LAYERS
    n = widths + [0] * (MAX_LAYERS - L)
    grid = (triton.cdiv(B, block_b),)

    for k in range(L):
        S[k][0].copy_(start[k])

    def launch() -> None:
        _settle_chunked[grid](S[0], S[1], S[2], S[3], D, T, W[0], W[1], W[2], Bs[0], Bs[1], Bs[2], B, steps,
                              float(beta), n[0], n[1], n[2], n[3], P0=P[0], P1=P[1], P2=P[2], P3=P[3],
                              BLOCK_B=block_b, L=L, SYNC=update == "sync", SK0=sk[0], SK1=sk[1], SK2=sk[2],
                              NUDGE=beta != 0, COST=COST_CODE[cost], ACT=ACT_CODE[activation],
                              PREC=prec_code(precision), K0=K[0], K1=K[1], K2=K[2], K3=K[3], num_warps=num_warps,
                              **({} if num_stages is None else {"num_stages": num_stages}))

    def collect() -> tuple[list[torch.Tensor], torch.Tensor]:
        new = [S[k][steps % 2, :, : widths[k]] for k in range(L)]
        old = [S[k][(steps - 1) % 2, :, : widths[k]] for k in range(L)]
        return [t.clone() for t in new], torch.stack([(a - b).abs().max() for a, b in zip(new, old)]).max()

    return launch, collect


def persistent_settle(drive: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor],
                      skips: list[bool], states: list[torch.Tensor], beta: float, cost: str,
                      target: torch.Tensor | None, steps: int, update: str, activation: str,
                      precision: str = "fp32", block_b: int | None = None, num_warps: int | None = None,
                      variant: str | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
    """One phase in one launch. `drive` = W_0 x + b_0 (batch, n_1); `weights`/`biases` = W_1.. / b_1..
    of the state-to-state layers (W_k: (n_{k+1}, n_k)); `states` the start (fp32). Each state layer is
    padded to its own power of two >= 16. Returns the states (fp32, unpadded) and the residual of the
    last sweep."""
    launch, collect = prepare(drive, weights, biases, skips, states, beta, cost, target, steps, update, activation,
                              precision, block_b, num_warps, variant)
    try:
        launch()
    except OutOfResources:
        if variant is not None:
            raise
        # the default variant's operands did not fit this GPU's shared memory / registers: the chunked one does
        launch, collect = prepare(drive, weights, biases, skips, states, beta, cost, target, steps, update, activation,
                                  precision, block_b, num_warps, "chunked")
        launch()
    return collect()


def prepare(drive: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor], skips: list[bool],
            states: list[torch.Tensor], beta: float, cost: str, target: torch.Tensor | None, steps: int, update: str,
            activation: str, precision: str = "fp32", block_b: int | None = None,
            num_warps: int | None = None, variant: str | None = None,
            num_stages: int | None = None) -> tuple[Callable[[], None],
                                                    Callable[[], tuple[list[torch.Tensor], torch.Tensor]]]:
    """(launch, collect): the padded buffers made once; launch() runs the kernel on them (what the
    benchmark times as kernel time; a repeated launch continues from where the last one left the
    buffers: the same work, other numbers), collect() returns (states, residual) after one launch.
    `variant`: "onchip" (states in registers, whole weight tiles as dot operands; the default when every
    padded layer is <= ONCHIP_MAX; asked for explicitly it compiles up to 256 for bf16 operands, 160 KiB
    of shared memory, and raises OutOfResources at launch where it does not fit) or "chunked" (states in
    a scratch, K-chunked matmuls: any layer <= 256) or "resident" (resident.py: transposed states, the
    weights as the wgmma's shared-memory operand loaded once per launch; bf16 at 256, any precision at <= 128);
    None picks onchip up to ONCHIP_MAX and resident above it. `num_stages` (the software-pipelining depth) only for chunked / resident."""
    widths = [s.shape[1] for s in states]
    if not fits(widths):
        raise ValueError(f"persistent kernel: {len(widths)} state layers of widths {widths}; "
                         f"allowed 1..{MAX_LAYERS} layers <= {MAX_WIDTH} wide")
    L = len(widths)
    B = drive.shape[0]
    P = [_pad(n) for n in widths] + [16] * (MAX_LAYERS - L)
    dev = drive.device
    f32 = torch.float32

    def padded(t: torch.Tensor | None, rows: int, cols: int, dtype: torch.dtype = f32,
               read_only: bool = True) -> torch.Tensor:
        if read_only and t is not None and tuple(t.shape) == (rows, cols) and t.dtype == dtype and t.is_contiguous():
            return t   # already the padded shape (widths that are powers of two): no copy for what is only read
        out = torch.zeros(rows, cols, device=dev, dtype=dtype)
        if t is not None:
            out[: t.shape[0], : t.shape[1]] = t
        return out

    # the states are written in place: always copies (the caller's start states are reused, e.g. the free
    # fixed point that starts both nudged phases)
    S = [padded(states[k] if k < L else None, B if k < L else 1, P[k], read_only=False) for k in range(MAX_LAYERS)]
    D = padded(drive, B, P[0])
    T = padded(target, B, P[L - 1])
    W = [padded(weights[k - 1] if k < L else None, P[k], P[k - 1], _wdtype(precision)) for k in range(1, MAX_LAYERS)]
    Bs = [padded(biases[k - 1][None, :] if k < L else None, 1, P[k]) for k in range(1, MAX_LAYERS)]
    wsize = sum(P[k] * P[k - 1] for k in range(1, L))
    if variant is None:   # EQPROP_TRITON_VARIANT (onchip | chunked | resident) overrides the width rule (benchmarks)
        # 129-256: resident (H200, 2026-12-03: 0.121 ms vs chunked 0.346 ms at H 256, batch 1024, 30 sweeps bf16;
        # MNIST-5k epoch 240 vs 333 ms); where it does not fit, persistent_settle falls back to chunked
        variant = os.environ.get("EQPROP_TRITON_VARIANT") or ("onchip" if max(P) <= ONCHIP_MAX else "resident")
    if variant not in ("onchip", "chunked", "resident"):
        raise ValueError(f"variant {variant!r}; allowed onchip, chunked, resident")
    if variant == "resident":   # weights resident in shared memory, transposed states (resident.py)
        from kernels.eqprop.resident import prepare_resident

        return prepare_resident(drive, weights, biases, skips, states, beta, cost, target, steps, update, activation,
                                precision, block_b or 16, num_warps or default_warps(max(P)), num_stages)
    if variant == "chunked":
        return _prepare_chunked(drive, weights, biases, skips, states, beta, cost, target, steps, update, activation,
                                precision, block_b or 16, num_warps or default_warps(max(P)), num_stages)
    if block_b is None:
        block_b = 16 if max(P) >= 128 or B <= 4096 else 32
    if num_warps is None:
        num_warps = default_warps(max(P))
    grid = (triton.cdiv(B, block_b),)
    res = torch.zeros(grid[0], device=dev, dtype=f32)
    sk = list(skips) + [False] * MAX_LAYERS
    n = widths + [0] * (MAX_LAYERS - L)
    def launch() -> None:
        _settle_kernel[grid](S[0], S[1], S[2], S[3], D, T, W[0], W[1], W[2], Bs[0], Bs[1], Bs[2], res, B, steps,
                             float(beta), n[0], n[1], n[2], n[3], P0=P[0], P1=P[1], P2=P[2], P3=P[3], PL=P[L - 1],
                             BLOCK_B=block_b, L=L, SYNC=update == "sync", SK0=sk[0], SK1=sk[1], SK2=sk[2],
                             NUDGE=beta != 0, COST=COST_CODE[cost], ACT=ACT_CODE[activation],
                             PREC=prec_code(precision), WREG=wsize <= WREG_LIMIT, num_warps=num_warps,
                             **({} if num_stages is None else {"num_stages": num_stages}))

    def collect() -> tuple[list[torch.Tensor], torch.Tensor]:
        return [S[k][:, : widths[k]] for k in range(L)], res.max()

    return launch, collect
