"""Device backends of the TE engine: the torch twin and the fused Triton kernel (kernels/te/).

`backend` (TEParams) picks the KSG path: "cpu" = scipy cKDTree (actors/te/ksg.py, float64, exact),
"torch" = chunked dense distances on CUDA (float32) or the CPU (float64), "triton" = the fused
kernels on CUDA (float32; kernels/te/ksg_pruned.py for algorithm 1, ksg_triton.py otherwise), or on
the CPU under TRITON_INTERPRET=1 (float64), "auto" = triton when CUDA is present, else cpu. The device paths batch work: all surrogates and delays of a pair in one
launch, and for a network (`pairs_te_batched`) all pairs x delays x surrogates in few launches.

Network semantics on a device backend: each variable's embedded blocks are z-scored once and
noised once (one torch generator seeded by params.seed), so every target's destination blocks are
shared by all its sources (the cpu path noises each pair separately), and the S surrogate row orders are drawn
once (seeded by significance.seed) and shared by every pair, the surrogate rounds the
max-statistic correction assumes. Results therefore match the cpu backend exactly in everything
but the 1e-8 noise draw and the surrogate draw; with noise = 0 the observed TE values agree to the
float32 tolerance documented in kernels/te/batch.py.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from actors.common.budget import checkpoint
from actors.common.errors import InputError
from actors.te.config import NetworkConfig
from actors.te.embedding import MAX_RAW, check_observations, start_time
from actors.te.ksg import KSGResult
from actors.te.significance import p_value, surrogate_orders

_ITEMS_PER_LAUNCH = 1 << 22   # bounds the per-item buffers of one network chunk (~100 MB)


def resolve_backend(backend: str) -> str:
    """'cpu', 'torch' or 'triton' for a TEParams.backend value ('auto' -> triton on CUDA, else cpu)."""
    if backend == "cpu":
        return "cpu"
    import torch

    cuda = torch.cuda.is_available()
    if backend == "auto":
        return "triton" if cuda else "cpu"
    if backend == "triton" and not cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise InputError("backend", "'triton' needs a CUDA GPU (or TRITON_INTERPRET=1 on the CPU)",
                         "'cpu', 'torch', 'auto', or 'triton' on a machine with CUDA")
    if backend not in ("torch", "triton"):
        raise InputError("backend", f"unknown backend {backend!r}", "'auto', 'cpu', 'torch' or 'triton'")
    return backend


def network_backend(cfg: NetworkConfig, embeddings: dict | None = None) -> str:
    """The batched network path's backend, or 'cpu' (pair by pair) when Ragwitz gave per-variable
    embeddings (their blocks differ in width, so pairs cannot share a launch)."""
    return "cpu" if embeddings else resolve_backend(cfg.params.backend)


def device_and_dtype():
    """(torch device, dtype): CUDA in float32 for speed, the CPU in float64 (exact, for CI)."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda"), torch.float32
    return torch.device("cpu"), torch.float64


def run_batch(batch, *, k: int, theiler: int, algorithm: int, backend: str, store: bool, layout=None):
    """Dispatch a kernels.te.batch.KSGBatch to a Triton kernel (the pruned one for algorithm 1 with a
    conditioning block, reusing `layout` = its destinations sorted once per network; else brute force),
    or to the torch twin (also for k > 16, more neighbours than the kernels keep in registers)."""
    from kernels.te.ksg_triton import MAX_K

    if backend == "triton" and k <= MAX_K:
        from kernels.te.ksg_pruned import PreparedLaunch, prunable
        from kernels.te.ksg_triton import ksg_batch_triton

        if prunable(batch, k, algorithm):
            return PreparedLaunch(batch, k=k, theiler=theiler, store=store, layout=layout).result()
        return ksg_batch_triton(batch, k=k, theiler=theiler, algorithm=algorithm, store=store)
    from kernels.te.ksg_torch import ksg_batch_torch

    return ksg_batch_torch(batch, k=k, theiler=theiler, algorithm=algorithm, store=store)


