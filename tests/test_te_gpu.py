"""TE kernels on CUDA (run on the GPU machine: `pytest -m gpu tests/test_te_gpu.py`).

The compiled Triton kernel against the float64 brute-force oracle (kernels/te/reference.py): equal
counts in float64, the documented float32 tolerance, and the engine's triton backend against the
cpu (cKDTree) backend. Kernel modules are imported inside the tests so that collecting this file
on a CPU machine does not fix Triton's interpreter mode for tests/test_te_kernels.py.
"""
from __future__ import annotations

import numpy as np
import pytest

from kernels.te.reference import reference_cmi

pytestmark = pytest.mark.gpu

F32_TE_TOL = 1e-4   # documented in kernels/te/batch.py


def _data(seed, n, dims, ties=False):
    rng = np.random.default_rng(seed)
    blocks = [rng.standard_normal((n, d)) for d in dims]
    return [np.round(b * 2) if ties else b for b in blocks]


@pytest.mark.parametrize("algorithm", [1, 2])
@pytest.mark.parametrize(("dims", "k", "theiler", "ties"), [
    ((1, 1, 1), 4, 0, False), ((2, 1, 3), 7, 5, False), ((1, 2, 0), 1, 0, False), ((1, 1, 2), 16, 2, False),
    ((1, 1, 1), 4, 0, True), ((3, 1, 0), 3, 1, True)])
def test_cuda_kernel_float64_equals_oracle(algorithm, dims, k, theiler, ties):
    import torch

    from kernels.te.batch import make_batch
    from kernels.te.ksg_triton import ksg_batch_triton

    n = 700   # several row blocks, the last one partial
    x, y, z = _data(hash((dims, k, ties, algorithm)) % 2**32, n, dims, ties)
    zz = z if dims[2] else None
    ref = reference_cmi(x, y, z if dims[2] else np.empty((n, 0)), k=k, theiler=theiler, algorithm=algorithm)
    res = ksg_batch_triton(make_batch(x, y, zz, device="cuda", dtype=torch.float64), k=k, theiler=theiler,
                           algorithm=algorithm)
    for c in ("n_xz", "n_yz", "n_z"):
        np.testing.assert_array_equal(getattr(res, c)[0].cpu().numpy(), ref[c])
    np.testing.assert_array_equal(res.eps[0].cpu().numpy(), ref["eps"])
    assert abs(res.te[0].item() - ref["local"].mean()) < 1e-9


@pytest.mark.parametrize("algorithm", [1, 2])
def test_cuda_kernel_float32_tolerance_and_twin(algorithm):
    """float32: |dTE| vs the float64 oracle within the documented tolerance; the compiled kernel and
    the torch twin on CUDA do the same float32 arithmetic, so their counts agree exactly."""
    import torch

    from kernels.te.batch import make_batch
    from kernels.te.ksg_torch import ksg_batch_torch
    from kernels.te.ksg_triton import ksg_batch_triton

    worst, flips = 0.0, 0
    for seed in range(5):
        x, y, z = _data(100 + seed, 2000, (1, 1, 2))
        ref = reference_cmi(x, y, z, k=4, algorithm=algorithm)
        batch = make_batch(x, y, z, device="cuda", dtype=torch.float32)
        res = ksg_batch_triton(batch, k=4, algorithm=algorithm)
        twin = ksg_batch_torch(batch, k=4, algorithm=algorithm)
        for c in ("n_xz", "n_yz", "n_z"):
            got = getattr(res, c)[0].cpu().numpy()
            np.testing.assert_array_equal(got, getattr(twin, c)[0].cpu().numpy())
            flips += int((got != ref[c]).sum())
        worst = max(worst, abs(res.te[0].item() - ref["local"].mean()))
    print(f"float32 algorithm {algorithm}: max |dTE| = {worst:.2e} nats, {flips} of {3 * 5 * 2000} counts differ")
    assert worst < F32_TE_TOL


