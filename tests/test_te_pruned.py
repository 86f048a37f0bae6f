"""The pruned KSG kernel (kernels/te/ksg_pruned.py, TRITON_INTERPRET=1 on the CPU) vs the float64 oracle.

Pruning may only change which candidates are visited: on float64 blocks every count and eps must
equal kernels/te/reference.py exactly and |dTE| < 1e-9, with ties (integer data), Theiler windows,
multi-dimensional blocks, k up to 16, and phase-A windows from none (win=0: every bound comes from
the binary-searched phase B) to wider than the data. Outputs are poison-filled (-1), so a row the
kernel never wrote fails. Inputs are small: the interpreter runs every Triton op in numpy.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from actors.te.batched import pairs_te_arrays
from actors.te.config import NetworkConfig
from kernels.te.batch import KSGBatch, make_batch
from kernels.te.ksg_pruned import PreparedLaunch, ksg_batch_pruned, sort_destinations
from kernels.te.reference import reference_cmi

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def _assert_equals_oracle(res, ref, item: int = 0):
    for c in ("n_xz", "n_yz", "n_z"):
        np.testing.assert_array_equal(getattr(res, c)[item].cpu().numpy(), ref[c], err_msg=c)
    np.testing.assert_array_equal(res.eps[item].cpu().numpy(), ref["eps"])
    assert abs(res.te[item].item() - ref["local"].mean()) < 1e-9


@pytest.mark.parametrize(("dims", "k", "theiler", "ties", "win", "rings"), [
    ((1, 1, 1), 4, 0, False, 0, True),    # rings of one position
    ((2, 1, 3), 7, 2, False, 3, True),
    ((1, 1, 1), 3, 1, True, 2, True),     # integer data: many distances equal eps, many equal z keys
    ((1, 1, 2), 16, 0, False, 100, False),  # window wider than the data: phase B is empty
    ((1, 1, 1), 2, 9, False, 1, False),   # wide Theiler window: phase A may find fewer than k (bound = inf)
])
def test_pruned_kernel_float64_equals_oracle(dims, k, theiler, ties, win, rings):
    """Three items (two sources, one surrogate order) on one destination, several query blocks; phase B
    in one binary-searched range or in rings re-tightened after each."""
    rng = np.random.default_rng(hash((dims, k, theiler, ties, win)) % 2**32)
    n = 34 if k > 4 or dims[2] > 1 else 42
    blocks = [rng.standard_normal((n, d)) for d in (dims[0], dims[0], dims[1], dims[2])]
    if ties:
        blocks = [np.round(b * 2) for b in blocks]
    x0, x1, y, z = blocks
    perm = rng.permutation(n)
    t = lambda a: torch.as_tensor(a, device=DEV)  # noqa: E731
    batch = KSGBatch(x=t(np.stack([x0, x1])), y=t(y[None]), z=t(z[None]),
                     perms=t(np.stack([np.arange(n), perm])).int(), items=t([(0, 0, 0), (1, 0, 0), (0, 0, 1)]).int())
    res = ksg_batch_pruned(batch, k=k, theiler=theiler, block=16, group=2, win=win, rings=rings)
    for b, (xb, order) in enumerate([(x0, np.arange(n)), (x1, np.arange(n)), (x0, perm)]):
        _assert_equals_oracle(res, reference_cmi(xb[order], y, z, k=k, theiler=theiler), b)


@pytest.mark.parametrize(("dims", "k", "theiler", "ties", "win", "strip"), [
    ((1, 1, 1), 4, 0, False, 0, 16),      # no phase A: every bound from the strips' y-runs
    ((1, 2, 1), 16, 2, False, 4, 32),     # 2-D y (strips sorted by its first column), k = 16, Theiler 2
    ((2, 1, 1), 3, 1, True, 1, 20),       # integer data (equal y keys across strips, distances = eps); strip
])                                        # rounded up to the block (32)
def test_two_d_layout_float64_equals_oracle(dims, k, theiler, ties, win, strip):
    """The 2-D k-NN layout (z strips re-sorted by y, phase B binary-searched by y in every strip) only
    changes which candidates are visited: counts and eps equal the oracle on three items of one destination."""
    rng = np.random.default_rng(hash((dims, k, theiler, ties, strip)) % 2**32)
    n = 52
    blocks = [rng.standard_normal((n, d)) for d in (dims[0], dims[0], dims[1], dims[2])]
    if ties:
        blocks = [np.round(b * 2) for b in blocks]
    x0, x1, y, z = blocks
    y[:, 0] += 0.7 * z[:, 0]   # y correlated with z, as a destination's next value is with its past
    perm = rng.permutation(n)
    t = lambda a: torch.as_tensor(a, device=DEV)  # noqa: E731
    batch = KSGBatch(x=t(np.stack([x0, x1])), y=t(y[None]), z=t(z[None]),
                     perms=t(np.stack([np.arange(n), perm])).int(), items=t([(0, 0, 0), (1, 0, 0), (0, 0, 1)]).int())
    res = ksg_batch_pruned(batch, k=k, theiler=theiler, block=16, group=2, win=win, strip=strip)
    for b, (xb, order) in enumerate([(x0, np.arange(n)), (x1, np.arange(n)), (x0, perm)]):
        _assert_equals_oracle(res, reference_cmi(xb[order], y, z, k=k, theiler=theiler), b)


def test_long_series_pick_the_two_d_layout(monkeypatch):
    """Series with n >= LONG["min_n"] use the 2-D layout unless the caller names a strip (0: the 1-D
    one); the automatically picked launch still equals the oracle (threshold lowered to test it small)."""
    from kernels.te import ksg_pruned

    monkeypatch.setitem(ksg_pruned.LONG, "min_n", 40)
    monkeypatch.setitem(ksg_pruned.LONG, "strip", 16)
    rng = np.random.default_rng(5)
    x, y, z = rng.standard_normal((3, 44, 1))
    batch = make_batch(x, y, z, device=DEV)
    auto = PreparedLaunch(batch, k=4, store=True, block=16, group=1)
    assert (auto.strip, auto.cfg["win"]) == (16, ksg_pruned.LONG["win"])
    assert PreparedLaunch(batch, k=4, block=16, group=1, strip=0).strip == 0
    _assert_equals_oracle(auto.result(), reference_cmi(x, y, z, k=4))
    small = make_batch(x[:39], y[:39], z[:39], device=DEV)
    assert PreparedLaunch(small, k=4, block=16, group=1).strip == 0


def test_prepared_launch_reruns_and_shares_destinations():
    """A PreparedLaunch run twice gives the same estimates (buffers reused); items on two destinations
    with a precomputed sorted layout each equal their own oracle run; float32 within 1e-4 nats."""
    rng = np.random.default_rng(3)
    n = 30
    xs, ys, zs = (rng.standard_normal((2, n, 1)) for _ in range(3))
    items = np.array([(0, 1, 0), (1, 0, 0), (1, 1, 0)])
    t = lambda a: torch.as_tensor(a, device=DEV)  # noqa: E731
    batch = KSGBatch(x=t(xs), y=t(ys), z=t(zs), perms=t(np.arange(n)[None]).int(), items=t(items).int())
    run = PreparedLaunch(batch, k=4, theiler=1, store=True, layout=sort_destinations(batch.y, batch.z),
                         block=16, group=4, win=2, rings=True)
    first = run.result().te.clone()
    res = run.result()
    np.testing.assert_array_equal(res.te.cpu().numpy(), first.cpu().numpy())
    for b, (s, d, _) in enumerate(items):
        _assert_equals_oracle(res, reference_cmi(xs[s], ys[d], zs[d], k=4, theiler=1), b)
    x, y, z = rng.standard_normal((3, n, 1))
    f32 = ksg_batch_pruned(make_batch(x, y, z, device=DEV, dtype=torch.float32), k=4, block=16, group=1)
    assert abs(f32.te[0].item() - reference_cmi(x, y, z, k=4)["local"].mean()) < 1e-4


def test_algorithm_2_and_mi_fall_back_to_the_brute_force_kernel():
    """Outside the pruned kernel's scope (algorithm 2; no conditioning block) results still equal the oracle."""
    rng = np.random.default_rng(8)
    x, y, z = rng.standard_normal((3, 30, 1))
    _assert_equals_oracle(ksg_batch_pruned(make_batch(x, y, z, device=DEV), k=3, algorithm=2),
                          reference_cmi(x, y, z, k=3, algorithm=2))
    _assert_equals_oracle(ksg_batch_pruned(make_batch(x, y, None, device=DEV), k=3),
                          reference_cmi(x, y, None, k=3))


