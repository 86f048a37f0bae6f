"""EqProp kernels (kernels/eqprop): the persistent Triton kernel and the fused per-layer kernel against
the torch settle (under TRITON_INTERPRET=1 on the CPU: `triton_interpret`) and against a float64
reference (compiled, on CUDA: `gpu`), the CuPy twin (gpu), and the CUDA_PATH discovery (a pure
function: tested here with each source missing)."""
from __future__ import annotations

import os

import pytest
import torch

from actors.trainer.eqprop import EqPropNet, NotConverged, ep_gradients, settle, settle_residual
from kernels.eqprop import cuda_path as cp
from kernels.eqprop.dispatch import settle_kernel
from kernels.eqprop.persistent import fits

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _data(sizes, batch=19, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, sizes[0], generator=g)
    y = torch.randint(0, sizes[-1], (batch,), generator=g)
    return x.to(device), y.to(device)


def _kernel(kind, net, x, y, beta, cost, steps, update, precision="fp32", state=None):
    tgt = None if beta == 0 else torch.nn.functional.one_hot(y, net.sizes[-1]).float()
    return settle_kernel(kind, x, [lin.weight.detach() for lin in net.layers], [lin.bias.detach() for lin in net.layers],
                         [net.skip(k) for k in range(net.n_states)], state or net.zero_states(x.shape[0]), beta, cost,
                         tgt, steps, update, net.activation, precision)


def _maxdiff(a, b):
    return max(float((p.double() - q.double()).abs().max()) for p, q in zip(a, b))


def _rel(a, ref):
    return max(float((p.double() - q.double()).norm() / q.double().norm()) for p, q in zip(a, ref))


# ---- under the interpreter (CPU) --------------------------------------------------------------------

PERSISTENT = [
    ([5, 20], "hardsigmoid", False, "sync", "ce", 0.5),
    ([5, 20, 3], "sigmoid", False, "evenodd", "mse", -0.3),
    ([7, 16, 16, 4], "hardsigmoid", True, "sync", "ce", 0.0),
    ([7, 16, 16, 4], "tanh", True, "evenodd", "ce", 0.7),
    ([7, 24, 16, 12, 5], "hardsigmoid", False, "evenodd", "ce", -0.2),
    ([7, 24, 16, 12, 5], "sigmoid", False, "sync", "mse", 0.4),
    ([3, 32, 32, 32, 10], "hardsigmoid", True, "sync", "ce", 0.1),
    ([16, 32, 32, 16], "hardsigmoid", False, "evenodd", "ce", 0.3),   # power-of-two widths: no padding copies
]


@pytest.mark.triton_interpret
@pytest.mark.parametrize("sizes,act,residual,update,cost,beta", PERSISTENT)
def test_persistent_kernel_equals_the_torch_settle(sizes, act, residual, update, cost, beta):
    net = EqPropNet(sizes, activation=act, residual=residual, seed=1)
    x, y = _data(sizes)
    assert fits(sizes[1:])
    start = settle(net, x, steps=2, backend="torch")   # a non-zero start state
    ref, r_ref = settle_residual(net, x, y=y, beta=beta, cost=cost, steps=6, update=update, state=start, backend="torch")
    out, r = settle_residual(net, x, y=y, beta=beta, cost=cost, steps=6, update=update, state=start, backend="triton")
    assert _maxdiff(out, ref) < 2e-6
    assert abs(r - r_ref) < 2e-6