def test_cuda_batched_surrogates_match_per_item_oracle():
    """Many items in one launch: each (source, destination, row order) equals its own oracle run."""
    import torch

    from kernels.te.batch import KSGBatch
    from kernels.te.ksg_triton import ksg_batch_triton

    rng = np.random.default_rng(7)
    n, n_src, n_dst, n_perm = 300, 3, 2, 4
    xs, ys, zs = rng.standard_normal((n_src, n, 1)), rng.standard_normal((n_dst, n, 1)), rng.standard_normal((n_dst, n, 2))
    perms = np.stack([np.arange(n)] + [rng.permutation(n) for _ in range(n_perm - 1)])
    items = np.array([(s, d, q) for s in range(n_src) for d in range(n_dst) for q in range(n_perm)])
    t = lambda a: torch.as_tensor(a, device="cuda")  # noqa: E731
    batch = KSGBatch(x=t(xs), y=t(ys), z=t(zs), perms=t(perms).int(), items=t(items).int())
    res = ksg_batch_triton(batch, k=4, theiler=1)
    for b, (s, d, q) in enumerate(items):
        ref = reference_cmi(xs[s][perms[q]], ys[d], zs[d], k=4, theiler=1)
        np.testing.assert_array_equal(res.n_xz[b].cpu().numpy(), ref["n_xz"])
        np.testing.assert_array_equal(res.n_z[b].cpu().numpy(), ref["n_z"])
        assert abs(res.te[b].item() - ref["local"].mean()) < 1e-9


def test_engine_triton_backend_matches_cpu_backend():
    """transfer_entropy / te_significance / te_network with backend triton (float32) vs cpu (float64)."""
    from actors.te.engine import te_significance, transfer_entropy
    from actors.te.network import te_network

    rng = np.random.default_rng(3)
    T = 1500
    x = rng.standard_normal(T)
    y = np.zeros(T)
    for t in range(T - 1):
        y[t + 1] = 0.5 * y[t] + 0.5 * x[t] + rng.standard_normal()
    a = transfer_entropy(x, y, backend="cpu")
    b = transfer_entropy(x, y, backend="triton")
    assert abs(a.te - b.te) < F32_TE_TOL
    assert abs(a.te - 0.5 * np.log1p(0.25)) < 0.05
    sa = te_significance(x, y, backend="cpu", significance={"n_surrogates": 30}, lags=[1, 2])
    sb = te_significance(x, y, backend="triton", significance={"n_surrogates": 30}, lags=[1, 2])
    assert np.max(np.abs(sa.surrogates - sb.surrogates)) < F32_TE_TOL
    assert sa.lag == sb.lag == 1 and sb.p_value == sa.p_value

    data = np.stack([x, y, rng.standard_normal(T)], axis=1)
    cfg = {"params": {"noise": 0.0}, "significance": {"n_surrogates": 50}}
    net_cpu = te_network(data, config={**cfg, "params": {"noise": 0.0, "backend": "cpu"}})
    net_gpu = te_network(data, config={**cfg, "params": {"noise": 0.0, "backend": "triton"}})
    assert np.max(np.abs(net_cpu.table["te"].to_numpy() - net_gpu.table["te"].to_numpy())) < F32_TE_TOL
    assert sorted(net_gpu.graph.edges()) == [("0", "1")]


