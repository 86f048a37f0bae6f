"""Backend dispatch of one settling phase (called by actors/trainer/eqprop/settle.py).

"triton": the persistent kernel (persistent.py) when every state layer is <= 256 wide and there are
<= 4 of them, else the fused matmul + activation + nudge kernel per layer with the step loop captured
in a CUDA graph (fused.py; on the CPU under TRITON_INTERPRET=1 the same kernels run without a graph).
"cupy": the RawKernel twin of the fused step (cupy_twin.py). All compute the input drive W_0 x + b_0
once in fp32 and return fp32 states cast to the input's dtype, with the residual of the last sweep.
"""
from __future__ import annotations

import torch

__all__ = ["settle_kernel"]


def settle_kernel(kind: str, x: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor],
                  skips: list[bool], states: list[torch.Tensor], beta: float, cost: str,
                  target: torch.Tensor | None, steps: int, update: str, activation: str,
                  precision: str = "fp32") -> tuple[list[torch.Tensor], torch.Tensor]:
    """One phase of `steps` sweeps with backend `kind` ("triton" | "triton_fused" | "cupy"): (states in
    x's dtype, the last sweep's largest unit change as a 0-d device tensor)."""
    widths = [s.shape[1] for s in states]
    drive = torch.nn.functional.linear(x.float(), weights[0].float(), biases[0].float())
    start = [s.float() for s in states]
    tgt = target.float() if target is not None else None
    if kind == "triton":
        from kernels.eqprop.persistent import fits, persistent_settle

        if fits(widths):
            out, res = persistent_settle(drive, weights[1:], biases[1:], skips, start, beta, cost, tgt, steps,
                                         update, activation, precision)
        else:
            kind = "triton_fused"
    if kind == "triton_fused":
        from kernels.eqprop.fused import fused_settle

        out, res = fused_settle(drive, weights[1:], biases[1:], skips, start, beta, cost, tgt, steps, update,
                                activation, precision)
    elif kind == "cupy":
        from kernels.eqprop.cupy_twin import cupy_settle

        out, res = cupy_settle(drive, weights[1:], biases[1:], skips, start, beta, cost, tgt, steps, update,
                               activation)
    elif kind != "triton":
        raise ValueError(f"unknown kernel backend {kind!r}; allowed triton, triton_fused, cupy")
    return [s.to(x.dtype) for s in out], res