@pytest.mark.triton_interpret
@pytest.mark.parametrize("sizes,residual,update,cost,beta", [
    ([5, 20, 3], False, "sync", "mse", 0.5), ([7, 16, 16, 4], True, "evenodd", "ce", -0.4),
    ([7, 24, 16, 12, 5], False, "evenodd", "ce", 0.3), ([5, 200, 200, 10], True, "sync", "ce", 0.5),
    ([5, 130, 40, 10], False, "evenodd", "mse", -0.2),
])
def test_chunked_persistent_variant_equals_the_torch_settle(sizes, residual, update, cost, beta):
    from kernels.eqprop.persistent import prepare

    net = EqPropNet(sizes, residual=residual, seed=5)
    x, y = _data(sizes, seed=4)
    start = settle(net, x, steps=2, backend="torch")
    ref, r_ref = settle_residual(net, x, y=y, beta=beta, cost=cost, steps=5, update=update, state=start, backend="torch")
    drive = torch.nn.functional.linear(x, net.layers[0].weight.detach(), net.layers[0].bias.detach())
    tgt = None if beta == 0 else torch.nn.functional.one_hot(y, sizes[-1]).float()
    launch, collect = prepare(drive, [lin.weight.detach() for lin in net.layers[1:]],
                              [lin.bias.detach() for lin in net.layers[1:]], [net.skip(k) for k in range(net.n_states)],
                              start, beta, cost, tgt, 5, update, net.activation, variant="chunked")
    launch()
    out, r = collect()
    assert _maxdiff(out, ref) < 2e-6 and abs(r - r_ref) < 2e-6
    if max(sizes[1:]) > 128:   # the default picks this variant for layers wider than 128
        auto, _ = settle_residual(net, x, y=y, beta=beta, cost=cost, steps=5, update=update, state=start,
                                  backend="triton")
        assert _maxdiff(auto, ref) < 2e-6


@pytest.mark.triton_interpret
def test_onchip_variant_asked_for_beyond_128_equals_the_torch_settle():
    """The benchmark times the onchip variant at 256 units (bf16) beside the default chunked one."""
    from kernels.eqprop.persistent import prepare

    sizes = [5, 200, 200, 10]
    net = EqPropNet(sizes, seed=6)
    x, y = _data(sizes, seed=5)
    ref = settle(net, x, y=y, beta=0.4, steps=4, update="evenodd", backend="torch")
    drive = torch.nn.functional.linear(x, net.layers[0].weight.detach(), net.layers[0].bias.detach())
    launch, collect = prepare(drive, [lin.weight.detach() for lin in net.layers[1:]],
                              [lin.bias.detach() for lin in net.layers[1:]], [False] * 3, net.zero_states(x.shape[0]),
                              0.4, "ce", torch.nn.functional.one_hot(y, 10).float(), 4, "evenodd", "hardsigmoid",
                              variant="onchip")
    launch()
    assert _maxdiff(collect()[0], ref) < 2e-6


@pytest.mark.triton_interpret
@pytest.mark.parametrize("sizes,update,cost,beta", [
    ([5, 40, 36, 12], "sync", "ce", 0.5), ([5, 40, 40, 6], "evenodd", "mse", -0.4),
    ([6, 24, 300], "sync", "ce", 0.3),      # ce over > 256 output units: the softmax outside the epilogue
    ([6, 24, 24, 24, 24, 24, 7], "evenodd", "ce", 0.2),   # 6 state layers: beyond the persistent kernel
])
def test_fused_kernel_equals_the_torch_settle(sizes, update, cost, beta):
    net = EqPropNet(sizes, residual=True, seed=2)
    x, y = _data(sizes, seed=1)
    ref, r_ref = settle_residual(net, x, y=y, beta=beta, cost=cost, steps=5, update=update, backend="torch")
    out, r = _kernel("triton_fused", net, x, y, beta, cost, 5, update)
    assert _maxdiff(out, ref) < 2e-6
    assert abs(r - r_ref) < 2e-6
    if not fits(sizes[1:]):   # backend="triton" falls back to the fused path
        auto, _ = settle_residual(net, x, y=y, beta=beta, cost=cost, steps=5, update=update, backend="triton")
        assert _maxdiff(auto, ref) < 2e-6


@pytest.mark.triton_interpret
@pytest.mark.parametrize("kind", ["triton", "triton_fused"])
def test_bf16_kernels_within_5e_3_of_float64(kind):
    sizes = [9, 48, 32, 10]
    net = EqPropNet(sizes, seed=3)
    x, y = _data(sizes, seed=2)
    ref = settle(EqPropNet(sizes, seed=3).double(), x.double(), y=y, beta=0.3, steps=15, backend="torch")
    out, _ = _kernel(kind, net, x, y, 0.3, "ce", 15, "sync", precision="bf16")
    assert 1e-5 < _rel(out, ref) <= 5e-3   # bf16 operands really used, and within the target