def test_network_triton_equals_torch_twin_on_many_items():
    """The chunked network path (pairs x surrogates) on CUDA: Triton vs the torch twin, same float32 data."""
    from actors.te.batched import pairs_te_arrays
    from actors.te.config import NetworkConfig

    rng = np.random.default_rng(11)
    data = rng.standard_normal((400, 12))
    pairs = [(i, j) for i in range(12) for j in range(12) if i != j]
    cfg = NetworkConfig.model_validate({"lags": (1, 2), "significance": {"n_surrogates": 9}})
    a = pairs_te_arrays(data, pairs, cfg, backend="triton")
    b = pairs_te_arrays(data, pairs, cfg, backend="torch")
    np.testing.assert_allclose(a["te_by_lag"], b["te_by_lag"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(a["surrogates"], b["surrogates"], rtol=0, atol=1e-9)


# ---- the pruned kernel (kernels/te/ksg_pruned.py) ------------------------------------------------------
@pytest.mark.parametrize("rings", [False, True])
@pytest.mark.parametrize(("dims", "k", "theiler", "ties", "win"), [
    ((1, 1, 1), 4, 0, False, 32), ((2, 1, 3), 7, 5, False, 8), ((1, 1, 2), 16, 2, False, 0),
    ((1, 1, 1), 4, 0, True, 32), ((3, 1, 1), 3, 1, True, 4), ((1, 1, 1), 2, 40, False, 16)])
def test_cuda_pruned_kernel_float64_equals_oracle(dims, k, theiler, ties, win, rings):
    """Compiled pruned kernel, float64: counts and eps identical to the oracle for three items per
    destination (two sources, one surrogate order), several blocks, ties, Theiler windows."""
    import torch

    from kernels.te.batch import KSGBatch
    from kernels.te.ksg_pruned import ksg_batch_pruned

    n = 700
    rng = np.random.default_rng(hash((dims, k, theiler, ties, win)) % 2**32)
    x0, x1, y, z = _data(int(rng.integers(2**31)), n, (dims[0], dims[0], dims[1], dims[2]), ties)
    perm = rng.permutation(n)
    t = lambda a: torch.as_tensor(a, device="cuda")  # noqa: E731
    batch = KSGBatch(x=t(np.stack([x0, x1])), y=t(y[None]), z=t(z[None]),
                     perms=t(np.stack([np.arange(n), perm])).int(), items=t([(0, 0, 0), (1, 0, 0), (0, 0, 1)]).int())
    res = ksg_batch_pruned(batch, k=k, theiler=theiler, win=win, rings=rings)
    for b, (xb, order) in enumerate([(x0, np.arange(n)), (x1, np.arange(n)), (x0, perm)]):
        ref = reference_cmi(xb[order], y, z, k=k, theiler=theiler)
        for c in ("n_xz", "n_yz", "n_z"):
            np.testing.assert_array_equal(getattr(res, c)[b].cpu().numpy(), ref[c])
        np.testing.assert_array_equal(res.eps[b].cpu().numpy(), ref["eps"])
        assert abs(res.te[b].item() - ref["local"].mean()) < 1e-9


def test_cuda_pruned_equals_brute_force_kernel_float32():
    """float32, a whole 12-variable network with surrogates: the pruned kernel visits fewer candidates
    but does the same float32 comparisons, so its counts equal the brute-force kernel's; |dTE| vs the
    float64 oracle stays within the documented tolerance."""
    import torch

    from kernels.te.batch import make_batch
    from kernels.te.ksg_pruned import ksg_batch_pruned
    from kernels.te.ksg_triton import ksg_batch_triton

    worst = 0.0
    for seed in range(3):
        x, y, z = _data(200 + seed, 3000, (1, 1, 2))
        batch = make_batch(x, y, z, device="cuda", dtype=torch.float32)
        old = ksg_batch_triton(batch, k=4)
        for rings in (False, True):
            new = ksg_batch_pruned(batch, k=4, rings=rings)
            for c in ("n_xz", "n_yz", "n_z", "eps"):
                np.testing.assert_array_equal(getattr(new, c).cpu().numpy(), getattr(old, c).cpu().numpy())
        worst = max(worst, abs(new.te[0].item() - reference_cmi(x, y, z, k=4)["local"].mean()))
    assert worst < F32_TE_TOL


@pytest.mark.parametrize(("dims", "k", "theiler", "ties", "win", "strip"), [
    ((1, 1, 1), 4, 0, False, 32, 128), ((2, 2, 1), 16, 3, False, 0, 64), ((1, 1, 2), 4, 1, True, 8, 96)])
def test_cuda_pruned_two_d_layout_float64_equals_oracle(dims, k, theiler, ties, win, strip):
    """Compiled 2-D k-NN layout (z strips re-sorted by y), float64: counts and eps identical to the oracle."""
    import torch

    from kernels.te.batch import KSGBatch
    from kernels.te.ksg_pruned import ksg_batch_pruned

    n = 700
    rng = np.random.default_rng(hash((dims, k, theiler, ties, strip)) % 2**32)
    x0, x1, y, z = _data(int(rng.integers(2**31)), n, (dims[0], dims[0], dims[1], dims[2]), ties)
    perm = rng.permutation(n)
    t = lambda a: torch.as_tensor(a, device="cuda")  # noqa: E731
    batch = KSGBatch(x=t(np.stack([x0, x1])), y=t(y[None]), z=t(z[None]),
                     perms=t(np.stack([np.arange(n), perm])).int(), items=t([(0, 0, 0), (1, 0, 0), (0, 0, 1)]).int())
    res = ksg_batch_pruned(batch, k=k, theiler=theiler, win=win, strip=strip)
    for b, (xb, order) in enumerate([(x0, np.arange(n)), (x1, np.arange(n)), (x0, perm)]):
        ref = reference_cmi(xb[order], y, z, k=k, theiler=theiler)
        for c in ("n_xz", "n_yz", "n_z"):
            np.testing.assert_array_equal(getattr(res, c)[b].cpu().numpy(), ref[c])
        np.testing.assert_array_equal(res.eps[b].cpu().numpy(), ref["eps"])
        assert abs(res.te[b].item() - ref["local"].mean()) < 1e-9


def test_cuda_pruned_two_d_layout_equals_one_d_float32():
    """float32, T=3000: the 2-D layout's counts and eps equal the 1-D layout's (same comparisons)."""
    import torch

    from kernels.te.batch import make_batch
    from kernels.te.ksg_pruned import ksg_batch_pruned

    x, y, z = _data(300, 3000, (1, 1, 1))
    batch = make_batch(x, y, z, device="cuda", dtype=torch.float32)
    one = ksg_batch_pruned(batch, k=4, strip=0)
    for strip in (64, 256):
        two = ksg_batch_pruned(batch, k=4, strip=strip, win=32)
        for c in ("n_xz", "n_yz", "n_z", "eps"):
            np.testing.assert_array_equal(getattr(two, c).cpu().numpy(), getattr(one, c).cpu().numpy())


def _five_nodes(T: int, seed: int) -> np.ndarray:
    """0 AR(1) -> 1 -> 2, 0 and 2 -> 3, 4 independent (as tests/test_te_multivariate.py)."""
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((T, 5))
    d = np.zeros((T, 5))
    for t in range(T - 1):
        d[t + 1, 0] = 0.5 * d[t, 0] + e[t + 1, 0]
        d[t + 1, 1] = 0.3 * d[t, 1] + 0.8 * d[t, 0] + 0.5 * e[t + 1, 1]
        d[t + 1, 2] = 0.3 * d[t, 2] + 0.8 * d[t, 1] + 0.5 * e[t + 1, 2]
        d[t + 1, 3] = 0.3 * d[t, 3] + 0.6 * d[t, 0] + 0.6 * d[t, 2] + 0.5 * e[t + 1, 3]
        d[t + 1, 4] = e[t + 1, 4]
    return d


@pytest.mark.parametrize("T", [1500, 6000])   # 6000 >= 5000: the pruned kernel's 2-D (strip) layout
def test_cuda_multivariate_batched_matches_cpu_selection(T):
    """The lockstep batched selection on CUDA (float32 Triton) picks the CPU path's sources (float64 cKDTree),
    with conditional TE within the float32 tolerance; the torch twin on CUDA agrees too."""
    from actors.te.config import NetworkConfig
    from actors.te.multivariate import select_sources
    from actors.te.multivariate_batched import select_sources_batched

    data = _five_nodes(T, 1)
    cfg = NetworkConfig.model_validate({"significance": {"n_surrogates": 19}, "lags": (1, 2)})
    cpu = [select_sources(data, j, cfg) for j in range(5)]
    assert {(s, 3) for s, _ in cpu[3].selected} >= {(0, 3), (2, 3)}
    for backend in ("triton", "torch"):
        got = select_sources_batched(data, range(5), cfg, backend=backend)
        for a, b in zip(cpu, got, strict=True):
            assert a.selected == b.selected, (backend, a.target, a.selected, b.selected)
            for c in a.selected:
                assert abs(a.te[c] - b.te[c]) < F32_TE_TOL, (backend, a.target, c)


def test_cuda_recovery_bench_small(tmp_path):
    """jobs.bench.te_recovery end to end on the GPU at a small size (both systems, both modes)."""
    import json

    from jobs.bench.te_recovery import main

    assert main(["--nodes", "12", "--T", "3000", "--surrogates", "50", "--alpha-mv", "0.02",
                 "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "te_recovery.json").read_text())
    assert len(doc["results"]) == 4 and doc["gpu"] != "none"
    for r in doc["results"]:
        print(r["system"], r["mode"], r["precision"], r["recall"], r["wall_s"])