def ksg_cmi_device(x: np.ndarray, y: np.ndarray, z: np.ndarray, *, k: int, theiler: int, algorithm: int,
                   backend: str) -> KSGResult:
    """ksg_cmi on a device backend: the same KSGResult (local values rebuilt in float64 from counts)."""
    from kernels.te.batch import digamma_table, local_values, make_batch

    dev, dtype = device_and_dtype()
    batch = make_batch(x, y, z if z.shape[1] else None, device=dev, dtype=dtype)
    res = run_batch(batch, k=k, theiler=theiler, algorithm=algorithm, backend=backend, store=True)
    psi = digamma_table(batch.n, dev)
    local = local_values(res.n_xz[0], res.n_yz[0], res.n_z[0], k=k, algorithm=algorithm, has_z=batch.has_z, psi=psi)
    counts = [c[0].cpu().numpy().astype(np.int64) for c in (res.n_xz, res.n_yz, res.n_z)]
    return KSGResult(local=local.cpu().numpy(), n_xz=counts[0], n_yz=counts[1], n_z=counts[2],
                     eps=res.eps[0].cpu().numpy().astype(np.float64))


def ksg_values_device(xs: Sequence[np.ndarray], y: np.ndarray, z: np.ndarray, orders: np.ndarray | None, *,
                      k: int, theiler: int, algorithm: int, backend: str) -> np.ndarray:
    """[L, Q] estimates: source block l (e.g. one per delay) under row order q, in one batch."""
    import torch

    from kernels.te.batch import KSGBatch

    dev, dtype = device_and_dtype()
    n = y.shape[0]
    orders = np.arange(n)[None] if orders is None else np.asarray(orders)
    t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=dev)  # noqa: E731
    n_l, n_q = len(xs), orders.shape[0]
    ll, qq = torch.meshgrid(torch.arange(n_l), torch.arange(n_q), indexing="ij")
    items = torch.stack([ll.ravel(), torch.zeros_like(ll.ravel()), qq.ravel()], 1).to(torch.int32)
    batch = KSGBatch(x=t(np.stack(xs)), y=t(y[None]), z=t(z[None]),
                     perms=torch.as_tensor(orders, dtype=torch.int32, device=dev).contiguous(), items=items.to(dev))
    res = run_batch(batch, k=k, theiler=theiler, algorithm=algorithm, backend=backend, store=False)
    return res.te.cpu().numpy().reshape(n_l, n_q)


def network_blocks(data: np.ndarray, cfg: NetworkConfig, device, dtype):
    """Every variable's prepared blocks on common rows, built on `device` in float64, cast to dtype:
    X [N*L, n, l_hist] (variable-major, delay-minor), Y [N, n, 1], Z [N, n, k_hist], and n.

    Embedding, z-scoring (ddof=1, on power-of-two rescaled columns, so any finite input works) and
    noise follow embedding.prepare; the noise comes from one torch generator seeded by params.seed,
    so every shard that builds the blocks gets the same ones.
    """
    import torch

    p = cfg.params
    delays = cfg.lag_values()
    length = data.shape[0]
    t0 = max(start_time(p, 0, u) for u in delays)
    n = length - 1 - t0
    check_observations(n, p, length, t0)
    d = torch.as_tensor(np.asarray(data, dtype=np.float64), device=device)          # [T, N]
    t = torch.arange(t0, length - 1, device=device)

    def embed(last, hist, tau):   # [N, n, hist]: rows (s[last], s[last - tau], ...)
        idx = last[:, None] - tau * torch.arange(hist, device=device)[None, :]
        return d[idx].permute(2, 0, 1)

    gen = torch.Generator(device=device).manual_seed(p.seed)

    def prep(block, field):
        # embedding.unit_scale: exact power-of-two scaling, so mean / std cannot overflow (|x| ~ 1e308)
        exp = torch.frexp(block.abs().amax(dim=1, keepdim=True)).exponent
        scaled = torch.ldexp(block, -exp.to(block.dtype))
        std = scaled.std(dim=1, keepdim=True)
        if bool((std == 0).any()):
            raise InputError(field, "is constant over the embedded samples (zero variance)",
                             "a series with nonzero variance over the samples used")
        if p.normalise:
            block, std = (scaled - scaled.mean(dim=1, keepdim=True)) / std, torch.ones_like(std)
        else:
            peak = float(block.abs().max())
            if peak >= MAX_RAW:
                raise InputError(field, f"holds |values| up to {peak:.3g}: without normalise the distances "
                                 "between samples overflow",
                                 f"|values| < {MAX_RAW:.3g}, or normalise = true (any finite values)")
            std = torch.ldexp(std, exp.to(std.dtype))
        if p.noise > 0:
            block = block + torch.randn(block.shape, generator=gen, device=device, dtype=block.dtype) * (p.noise * std)
        return block.to(dtype).contiguous()

    x = torch.stack([prep(embed(t + 1 - u, p.l_hist, p.l_tau), "source") for u in delays], dim=1)
    y = prep(embed(t + 1, 1, 1), "target")
    z = prep(embed(t, p.k_hist, p.k_tau), "target")
    return x.reshape(-1, n, p.l_hist).contiguous(), y, z, n


