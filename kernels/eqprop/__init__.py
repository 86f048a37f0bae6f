"""EqProp settling kernels (no actors, no Ray): persistent Triton, fused Triton + CUDA graph, CuPy twin.

`settle_kernel(kind, ...)` is the one entry point the engine (actors/trainer/eqprop/settle.py) calls; it
is filled in by kernels/eqprop/dispatch.py.
"""
from __future__ import annotations

from typing import Any

__all__ = ["settle_kernel"]


def settle_kernel(kind: str, *args: Any, **kwargs: Any) -> Any:
    """Run one settling phase with the `kind` backend ("triton" | "cupy"); see dispatch.py."""
    from kernels.eqprop.dispatch import settle_kernel as run

    return run(kind, *args, **kwargs)