def test_network_triton_path_equals_torch_twin():
    """pairs_te_arrays on the triton backend (pruned kernel, destinations sorted once, pairs as an array)
    equals the torch twin on every pair, delay and surrogate (float64 on the CPU)."""
    rng = np.random.default_rng(11)
    data = rng.standard_normal((34, 3))
    data[1:, 1] += 0.8 * data[:-1, 0]
    cfg = NetworkConfig.model_validate({"params": {"noise": 0.0, "k": 3}, "significance": {"n_surrogates": 2},
                                        "lags": (1, 2)})
    pairs = np.array([(0, 1), (2, 1), (1, 0)])
    tri = pairs_te_arrays(data, pairs, cfg, backend="triton")
    twin = pairs_te_arrays(data, [tuple(p) for p in pairs], cfg, backend="torch")
    np.testing.assert_allclose(tri["te_by_lag"], twin["te_by_lag"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(tri["surrogates"], twin["surrogates"], rtol=0, atol=1e-9)
    assert tri["te_by_lag"][0].max() > tri["te_by_lag"][1].max()   # the planted edge 0 -> 1 stands out


@pytest.mark.slow
def test_bench_multi_worker_mode_shards_targets_with_identical_edges(ray_cluster):
    """jobs.bench.te --gpus: 1 and 2 TEEstimators (fake GPUs here, so the float64 twin runs in the actors)
    give identical edges to each other and to an in-process pairs_te_arrays of the whole network."""
    from jobs.bench.te import bench_config, multi_gpu, network_data

    data = network_data(5, 60)
    out = multi_gpu(data, 2, [1, 2], reps=1)
    assert [r["gpus"] for r in out["runs"]] == [1, 2]
    assert all(r["identical_to_first"] for r in out["runs"])
    assert len({tuple(map(tuple, r["gpu_ids"])) for r in out["runs"]}) == 2   # the second run used two GPUs
    pairs = np.array([(i, j) for j in range(5) for i in range(5) if i != j])
    want = pairs_te_arrays(data, pairs, bench_config("auto", 2), backend="cpu", n_surrogates=2)
    assert out["te"].shape == (20, 3)
    np.testing.assert_allclose(out["te"], np.concatenate([want["te_by_lag"], want["surrogates"]], 1), rtol=0, atol=1e-12)


@pytest.mark.slow
def test_pool_array_transport_equals_in_process_network(ray_cluster, tmp_path):
    """run_network with a device backend ships compact arrays (TEEstimator.te_arrays), target-major
    tasks; the network equals the in-process te_network on the same backend, and a rerun resumes."""
    from actors.te.config import TENetworkSpec
    from actors.te.network import te_network
    from actors.te.pool import run_network

    rng = np.random.default_rng(2)
    data = rng.standard_normal((60, 4))
    data[1:, 2] += 0.9 * data[:-1, 0]
    net_cfg = {"params": {"noise": 0.0, "k": 3, "backend": "torch"}, "significance": {"n_surrogates": 5}}
    # the same two (fake-GPU) estimators as the --gpus test above: no new actor processes
    spec = TENetworkSpec.model_validate({"network": net_cfg, "pairs_per_task": 5,
                                         "workers": {"num_workers": 2, "num_gpus": 1, "num_cpus": 0.5}})
    net, stats = run_network(data, None, spec, tmp_path, progress=False)
    assert stats["transport"] == "arrays" and stats["n_tasks"] == 3
    want = te_network(data, config=net_cfg)
    got = net.table.sort_values(["source", "target"]).reset_index(drop=True)
    exp = want.table.sort_values(["source", "target"]).reset_index(drop=True)
    np.testing.assert_allclose(got["te"], exp["te"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(got["p_value"], exp["p_value"], rtol=0, atol=1e-12)
    assert tuple(got.loc[got["te"].idxmax(), ["source", "target"]]) == ("0", "2")   # the planted coupling
    again, stats2 = run_network(data, None, spec, tmp_path, progress=False)
    assert stats2["tasks_skipped"] == 3 and again.table.equals(net.table)