def pairs_te_arrays(data: np.ndarray, pairs: Sequence[tuple[int, int]], cfg: NetworkConfig, *,
                    backend: str, n_surrogates: int | None = None) -> dict:
    """TE of every (source, target) pair at every delay, observed and surrogate, on a device.

    `pairs`: a sequence of (source, target) or an int array [P, 2] (faster for big networks).

    Returns {"te_by_lag": [P, L], "surrogates": [P, S] (max over delays), "n": rows};
    n_surrogates overrides cfg.significance.n_surrogates (0: observed values only).
    """
    import torch

    from kernels.te.batch import KSGBatch

    p = cfg.params
    dev, dtype = device_and_dtype()
    x, y, z, n = network_blocks(data, cfg, dev, dtype)
    n_l = len(cfg.lag_values())
    n_s = cfg.significance.n_surrogates if n_surrogates is None else n_surrogates
    sig = cfg.significance.model_copy(update={"n_surrogates": max(n_s, 1)})
    orders = surrogate_orders(n, sig, np.random.default_rng(sig.seed))[:n_s]
    perms = torch.as_tensor(np.vstack([np.arange(n)[None], orders]), dtype=torch.int32, device=dev).contiguous()
    n_q = perms.shape[0]
    pr = torch.as_tensor(np.asarray(pairs, dtype=np.int64).reshape(-1, 2), device=dev)   # an array: no per-pair Python
    layout = None
    if backend == "triton" and p.algorithm == 1 and z.shape[2] > 0:   # destinations sorted once for all chunks
        from kernels.te.ksg_pruned import sort_destinations

        layout = sort_destinations(y, z)
    per_pair = n_l * n_q
    chunk = max(1, _ITEMS_PER_LAUNCH // per_pair)
    te = torch.empty((pr.shape[0], n_l, n_q), dtype=torch.float64, device=dev)
    lq = torch.arange(per_pair, device=dev)
    for c0 in range(0, pr.shape[0], chunk):   # item = (source block at delay l, target, row order q)
        checkpoint()   # between launches: the caller's budget / cancellation (actors.common.budget)
        cp = pr[c0:c0 + chunk]
        src = (cp[:, 0, None] * n_l + lq[None, :] // n_q).ravel()
        dst = cp[:, 1, None].expand(-1, per_pair).ravel()
        q = (lq[None, :] % n_q).expand(cp.shape[0], -1).ravel()
        batch = KSGBatch(x=x, y=y, z=z, perms=perms, items=torch.stack([src, dst, q], 1).to(torch.int32).contiguous())
        res = run_batch(batch, k=p.k, theiler=p.theiler, algorithm=p.algorithm, backend=backend, store=False,
                        layout=layout)
        te[c0:c0 + cp.shape[0]] = res.te.view(-1, n_l, n_q)
    te = te.cpu().numpy()
    surr = te[:, :, 1:].max(axis=1) if n_s else np.empty((te.shape[0], 0))
    return {"te_by_lag": te[:, :, 0], "surrogates": surr, "n": n}


def pairs_te_batched(data: np.ndarray, pairs: Sequence[tuple[int, int]], cfg: NetworkConfig, *,
                     backend: str) -> list:
    """PairResults (as network.pair_te returns) for `pairs`, computed in batched device launches."""
    return pair_results(pairs, pairs_te_arrays(data, pairs, cfg, backend=backend), cfg.lag_values())


def pair_results(pairs: Sequence[tuple[int, int]], out: dict, delays: Sequence[int]) -> list:
    """PairResults from pairs_te_arrays' arrays: best delay (first maximum), its p-value, the surrogates.
    Lets a pool move compact arrays between processes and build the objects where they are used."""
    from actors.te.network import PairResult

    results = []
    for (i, j), by_lag, surr in zip(pairs, out["te_by_lag"], out["surrogates"], strict=True):
        best = int(np.argmax(by_lag))   # first maximum, as max(delays, key=...) on the cpu path
        results.append(PairResult(source=int(i), target=int(j), te=float(by_lag[best]), lag=delays[best],
                                  p_raw=p_value(by_lag[best], surr), surrogates=surr,
                                  te_by_lag={u: float(v) for u, v in zip(delays, by_lag, strict=True)},
                                  n_obs=int(out["n"])))
    return results
