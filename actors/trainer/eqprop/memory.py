"""Peak extra memory of a call, counted on the CPU from the tensors torch allocates (no CUDA needed).

`peak_tensor_bytes(fn)` runs fn() under a TorchDispatchMode that adds the storage bytes of every tensor
an op returns (first sighting of a storage) and subtracts them when that tensor object is freed, and
under saved_tensors_hooks whose pack keeps the saved tensor object itself: a tensor autograd saves for
backward stays counted as long as the graph holds it. The peak of that running sum is the extra memory
the call needed on top of what existed before (inputs and parameters are not counted). It measures
what a CUDA caching allocator's max_memory_allocated would see, minus allocator rounding, and lets the
CPU tests check that EP's memory is flat in the number of settling steps while BPTT's grows.
"""
from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["peak_tensor_bytes"]


class _Counter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self.seen: dict[int, int] = {}

    def _free(self, key: int) -> None:
        self.live -= self.seen.pop(key, 0)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                st = t.untyped_storage()
                key, n = st.data_ptr(), st.nbytes()
                if n == 0 or key in self.seen:
                    continue
                self.seen[key] = n
                self.live += n
                self.peak = max(self.peak, self.live)
                weakref.finalize(t, self._free, key)
        return out


def peak_tensor_bytes(fn: Callable[[], Any]) -> tuple[int, Any]:
    """(peak extra tensor bytes while fn() ran, fn's result)."""
    counter = _Counter()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t), counter:
        out = fn()
    return counter.peak, out
