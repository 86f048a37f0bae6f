"""Batched KSG conditional MI: the problem layout shared by the torch twin and the Triton kernel.

One launch estimates many I(X; Y | Z) on the same number of rows n, e.g. every (source, target)
pair of a network at every delay, observed and surrogate: item b uses the source block
x[src_b] with its rows reordered by perms[perm_b] (a surrogate; the identity for the observed
value) and the destination blocks y[dst_b], z[dst_b]. Destination blocks are stored once per
target and shared by all its sources; surrogate reorderings are index arrays gathered inside the
kernel, so no permuted copy of any block is ever written.

Semantics are JIDT's, exactly those of kernels/te/reference.py (max norm, Theiler window
|i - j| <= theiler excluded, algorithm 1: counts strictly closer than the joint k-th neighbour
distance eps_i; algorithm 2: <= per-subspace radii of the k joint neighbours, ties broken by row
index as a stable sort). Distances are computed in the blocks' dtype; the local values
psi(k) - psi(n_xz + 1) - psi(n_yz + 1) + psi(n_z + 1) (or algorithm 2's) are summed in float64.

Precision (float32 blocks): a distance within ~1 ulp (6e-8 relative) of eps_i can compare
differently than in float64 and flip one count by one; each flip moves one local value by
~1/n_count, and the mean by that over n. Measured against the float64 cKDTree path on continuous
data: |dTE| <= 4.2e-5 nats (jobs.bench.te, T = 1e3 and 1e4, H100); the tests assert < 1e-4. The 1e-8 tie-breaking noise is below float32 resolution of z-scored data,
so integer-valued (tied) data keeps its ties in float32: use the float64 path for such data.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class KSGBatch:
    """Blocks on one device, one dtype; item b = (source block, destination block, row order)."""

    x: torch.Tensor       # [P, n, dx] source-past blocks
    y: torch.Tensor       # [G, n, dy] destination-next blocks
    z: torch.Tensor       # [G, n, dz] destination-past (+ conditioning) blocks; dz may be 0
    perms: torch.Tensor   # [Q, n] int row orders applied to the source rows
    items: torch.Tensor   # [B, 3] int (src, dst, perm)

    @property
    def n(self) -> int:
        return int(self.y.shape[1])

    @property
    def has_z(self) -> bool:
        return int(self.z.shape[2]) > 0

    def check(self, k: int, theiler: int, algorithm: int) -> None:
        """Raise ValueError on inconsistent shapes or a k with too few rows outside the window."""
        n = self.n
        if self.x.shape[1] != n or self.z.shape[1] != n or self.perms.shape[1] != n:
            raise ValueError(f"blocks must all have n={n} rows: x {tuple(self.x.shape)}, "
                             f"z {tuple(self.z.shape)}, perms {tuple(self.perms.shape)}")
        if self.y.shape[0] != self.z.shape[0]:
            raise ValueError("y and z must hold the same number of destination blocks")
        if self.items.ndim != 2 or self.items.shape[1] != 3:
            raise ValueError(f"items must be [B, 3] (src, dst, perm), got {tuple(self.items.shape)}")
        if not 1 <= k < n - 2 * theiler:
            raise ValueError(f"k must satisfy 1 <= k < n - 2*theiler = {n - 2 * theiler}, got {k}")
        if algorithm not in (1, 2):
            raise ValueError(f"algorithm must be 1 or 2, got {algorithm}")


@dataclass(frozen=True)
class BatchResult:
    """Per item: the estimate (float64 nats) and, when asked for, eps and the integer counts per row."""

    te: torch.Tensor                  # [B] float64, mean local value
    eps: torch.Tensor | None = None   # [B, n] (algorithm 1) or [B, n, 3] (algorithm 2)
    n_xz: torch.Tensor | None = None  # [B, n]
    n_yz: torch.Tensor | None = None
    n_z: torch.Tensor | None = None


def make_batch(x, y, z, perms=None, items=None, *, device="cpu", dtype=torch.float64) -> KSGBatch:
    """A KSGBatch from array-likes; one item (0, 0, 0) and the identity order when not given."""
    def block(a):
        t = torch.as_tensor(a, dtype=dtype, device=device)
        t = t.reshape(t.shape[0], -1) if t.ndim == 1 else t
        return (t[None] if t.ndim == 2 else t).contiguous()

    xb, yb = block(x), block(y)
    n = yb.shape[1]
    zb = torch.zeros((yb.shape[0], n, 0), dtype=dtype, device=device) if z is None else block(z)
    if perms is None:
        perms = torch.arange(n, device=device)[None]
    perms = torch.as_tensor(perms, device=device).to(torch.int32).contiguous()
    if items is None:
        items = torch.zeros((1, 3), dtype=torch.int32, device=device)
    items = torch.as_tensor(items, device=device).to(torch.int32).contiguous()
    return KSGBatch(x=xb, y=yb, z=zb, perms=perms, items=items)


def digamma_table(n: int, device) -> torch.Tensor:
    """psi(c) for c = 0..n+1 in float64 (psi(0) = -inf is never read), indexed by a count."""
    c = torch.arange(n + 2, dtype=torch.float64, device=device)
    return torch.special.digamma(c)


def local_values(n_xz: torch.Tensor, n_yz: torch.Tensor, n_z: torch.Tensor, *, k: int, algorithm: int,
                 has_z: bool, psi: torch.Tensor) -> torch.Tensor:
    """Float64 local KSG values from integer counts (JIDT's algorithm 1 or 2 formula)."""
    nxz, nyz, nz = (c.long() for c in (n_xz, n_yz, n_z))
    psi_k = float(psi[k])
    if algorithm == 1:
        return psi_k - psi[nxz + 1] - psi[nyz + 1] + psi[nz + 1]
    if has_z:
        return (psi_k - 2.0 / k + psi[nz] - psi[nxz] - psi[nyz]
                + 1.0 / nxz.double() + 1.0 / nyz.double())
    return psi_k - 1.0 / k + psi[nz] - psi[nxz] - psi[nyz]
