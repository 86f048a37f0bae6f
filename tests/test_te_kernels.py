"""TE kernels on the CPU: the torch twin and the Triton kernel (TRITON_INTERPRET=1) vs the oracle.

kernels/te/reference.py is the independent float64 brute-force oracle. On float64 blocks both
device paths do the oracle's arithmetic, so counts and eps must be identical and |dTE| < 1e-9; on
float32 blocks |dTE| must stay within the tolerance documented in kernels/te/batch.py. Outputs are
pre-filled with poison (-1 / NaN), so an element the kernel never wrote fails the comparison.
Interpreted Triton is slow (~2 s per 45-row item), so its inputs are small; the twin gets larger ones.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from actors.common.errors import InputError
from actors.te.batched import pairs_te_arrays, resolve_backend
from actors.te.config import NetworkConfig
from actors.te.engine import te_significance, transfer_entropy
from actors.te.ksg import ksg_cmi
from actors.te.network import te_network
from actors.te.significance import surrogate_orders
from kernels.te.batch import KSGBatch, make_batch
from kernels.te.ksg_torch import ksg_batch_torch
from kernels.te.ksg_triton import ksg_batch_triton
from kernels.te.reference import reference_cmi

DEV = "cuda" if torch.cuda.is_available() else "cpu"
F32_TE_TOL = 1e-4


def _blocks(seed: int, n: int, dims: tuple[int, int, int], ties: bool = False):
    rng = np.random.default_rng(seed)
    out = [rng.standard_normal((n, d)) for d in dims]
    return [np.round(b * 2) for b in out] if ties else out   # integer data: many exact ties


def _assert_equals_oracle(res, ref, item: int = 0):
    for c in ("n_xz", "n_yz", "n_z"):
        np.testing.assert_array_equal(getattr(res, c)[item].cpu().numpy(), ref[c], err_msg=c)
    np.testing.assert_array_equal(res.eps[item].cpu().numpy(), ref["eps"])
    assert abs(res.te[item].item() - ref["local"].mean()) < 1e-9


# ---- torch twin, float64: identical to the oracle ---------------------------------------------------
@pytest.mark.parametrize("algorithm", [1, 2])
@pytest.mark.parametrize("theiler", [0, 4])
@pytest.mark.parametrize(("dims", "ties"), [((1, 1, 1), False), ((2, 1, 3), False), ((1, 2, 0), False),
                                            ((1, 1, 1), True), ((2, 1, 2), True)])
def test_torch_twin_float64_equals_oracle(algorithm, theiler, dims, ties):
    n = 160
    x, y, z = _blocks(hash((algorithm, theiler, dims, ties)) % 2**32, n, dims, ties)
    zz = z if dims[2] else None
    for k in (1, 4, 9):
        ref = reference_cmi(x, y, z, k=k, theiler=theiler, algorithm=algorithm)
        # max_elems small: several item and row chunks
        res = ksg_batch_torch(make_batch(x, y, zz, device=DEV), k=k, theiler=theiler, algorithm=algorithm,
                              max_elems=3000)
        _assert_equals_oracle(res, ref)


# ---- Triton kernel (interpreted on CPU), float64: identical to the oracle ---------------------------
@pytest.mark.parametrize(("algorithm", "dims", "k", "theiler", "ties"), [
    (1, (1, 1, 1), 4, 0, False),
    (1, (2, 1, 3), 7, 2, False),
    (1, (1, 2, 0), 1, 0, False),
    (1, (1, 1, 1), 3, 1, True),
    (2, (1, 1, 1), 4, 2, True),
    (2, (2, 1, 0), 3, 0, False),
    (2, (1, 1, 2), 16, 0, False),
])
def test_triton_kernel_float64_equals_oracle(algorithm, dims, k, theiler, ties):
    n = 45   # one partial block of 64 rows exercises the row mask
    x, y, z = _blocks(hash((algorithm, dims, k, ties)) % 2**32, n, dims, ties)
    ref = reference_cmi(x, y, z, k=k, theiler=theiler, algorithm=algorithm)
    res = ksg_batch_triton(make_batch(x, y, z if dims[2] else None, device=DEV), k=k, theiler=theiler,
                           algorithm=algorithm, block=64, group=1)
    _assert_equals_oracle(res, ref)


def test_triton_batched_items_share_destinations_and_permute_sources():
    """One launch, items mixing sources, destinations and row orders: each equals its own oracle run."""
    rng = np.random.default_rng(5)
    n = 30
    xs, ys, zs = rng.standard_normal((2, n, 1)), rng.standard_normal((2, n, 1)), rng.standard_normal((2, n, 1))
    perms = np.stack([np.arange(n), rng.permutation(n)])
    items = np.array([(0, 0, 0), (1, 0, 1), (0, 1, 1), (1, 1, 0)])
    t = lambda a: torch.as_tensor(a, device=DEV)  # noqa: E731
    batch = KSGBatch(x=t(xs), y=t(ys), z=t(zs), perms=t(perms).int(), items=t(items).int())
    res = ksg_batch_triton(batch, k=3, theiler=1, block=32, group=4)   # 2 groups, 2 empty slots each
    twin = ksg_batch_torch(batch, k=3, theiler=1)
    for b, (s, d, q) in enumerate(items):
        ref = reference_cmi(xs[s][perms[q]], ys[d], zs[d], k=3, theiler=1)
        _assert_equals_oracle(res, ref, b)
        _assert_equals_oracle(twin, ref, b)


def test_float32_paths_within_documented_tolerance():
    """float32 distances: counts may flip at eps, TE stays within F32_TE_TOL of the float64 oracle."""
    worst = 0.0
    for seed in range(3):
        x, y, z = _blocks(50 + seed, 400, (1, 1, 2))
        ref = reference_cmi(x, y, z, k=4)
        res = ksg_batch_torch(make_batch(x, y, z, device=DEV, dtype=torch.float32), k=4)
        worst = max(worst, abs(res.te[0].item() - ref["local"].mean()))
    x, y, z = _blocks(60, 48, (1, 1, 1))
    ref = reference_cmi(x, y, z, k=4)
    tri = ksg_batch_triton(make_batch(x, y, z, device=DEV, dtype=torch.float32), k=4, block=64, group=1)
    worst = max(worst, abs(tri.te[0].item() - ref["local"].mean()))
    assert worst < F32_TE_TOL


# ---- engine integration ------------------------------------------------------------------------------
def _coupled(T: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(T)
    y = np.zeros(T)
    for t in range(T - 1):
        y[t + 1] = 0.5 * y[t] + 0.5 * x[t] + rng.standard_normal()
    return x, y


def test_engine_torch_backend_equals_cpu_backend():
    """Same prepared data: transfer_entropy and te_significance agree to 1e-9 with the cKDTree path."""
    x, y = _coupled(150)
    a, b = transfer_entropy(x, y, backend="cpu", k=3), transfer_entropy(x, y, backend="torch", k=3)
    np.testing.assert_array_equal(a.ksg.n_xz, b.ksg.n_xz)
    np.testing.assert_array_equal(a.ksg.n_z, b.ksg.n_z)
    assert abs(a.te - b.te) < 1e-9
    sig = {"n_surrogates": 12}
    sa = te_significance(x, y, backend="cpu", significance=sig, lags=[1, 2])
    sb = te_significance(x, y, backend="torch", significance=sig, lags=[1, 2])
    np.testing.assert_allclose(sb.surrogates, sa.surrogates, rtol=0, atol=1e-9)
    assert (sa.lag, sa.p_value) == (sb.lag, sb.p_value)


def test_engine_triton_backend_interpreted_equals_cpu():
    x, y = _coupled(50, seed=2)
    a, b = transfer_entropy(x, y, backend="cpu"), transfer_entropy(x, y, backend="triton")
    np.testing.assert_array_equal(a.ksg.n_yz, b.ksg.n_yz)
    assert abs(a.te - b.te) < 1e-9
    # k = 20 > 16 neighbours in registers: the triton backend hands the estimate to the torch twin
    a, b = transfer_entropy(x, y, backend="cpu", k=20), transfer_entropy(x, y, backend="triton", k=20)
    np.testing.assert_array_equal(a.ksg.n_xz, b.ksg.n_xz)
    assert abs(a.te - b.te) < 1e-9


def test_network_device_path_observed_and_surrogates_against_cpu():
    """te_network on the torch backend: observed TE equals the cpu backend (noise 0: same prepared
    blocks); the shared surrogates equal cKDTree runs with the same row orders."""
    x, y = _coupled(130, seed=4)
    data = np.stack([x, y, np.random.default_rng(9).standard_normal(130)], axis=1)
    cfg = {"params": {"noise": 0.0, "k": 3}, "significance": {"n_surrogates": 6}}
    net_cpu = te_network(data, config={**cfg, "params": {**cfg["params"], "backend": "cpu"}})
    net_dev = te_network(data, config={**cfg, "params": {**cfg["params"], "backend": "torch"}})
    np.testing.assert_allclose(net_dev.table["te"], net_cpu.table["te"], rtol=0, atol=1e-9)
    conf = NetworkConfig.model_validate({**cfg, "params": {**cfg["params"], "backend": "torch"}})
    out = pairs_te_arrays(data, [(1, 0)], conf, backend="torch")
    n = out["n"]
    orders = surrogate_orders(n, conf.significance, np.random.default_rng(conf.significance.seed))
    src = (data[:-1, 1] - data[:-1, 1].mean()) / data[:-1, 1].std(ddof=1)
    dst = data[:, 0]
    yb = ((dst[1:] - dst[1:].mean()) / dst[1:].std(ddof=1))[:, None]
    zb = ((dst[:-1] - dst[:-1].mean()) / dst[:-1].std(ddof=1))[:, None]
    want = [ksg_cmi(src[o][:, None], yb, zb, k=3).value for o in orders]
    np.testing.assert_allclose(out["surrogates"][0], want, rtol=0, atol=1e-9)


def test_backend_errors_name_the_field(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("the error is for machines without CUDA")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(InputError, match="backend"):
        resolve_backend("triton")
    assert resolve_backend("auto") == "cpu"
    with pytest.raises(InputError, match="backend"):
        transfer_entropy(np.arange(50.0) % 7, np.arange(50.0) % 5, backend="gpu")