@pytest.mark.triton_interpret
def test_ep_gradients_with_the_triton_backend_equal_torch():
    sizes = [6, 16, 16, 4]
    net = EqPropNet(sizes, seed=4)
    x, y = _data(sizes, seed=3)
    for mode in ("one_sided", "symmetric"):
        a, sa = ep_gradients(net, x, y, beta=0.2, mode=mode, steps_free=12, steps_nudged=6, backend="torch")
        b, sb = ep_gradients(net, x, y, beta=0.2, mode=mode, steps_free=12, steps_nudged=6, backend="triton")
        for k in a:
            assert float((a[k] - b[k]).abs().max()) <= 1e-4 * max(1.0, float(a[k].abs().max())), k
        assert abs(sa["cost"] - sb["cost"]) < 1e-5


@pytest.mark.triton_interpret
def test_triton_settle_raises_not_converged():
    net = EqPropNet([5, 20, 3], activation="tanh", seed=1)
    x, _ = _data([5, 20, 3])
    with pytest.raises(NotConverged) as exc:
        settle(net, x, steps=1, tol=1e-9, backend="triton")
    assert exc.value.field == "steps" and exc.value.residual > 1e-9


@pytest.mark.slow
def test_kernels_compile_for_sm90_within_shared_memory():
    """The compiled kernels (what the interpreter never builds) compile for sm_90 ahead of time, without a
    GPU, and every default configuration fits the H100/H200 227 KiB of shared memory per block."""
    import subprocess
    import sys
    from pathlib import Path

    from kernels.eqprop.aot import CONFIGS

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    out = subprocess.run([sys.executable, "-m", "kernels.eqprop.aot"], cwd=Path(__file__).resolve().parents[2],
                         env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert out.stdout.count("B ok") == len(CONFIGS), out.stdout


def test_persistent_kernel_limits():
    assert fits([256, 256, 256, 10]) and fits([3])
    assert not fits([257, 10]) and not fits([16] * 5) and not fits([])


# ---- CUDA_PATH discovery (pure; each source missing in turn) ----------------------------------------

LDCONFIG = """1234 libs found in cache `/etc/ld.so.cache'
\tlibnvrtc.so.13 (libc6,x86-64) => /opt/ld/cuda/lib64/libnvrtc.so.13
\tlibz.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libz.so.1
"""
ALL = cp.CudaFacts(env={"CUDA_PATH": "/opt/env_path", "CUDA_HOME": "/opt/env_home"}, torch_cuda_home="/opt/torch",
                   pip_dirs=["/site/nvidia/cu13"], nvcc="/opt/nvcc/bin/nvcc", ldconfig=LDCONFIG)
ORDER = [("env CUDA_PATH", "/opt/env_path"), ("env CUDA_HOME", "/opt/env_home"), ("torch CUDA_HOME", "/opt/torch"),
         ("nvidia pip package", "/site/nvidia/cu13"), ("nvcc on PATH", "/opt/nvcc"), ("ldconfig libnvrtc", "/opt/ld/cuda")]


def _without(facts, source):
    env = dict(facts.env)
    kw = dict(env=env, torch_cuda_home=facts.torch_cuda_home, pip_dirs=list(facts.pip_dirs), nvcc=facts.nvcc,
              ldconfig=facts.ldconfig)
    if source == "env CUDA_PATH":
        env.pop("CUDA_PATH", None)
    elif source == "env CUDA_HOME":
        env.pop("CUDA_HOME", None)
    elif source == "torch CUDA_HOME":
        kw["torch_cuda_home"] = None
    elif source == "nvidia pip package":
        kw["pip_dirs"] = []
    elif source == "nvcc on PATH":
        kw["nvcc"] = None
    else:
        kw["ldconfig"] = None
    return cp.CudaFacts(**kw)


def test_discovery_takes_the_sources_in_order_each_missing_in_turn():
    facts = ALL
    always = lambda p: True  # noqa: E731
    for i, (source, path) in enumerate(ORDER):
        assert cp.find_cuda_path(facts, isdir=always) == (path, source)
        # this source missing only (the others present): the first other one wins
        alone = _without(ALL, source)
        expect = ORDER[1] if i == 0 else ORDER[0]
        assert cp.find_cuda_path(alone, isdir=always) == (expect[1], expect[0])
        facts = _without(facts, source)
    with pytest.raises(cp.CudaNotFound) as exc:
        cp.find_cuda_path(facts, isdir=always)
    for source in ("env CUDA_PATH", "env CUDA_HOME", "torch CUDA_HOME", "nvidia pip packages", "nvcc on PATH",
                   "ldconfig libnvrtc"):
        assert source in str(exc.value)


def test_discovery_skips_directories_that_do_not_exist():
    exists = {"/opt/nvcc", "/opt/ld/cuda"}
    assert cp.find_cuda_path(ALL, isdir=exists.__contains__) == ("/opt/nvcc", "nvcc on PATH")
    assert cp.find_cuda_path(ALL, isdir={"/opt/ld/cuda"}.__contains__) == ("/opt/ld/cuda", "ldconfig libnvrtc")
    with pytest.raises(cp.CudaNotFound):
        cp.find_cuda_path(cp.CudaFacts(ldconfig="libz.so.1 (libc6) => /lib/libz.so.1"), isdir=lambda p: True)


def test_probe_reads_each_source_and_ensure_sets_cuda_path(monkeypatch, tmp_path):
    root = tmp_path / "cuda"
    (root / "bin").mkdir(parents=True)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.setattr(cp, "_torch_cuda_home", lambda: None)
    monkeypatch.setattr(cp, "_pip_dirs", lambda: [])
    monkeypatch.setattr(cp.shutil, "which", lambda name: None)
    monkeypatch.setattr(cp, "_ldconfig", lambda: f"\tlibnvrtc.so.13 (libc6) => {root}/lib64/libnvrtc.so.13\n")
    assert cp.cuda_path() == (str(root), "ldconfig libnvrtc")
    monkeypatch.setattr(cp.shutil, "which", lambda name: str(root / "bin" / "nvcc") if name == "nvcc" else None)
    assert cp.cuda_path() == (str(root), "nvcc on PATH")
    monkeypatch.setattr(cp, "_ldconfig", lambda: None)
    monkeypatch.setattr(cp.shutil, "which", lambda name: None)
    with pytest.raises(cp.CudaNotFound):
        cp.cuda_path()
    monkeypatch.setenv("CUDA_HOME", str(root))
    assert cp.ensure_cuda_path() == (str(root), "env CUDA_HOME")
    assert os.environ["CUDA_PATH"] == str(root)


# ---- compiled, on CUDA --------------------------------------------------------------------------------
# Kept to ~8 distinct Triton compiles (each constexpr set compiles once, seconds each): every test below
# settles with beta != 0 and the evenodd update (the chunked kernel's barriers matter there), so the
# compiles are shared; tf32 and the other widths are covered by jobs.bench.eqprop's rel-err column.

def _gpu_case(sizes, seed=0, batch=1024, act="hardsigmoid"):
    dev = torch.device("cuda")
    net = EqPropNet(sizes, activation=act, seed=seed).to(dev)
    ref_net = EqPropNet(sizes, activation=act, seed=seed).double().to(dev)
    x, y = _data(sizes, batch=batch, seed=seed, device=dev)
    return net, ref_net, x, y


def _gpu_kernel(net, x, y, beta, precision, variant):
    from kernels.eqprop.persistent import prepare

    drive = torch.nn.functional.linear(x, net.layers[0].weight.detach(), net.layers[0].bias.detach())
    tgt = torch.nn.functional.one_hot(y, net.sizes[-1]).float()
    launch, collect = prepare(drive, [lin.weight.detach() for lin in net.layers[1:]],
                              [lin.bias.detach() for lin in net.layers[1:]], [net.skip(k) for k in range(net.n_states)],
                              net.zero_states(x.shape[0]), beta, "ce", tgt, 30, "evenodd", net.activation, precision,
                              variant=variant)
    launch()
    return collect()[0]


@pytest.mark.gpu
@pytest.mark.parametrize("hidden,variant", [(128, "onchip"), (256, "chunked")])
@pytest.mark.parametrize("precision,tol", [("bf16", 5e-3), ("fp32", 1e-5)])
def test_gpu_persistent_kernel_vs_float64(hidden, variant, precision, tol):
    """Batch 1024, 30 evenodd sweeps nudged by beta 0.5: both variants within 5e-3 (bf16) / 1e-5 (fp32)
    of the float64 torch settle; the engine's backend="triton" picks the same kernel."""
    sizes = [784, hidden, hidden, 10]
    net, ref_net, x, y = _gpu_case(sizes)
    ref = settle(ref_net, x.double(), y=y, beta=0.5, steps=30, update="evenodd", backend="torch")
    out = _gpu_kernel(net, x, y, 0.5, precision, variant)
    assert _rel(out, ref) <= tol, _rel(out, ref)
    engine = settle(net, x, y=y, beta=0.5, steps=30, update="evenodd", backend="triton", precision=precision)
    assert _rel(engine, ref) <= tol


@pytest.mark.gpu
def test_gpu_ep_gradients_triton_vs_float64_bptt():
    """fp32 kernel settling gives EP gradients with cosine >= 0.999 to float64 BPTT for every tensor
    (beta 0.2: at 0.05 fp32's own cancellation brings it to ~0.998, jobs.bench.eqprop's table)."""
    from actors.trainer.eqprop import bptt_gradients

    sizes = [784, 128, 128, 10]
    net, ref_net, x, y = _gpu_case(sizes, seed=3, batch=512)
    ref = bptt_gradients(ref_net, x.double(), y, steps=100, update="evenodd")
    g, stats = ep_gradients(net, x, y, beta=0.2, mode="symmetric", steps_free=100, steps_nudged=60,
                            backend="triton", precision="fp32", update="evenodd")
    for k in ref:
        cos = float(torch.nn.functional.cosine_similarity(g[k].double().flatten(), ref[k].flatten(), dim=0))
        assert cos >= 0.999, (k, cos)


@pytest.mark.gpu
def test_gpu_fused_graph_path_vs_float64():
    """Hidden 512: the fused layer kernel with the phase in a CUDA graph (bf16) within 5e-3 of float64;
    a replay is identical; an in-place weight update is seen by the cached graph's next replay."""
    from kernels.eqprop.fused import clear_graphs

    clear_graphs()
    sizes = [784, 512, 512, 10]
    net, ref_net, x, y = _gpu_case(sizes, seed=1)
    kw = dict(y=y, beta=0.4, steps=30, update="evenodd")
    ref = settle(ref_net, x.double(), backend="torch", **kw)
    out = settle(net, x, backend="triton", precision="bf16", **kw)
    assert _rel(out, ref) <= 5e-3, _rel(out, ref)
    assert _maxdiff(out, settle(net, x, backend="triton", precision="bf16", **kw)) == 0.0
    with torch.no_grad():
        for p, q in zip(net.parameters(), ref_net.parameters()):
            p.mul_(0.5)
            q.mul_(0.5)
    ref = settle(ref_net, x.double(), backend="torch", **kw)
    out = settle(net, x, backend="triton", precision="bf16", **kw)
    assert _rel(out, ref) <= 5e-3, _rel(out, ref)


@pytest.mark.gpu
def test_gpu_cupy_twin_vs_float64():
    pytest.importorskip("cupy")
    net, ref_net, x, y = _gpu_case([784, 128, 128, 10], seed=2)
    for beta, update, cost in ((0.5, "evenodd", "ce"), (-0.3, "sync", "mse")):
        ref = settle(ref_net, x.double(), y=y, beta=beta, cost=cost, steps=30, update=update, backend="torch")
        out = settle(net, x, y=y, beta=beta, cost=cost, steps=30, update=update, backend="cupy")
        assert _rel(out, ref) <= 1e-5, (beta, update, cost, _rel(out, ref))
