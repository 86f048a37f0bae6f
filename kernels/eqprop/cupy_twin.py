"""CuPy RawKernel twin of the fused settling step (fp32, CUDA only).

The same layer update as fused.py — out = act(base|bias + s_{k-1} W_k^T (+ s_{k-1}) + s_{k+1} W_{k+1}
(+ s_{k+1}) - beta nudge) — written as a 16x16 shared-memory tiled CUDA C kernel compiled by NVRTC
through cupy.RawKernel (the toolkit found by cuda_path.py). The "ce" nudge's row softmax is a second
small kernel (one thread per row). The step loop runs in Python, launches on torch's current stream
(cupy.cuda.ExternalStream), and the tensors are shared zero-copy (__cuda_array_interface__). It is an
independent implementation to check the Triton kernels against, and a baseline in jobs.bench.eqprop.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import torch

__all__ = ["SOURCE", "cupy_settle"]

SOURCE = r"""
#define TILE 16
__device__ __forceinline__ float act_f(float z, int act) {
    if (act == 0) return fminf(fmaxf(z / 6.0f + 0.5f, 0.0f), 1.0f);
    if (act == 1) return 1.0f / (1.0f + expf(-z));
    return tanhf(z);
}

extern "C" __global__ void ce_grad(float* g, const float* own, const float* t, int M, int N) {
    int row = blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= M) return;
    const float* o = own + (long)row * N;
    float mx = -3.0e38f;
    for (int j = 0; j < N; ++j) mx = fmaxf(mx, o[j]);
    float s = 0.0f;
    for (int j = 0; j < N; ++j) s += expf(o[j] - mx);
    for (int j = 0; j < N; ++j) g[(long)row * N + j] = expf(o[j] - mx) / s - t[(long)row * N + j];
}

extern "C" __global__ void ep_layer(float* out, const float* base, const float* bias, int has_base,
                                    const float* a1, const float* w1, int K1, int has_a1, int skip1,
                                    const float* a2, const float* w2, int K2, int has_a2, int skip2,
                                    const float* own, const float* t, const float* g, int nudge, float beta,
                                    int act, int M, int N) {
    __shared__ float As[TILE][TILE];
    __shared__ float Bs[TILE][TILE];
    int tx = threadIdx.x, ty = threadIdx.y;
    int row = blockIdx.y * TILE + ty, col = blockIdx.x * TILE + tx;
    float acc = 0.0f;
    if (has_a1) {
        for (int k0 = 0; k0 < K1; k0 += TILE) {
            int ka = k0 + tx, kb = k0 + ty;
            As[ty][tx] = (row < M && ka < K1) ? a1[(long)row * K1 + ka] : 0.0f;
            Bs[ty][tx] = (kb < K1 && col < N) ? w1[(long)col * K1 + kb] : 0.0f;   /* W_k^T */
            __syncthreads();
            for (int j = 0; j < TILE; ++j) acc += As[ty][j] * Bs[j][tx];
            __syncthreads();
        }
    }
    if (has_a2) {
        for (int k0 = 0; k0 < K2; k0 += TILE) {
            int ka = k0 + tx, kb = k0 + ty;
            As[ty][tx] = (row < M && ka < K2) ? a2[(long)row * K2 + ka] : 0.0f;
            Bs[ty][tx] = (kb < K2 && col < N) ? w2[(long)kb * N + col] : 0.0f;    /* W_{k+1} */
            __syncthreads();
            for (int j = 0; j < TILE; ++j) acc += As[ty][j] * Bs[j][tx];
            __syncthreads();
        }
    }
    if (row >= M || col >= N) return;
    long o = (long)row * N + col;
    acc += has_base ? base[o] : bias[col];
    if (skip1) acc += a1[(long)row * K1 + col];
    if (skip2) acc += a2[(long)row * K2 + col];
    if (nudge == 2) acc -= beta * (own[o] - t[o]);
    else if (nudge == 3) acc -= beta * g[o];
    out[o] = act_f(acc, act);
}
"""

ACT_CODE = {"hardsigmoid": 0, "sigmoid": 1, "tanh": 2}


@lru_cache(maxsize=1)
def _kernels() -> tuple[Any, Any]:
    from kernels.eqprop.cuda_path import CudaNotFound, ensure_cuda_path

    try:
        ensure_cuda_path()
    except CudaNotFound:   # CuPy has its own search (e.g. its wheel's NVRTC): let it try, and fail with its error
        pass
    import cupy

    mod = cupy.RawModule(code=SOURCE, options=("--std=c++14",))
    return mod.get_function("ep_layer"), mod.get_function("ce_grad")


def cupy_settle(drive: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor], skips: list[bool],
                states: list[torch.Tensor], beta: float, cost: str, target: torch.Tensor | None, steps: int,
                update: str, activation: str) -> tuple[list[torch.Tensor], torch.Tensor]:
    """One phase (fp32) with the RawKernel twin; same arguments and result as fused.fused_settle."""
    import cupy

    layer_k, ce_k = _kernels()
    dev = drive.device
    w = [x.float().contiguous() for x in weights]
    b = [x.float().contiguous() for x in biases]
    drive = drive.float().contiguous()
    widths = [s.shape[1] for s in states]
    L, M = len(widths), drive.shape[0]
    tgt = target.float().contiguous() if target is not None else torch.zeros(M, widths[-1], device=dev)
    g = torch.empty(M, widths[-1], device=dev)
    nudge = 0 if beta == 0 else (2 if cost == "mse" else 3)
    cur = [s.float().contiguous().clone() for s in states]
    nxt = [torch.empty_like(s) for s in cur]
    i32, f32 = np.int32, np.float32
    arr = cupy.asarray

    def layer(k: int, src: list[torch.Tensor], dst: torch.Tensor) -> None:
        last = k == L - 1
        nk = nudge if last else 0
        if nk == 3:
            ce_k(((M + 127) // 128,), (128,), (arr(g), arr(src[k]), arr(tgt), i32(M), i32(widths[-1])))
        a1 = src[k - 1] if k > 0 else dst
        w1 = w[k - 1] if k > 0 else dst
        a2 = src[k + 1] if not last else dst
        w2 = w[k] if not last else dst
        N = widths[k]
        grid = ((N + 15) // 16, (M + 15) // 16)
        layer_k(grid, (16, 16), (
            arr(dst), arr(drive), arr(b[k - 1] if k > 0 else drive), i32(k == 0),
            arr(a1), arr(w1), i32(a1.shape[1]), i32(k > 0), i32(k > 0 and skips[k - 1]),
            arr(a2), arr(w2), i32(a2.shape[1]), i32(not last), i32((not last) and skips[k]),
            arr(src[k]), arr(tgt), arr(g), i32(nk), f32(beta), i32(ACT_CODE[activation]), i32(M), i32(N)))

    with cupy.cuda.ExternalStream(torch.cuda.current_stream(dev).cuda_stream):
        prev = cur
        for step in range(steps):
            if update == "sync":
                for k in range(L):
                    layer(k, cur, nxt[k])
                prev, cur, nxt = cur, nxt, cur
            else:
                if step == steps - 1:
                    prev = [s.clone() for s in cur]
                for parity in (0, 1):
                    for k in range(parity, L, 2):
                        layer(k, cur, nxt[k])
                        cur[k].copy_(nxt[k])
    return cur, torch.stack([(a - p).abs().max() for a, p in zip(cur, prev)]).max()
