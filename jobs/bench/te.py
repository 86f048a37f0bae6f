"""Transfer-entropy network benchmark: the Triton kernels (pruned and brute force) vs the torch twin
vs scipy's cKDTree, the host stages around the launch, the Ray pool, and 1 vs 2 GPUs.

    python -m jobs.bench.te --out runs/te_bench                          # N x T = 100x1000, 100x10000, 1000x1000; S = 0, 100
    python -m jobs.bench.te --cases 100x1000 --surrogates 0 --out DIR    # one case
    python -m jobs.bench.te --workers 2 --cases 100x1000 --out DIR       # adds a Ray pool line (TEEstimator per GPU)
    python -m jobs.bench.te --gpus 1,2 --cases 1000x1000 --surrogates 0 --out DIR   # 1 vs 2 GPUs, edges identical
    ray job submit --working-dir . -- python -m jobs.bench.te --out DIR

Every number comes from this run, on this machine. The data is a sparse linear network (each
variable driven by two others, lag 1), the same for all paths. Each row is one full bivariate
network: all N(N-1) ordered pairs, k = 4, history 1, delay 1, with S surrogates per pair. Device
times include embedding, z-scoring and noise on the device, every launch and the copy back. Where
a full run would exceed the time budget, a random sample of the pairs is timed and the network
time extrapolated linearly (the GPU is full at the sample sizes used), and the row says so; the
CPU path is always a sample run on all CPU cores in parallel (one process per core; the network
time is its per-pair compute time x pairs / cores, an ideal-scaling estimate). Noise is 0
so the observed TE of the device paths can be checked against the float64 cKDTree path on the
same prepared data (column "max |dTE|"). Only warm launches are timed: every selection of pairs is
run once untimed before it is timed (the first call for a new shape compiles the Triton kernels for
it), so the headline of S = 0 agrees with its stage timings ("headline / stages" in te_bench.json).
Writes DIR/te_bench.md and DIR/te_bench.json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from actors.te.config import NetworkConfig
from jobs.bench.lib import best_time, event_ms, gpu_name, md_table, utc_stamp

TARGETS_S = {(100, 1000): 0.005, (100, 10000): 0.2, (1000, 1000): 1.2}   # issue 4, one H100, S = 0


def network_data(n_vars: int, length: int, seed: int = 0) -> np.ndarray:
    """[T, N] sparse linear network: x_i[t+1] = 0.4 x_i[t] + 0.3 (x_a[t] + x_b[t]) + noise."""
    rng = np.random.default_rng(seed)
    parents = np.stack([rng.choice(np.delete(np.arange(n_vars), i), 2, replace=False) for i in range(n_vars)])
    x = np.zeros((length, n_vars))
    e = rng.standard_normal((length, n_vars))
    for t in range(length - 1):
        x[t + 1] = 0.4 * x[t] + 0.3 * x[t][parents].sum(axis=1) + e[t + 1]
    return x


def bench_config(backend: str, n_surrogates: int) -> NetworkConfig:
    """The benchmark's network config: noise 0 (so device and cKDTree TE compare exactly), S surrogates."""
    return NetworkConfig.model_validate({"params": {"noise": 0.0, "backend": backend},
                                         "significance": {"n_surrogates": max(1, n_surrogates)}})


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def device_network_time(data, pairs, backend: str, n_surr: int, budget_s: float, rng) -> dict:
    """Seconds for the whole network on the device: measured, or extrapolated from a timed sample.

    Only warm launches are timed: a selection of pairs whose size was not run yet is run once untimed
    first (the first call for a shape compiles the kernels for it; timing it once made the pilot, and
    the extrapolation from it, several times too slow). `warmup_calls` / `timed_calls` say what ran."""
    from actors.te import batched

    cfg = bench_config(backend, n_surr)
    n_pairs = len(pairs)
    parr = np.asarray(pairs, dtype=np.int64)
    # samples are whole targets (random ones, all their sources): item groups stay full, as in the network
    rank = rng.permutation(int(parr[:, 1].max()) + 1)
    order = np.argsort(rank[parr[:, 1]], kind="stable")
    warm: set[int] = set()   # selection sizes already run: same size, same shapes, same compiled kernels
    calls = {"warmup_calls": 0, "timed_calls": 0}

    def timed(sel, reps: int = 1) -> float:
        """Median warm seconds of `reps` runs of the network restricted to the pairs `sel`."""
        def run():
            return batched.pairs_te_arrays(data, parr[sel], cfg, backend=backend, n_surrogates=n_surr)

        if len(sel) not in warm:
            best_time(run)   # untimed: compiles (and autotunes) for this shape
            warm.add(len(sel))
            calls["warmup_calls"] += 1
        calls["timed_calls"] += reps
        return float(np.median([best_time(run)[0] for _ in range(reps)]))

    work = (n_surr + 1) * data.shape[0] ** 2           # distance evaluations per pair and pass
    pilot = order[:int(np.clip((2e11 if backend == "triton" else 2e10) / work, 1, min(64, n_pairs)))]
    per_pair = timed(pilot) / len(pilot)
    if len(pilot) == n_pairs or per_pair * n_pairs <= budget_s:
        secs = timed(order, reps=5 if per_pair * n_pairs < 0.5 else 1)
        return {"seconds": secs, "timed_pairs": n_pairs, "extrapolated": False, **calls}
    sample = order[:max(len(pilot), min(n_pairs, int(budget_s / per_pair)))]
    secs = timed(sample)
    return {"seconds": secs * n_pairs / len(sample), "timed_pairs": int(len(sample)), "extrapolated": True, **calls}


def _cpu_pairs(data: np.ndarray, pairs: list, n_surr: int) -> tuple[list[float], float]:
    """Worker: observed TE of each pair on the cKDTree path plus its S surrogates, and the compute seconds."""
    from actors.te.engine import prepare_te, surrogate_statistics
    from actors.te.significance import surrogate_orders

    cfg = bench_config("cpu", n_surr)
    out = []
    t0 = time.perf_counter()
    for i, j in pairs:
        prep = prepare_te(data[:, i], data[:, j], [], cfg.params, [1])
        out.append(prep.estimate(1).value)
        if n_surr:
            orders = surrogate_orders(prep.n, cfg.significance, np.random.default_rng(0))
            surrogate_statistics(prep, [1], orders)
    return out, time.perf_counter() - t0


def _warm(_: int) -> int:
    import actors.te.engine  # noqa: F401  (import cost outside the timed region)

    return os.getpid()


def cpu_network_time(pool, cores: int, data, pairs, n_surr: int, rng) -> dict:
    """cKDTree network seconds on all cores: per-pair compute time measured inside the worker processes
    (all cores busy, 4 pairs each), times pairs / cores; no scheduling or transfer overhead is counted."""
    n_pairs = len(pairs)
    sample = [pairs[i] for i in rng.permutation(n_pairs)[:min(n_pairs, 4 * cores)]]
    parts = [sample[w::cores] for w in range(cores) if sample[w::cores]]
    results = list(pool.map(_cpu_pairs, [data] * len(parts), parts, [n_surr] * len(parts)))
    per_pair = sum(secs for _, secs in results) / len(sample)
    te = {p: v for part, (vals, _) in zip(parts, results, strict=True) for p, v in zip(part, vals, strict=True)}
    return {"seconds": per_pair * n_pairs / cores, "per_pair_core_seconds": per_pair, "timed_pairs": len(sample),
            "te": te}


def max_te_error(data, te_cpu: dict, backend: str) -> float:
    """max |TE_device - TE_cKDTree| over the CPU sample's pairs (same prepared data, noise 0)."""
    from actors.te.batched import pairs_te_arrays

    pairs = list(te_cpu)
    got = pairs_te_arrays(data, pairs, bench_config(backend, 0), backend=backend, n_surrogates=0)["te_by_lag"][:, 0]
    return float(np.max(np.abs(got - np.array([te_cpu[p] for p in pairs]))))


def ray_pool_time(data, n_surr: int, workers: int) -> dict:
    """Wall seconds of actors.te.pool.run_network with `workers` GPU TEEstimators (after a warm-up)."""
    from actors.te.config import TENetworkSpec
    from actors.te.pool import run_network
    from cluster import connect

    connect()
    n_pairs = data.shape[1] * (data.shape[1] - 1)
    spec = TENetworkSpec.model_validate({
        "network": json.loads(bench_config("auto", n_surr).model_dump_json()),
        "workers": {"num_workers": workers, "num_gpus": 1}, "pairs_per_task": math.ceil(n_pairs / (2 * workers))})
    run_network(data[:, :4], None, spec, progress=False)          # start the actors, compile the kernel
    t0 = time.perf_counter()
    run_network(data, None, spec, progress=False)
    return {"seconds": time.perf_counter() - t0, "workers": workers, "surrogates": max(1, n_surr)}


def network_batch(data: np.ndarray, n_surr: int):
    """The whole network's KSGBatch (all ordered pairs x (1 + S) row orders) on the device."""
    import torch

    from actors.te.batched import device_and_dtype, network_blocks
    from actors.te.significance import surrogate_orders
    from kernels.te.batch import KSGBatch

    dev, dtype = device_and_dtype()
    cfg = bench_config("triton", n_surr)
    x, y, z, n = network_blocks(data, cfg, dev, dtype)
    orders = surrogate_orders(n, cfg.significance, np.random.default_rng(0))[:n_surr]
    perms = torch.as_tensor(np.vstack([np.arange(n)[None], orders]), dtype=torch.int32, device=dev).contiguous()
    n_vars = data.shape[1]
    src, dst = torch.meshgrid(torch.arange(n_vars, device=dev), torch.arange(n_vars, device=dev), indexing="ij")
    keep = src != dst
    pairs = torch.stack([src[keep], dst[keep]], 1)
    q = torch.arange(perms.shape[0], device=dev)
    items = torch.cat([pairs.repeat_interleave(len(q), 0), q.repeat(len(pairs))[:, None]], 1)
    return KSGBatch(x=x, y=y, z=z, perms=perms, items=items.int().contiguous())


def kernel_times(data: np.ndarray, n_surr: int, reps: int = 5, prev_budget_s: float = 20.0) -> dict:
    """Kernel-only milliseconds on the whole network (CUDA events): the previous brute-force kernel
    (ksg_triton, as called before: its item grouping included) vs the pruned kernel with its launch
    prepared once (PreparedLaunch.run: launches + the per-item sums only); max |dTE| between them.
    The brute-force time is extrapolated from a prefix of the items when it would exceed prev_budget_s."""
    from kernels.te.batch import KSGBatch
    from kernels.te.ksg_pruned import PreparedLaunch
    from kernels.te.ksg_triton import ksg_batch_triton

    batch = network_batch(data, n_surr)
    launch = PreparedLaunch(batch, k=4)
    pruned_ms = event_ms(launch.run, reps)
    te_new = launch.run().clone()
    n_items = int(batch.items.shape[0])
    share = min(1.0, prev_budget_s * 1e3 / (10 * pruned_ms * reps))   # brute force: up to ~10x the pruned time
    m = max(1, int(n_items * share))
    sub = KSGBatch(x=batch.x, y=batch.y, z=batch.z, perms=batch.perms, items=batch.items[:m].contiguous())
    prev_ms = event_ms(lambda: ksg_batch_triton(sub, k=4, store=False), 1 if m < n_items else reps) * n_items / m
    te_prev = ksg_batch_triton(sub, k=4, store=False).te
    return {"pruned_ms": pruned_ms, "prev_ms": prev_ms, "prev_items_timed": m, "items": n_items,
            "max_dte_prev": float((te_prev - te_new[:m]).abs().max())}


def layout_times(data: np.ndarray, n_surr: int, strips: list[int], wins: list[int], reps: int = 5) -> list[dict]:
    """Kernel-only milliseconds (CUDA events, launch prepared once) of the pruned kernel's k-NN layouts on
    one whole-network batch: the 1-D z-sorted layout (strip 0, the current default config) first, then the
    2-D layout (z strips re-sorted by y) for every strip x phase-A window; ratios against the first row and
    max |dTE| against it (same comparisons: only the float64 summation order may differ)."""
    from kernels.te.ksg_pruned import CONFIG, PreparedLaunch, sort_destinations

    batch = network_batch(data, n_surr)
    layout = sort_destinations(batch.y, batch.z)
    rows, base, ref = [], None, None
    for strip, win in [(0, CONFIG["win"])] + [(s, w) for s in strips if s > 0 for w in wins]:
        launch = PreparedLaunch(batch, k=4, layout=layout, strip=strip, win=win)
        ms = event_ms(launch.run, reps)
        te = launch.run().clone()
        base, ref = (ms, te) if base is None else (base, ref)
        rows.append({"strip": strip, "win": win, "ms": ms, "speedup": base / ms,
                     "max_dte": float((te - ref).abs().max())})
        print(f"  N={data.shape[1]} T={data.shape[0]} S={n_surr} strip {strip} win {win}: {ms:.2f} ms "
              f"({base / ms:.2f}x vs 1-D), max |dTE| {rows[-1]['max_dte']:.1e}", flush=True)
        del launch
    return rows


def main_layouts(cases: list, surr: list[int], strips: list[int], wins: list[int], out: Path) -> int:
    """--strips mode: only the kernel-only 1-D vs 2-D layout table (no CPU reference, no twin)."""
    from actors.common.storage import atomic_write_json

    if not _cuda():
        print("--strips times Triton kernels: needs CUDA", flush=True)
        return 2
    env, results, lines = environment(), [], []
    for n_vars, length in cases:
        for s in surr:
            rows = layout_times(network_data(n_vars, length), s, strips, wins)
            results.append({"N": n_vars, "T": length, "S": s, "rows": rows})
            lines += [[n_vars, length, s, r["strip"] or "1-D", r["win"], f"{r['ms']:.2f} ms", f"{r['speedup']:.2f}×",
                       f"{r['max_dte']:.1e}"] for r in rows]
    md = (f"{env['date']} · GPU: {env['gpu']}\n\n" + md_table(["N", "T", "S", "k-NN layout (strip)", "phase-A window",
                                                                "kernel", "vs 1-D", "max \\|dTE\\| vs 1-D"], lines)
          + "\n")
    print(md)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "te_bench_layouts.json", {"env": env, "results": results})
    return 0


def host_breakdown(data: np.ndarray, reps: int = 5) -> dict:
    """Median milliseconds of each stage of one full network call (S = 0), synchronised in between:
    blocks (H2D, embedding, z-scoring), sort (destination layout), prepare (item groups, buffers),
    kernel (PreparedLaunch.run), copy (estimates to the host)."""
    import torch

    from actors.te.batched import device_and_dtype, network_blocks
    from kernels.te.ksg_pruned import PreparedLaunch, sort_destinations

    dev, dtype = device_and_dtype()
    cfg = bench_config("triton", 0)
    n_vars = data.shape[1]
    stages: dict[str, list[float]] = {k: [] for k in ("blocks", "sort", "prepare", "kernel", "copy")}
    for _ in range(reps + 1):
        t = [time.perf_counter()]
        x, y, z, n = network_blocks(data, cfg, dev, dtype)
        torch.cuda.synchronize()
        t.append(time.perf_counter())
        layout = sort_destinations(y, z)
        torch.cuda.synchronize()
        t.append(time.perf_counter())
        src, dst = torch.meshgrid(torch.arange(n_vars, device=dev), torch.arange(n_vars, device=dev), indexing="ij")
        keep = src != dst
        items = torch.stack([src[keep], dst[keep], torch.zeros_like(src[keep])], 1).int().contiguous()
        from kernels.te.batch import KSGBatch

        batch = KSGBatch(x=x, y=y, z=z, perms=torch.arange(n, device=dev, dtype=torch.int32)[None], items=items)
        launch = PreparedLaunch(batch, k=4, layout=layout)
        torch.cuda.synchronize()
        t.append(time.perf_counter())
        te = launch.run()
        torch.cuda.synchronize()
        t.append(time.perf_counter())
        te.cpu().numpy()
        t.append(time.perf_counter())
        for i, k in enumerate(stages):
            stages[k].append((t[i + 1] - t[i]) * 1e3)
    return {k: float(np.median(v[1:])) for k, v in stages.items()}


def prepare_profile(data: np.ndarray, rows: int = 12) -> str:
    """torch.profiler table (top ops by CPU time) of building one whole-network PreparedLaunch (S = 0):
    where the host-side 'prepare' stage of host_breakdown goes."""
    import torch

    from kernels.te.ksg_pruned import PreparedLaunch, sort_destinations

    batch = network_batch(data, 0)
    layout = sort_destinations(batch.y, batch.z)
    PreparedLaunch(batch, k=4, layout=layout)   # warm the caching allocator and lazy inits
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                            torch.profiler.ProfilerActivity.CUDA]) as prof:
        PreparedLaunch(batch, k=4, layout=layout)
        torch.cuda.synchronize()
    return prof.key_averages().table(sort_by="cpu_time_total", row_limit=rows)


def multi_gpu(data: np.ndarray, n_surr: int, gpu_counts: list[int], reps: int = 3) -> dict:
    """Wall seconds of the whole network through 1, 2, ... GPU TEEstimators (targets sharded evenly,
    data in the object store once, one te_arrays call per actor), and whether every edge is identical."""
    import ray
    import torch

    from actors.te.config import WorkerConfig
    from actors.te.pool import estimators
    from cluster import connect

    connect()
    n_vars = data.shape[1]
    pairs = np.array([(i, j) for j in range(n_vars) for i in range(n_vars) if i != j], dtype=np.int64)  # target-major
    cfg_json = bench_config("auto", n_surr).model_dump_json()
    data_ref = ray.put(data)
    out, ref_te = {"N": n_vars, "T": data.shape[0], "S": n_surr, "runs": []}, None
    everyone = estimators(WorkerConfig(num_workers=max(gpu_counts), num_gpus=1,
                                       num_cpus=1 if torch.cuda.is_available() else 0.5))   # one per GPU, kept alive
    for g in gpu_counts:
        pool = everyone[:g]
        bounds = np.linspace(0, n_vars, g + 1).round().astype(int)
        shards = [pairs[(pairs[:, 1] >= lo) & (pairs[:, 1] < hi)] for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
        # warm-up on the very shards timed: the first call for a shape compiles the kernels for it
        ray.get([w.te_arrays.remote(data_ref, s, cfg_json, n_surr) for w, s in zip(pool, shards, strict=True)])
        walls = []
        for _ in range(reps):
            t0 = time.perf_counter()
            res = ray.get([w.te_arrays.remote(data_ref, s, cfg_json, n_surr) for w, s in zip(pool, shards, strict=True)])
            walls.append(time.perf_counter() - t0)
        te = np.concatenate([np.concatenate([r["te_by_lag"], r["surrogates"]], 1) for r in res])
        ref_te = te if ref_te is None else ref_te
        gpus = sorted({tuple(i["gpu_ids"]) for i in ray.get([w.info.remote() for w in pool])})
        out["runs"].append({"gpus": g, "seconds": float(np.median(walls)), "gpu_ids": [list(x) for x in gpus],
                            "identical_to_first": bool(np.array_equal(te, ref_te))})
        print(json.dumps(out["runs"][-1]), flush=True)
    out["te"] = ref_te   # [P, 1 + S] target-major: observed TE at the lag, then the surrogates
    base = out["runs"][0]["seconds"]
    for r in out["runs"]:
        r["speedup"] = base / r["seconds"]
    return out


def tune_kernel(data: np.ndarray) -> dict:
    """Pick both Triton kernels' launch configs on this data's full network, S = 0."""
    import torch

    from actors.te.batched import device_and_dtype, network_blocks
    from kernels.te import ksg_pruned, ksg_triton
    from kernels.te.batch import KSGBatch

    dev, dtype = device_and_dtype()
    x, y, z, n = network_blocks(data, bench_config("triton", 0), dev, dtype)
    n_vars = data.shape[1]
    pairs = torch.tensor([(i, j) for i in range(n_vars) for j in range(n_vars) if i != j], device=dev)
    items = torch.cat([pairs, torch.zeros_like(pairs[:, :1])], 1).int().contiguous()
    batch = KSGBatch(x=x, y=y, z=z, perms=torch.arange(n, device=dev, dtype=torch.int32)[None], items=items)
    timings = ksg_pruned.tune(batch)   # the brute-force kernel keeps its CONFIG (tuned 2026-11-23 00:53)
    for cfg, secs in sorted(timings.items(), key=lambda kv: kv[1])[:6]:
        print(f"  pruned {dict(cfg)}: {secs * 1e3:.2f} ms", flush=True)
    return {"brute_force": dict(ksg_triton.CONFIG), "pruned": dict(ksg_pruned.CONFIG)}


def environment() -> dict:
    """Date, versions, CPU cores, GPU and the pruned kernel's launch config: the tables' header line."""
    import scipy
    import torch

    from kernels.te.ksg_pruned import CONFIG

    env = {"date": utc_stamp(), "python": platform.python_version(), "pruned_config": dict(CONFIG),
           "torch": torch.__version__, "scipy": scipy.__version__, "cpu_cores": os.cpu_count(), "gpu": gpu_name()}
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = "not installed"
    return env


def _fmt(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


def _ratio(r: float) -> str:
    return f"{r:.1f}×" if r < 10 else f"{r:,.0f}×"


def table(rows: list[dict], env: dict) -> str:
    """The markdown table (times, pairs/s, ratios against the cKDTree and torch paths, targets)."""
    head = (f"{env['date']} · GPU: {env['gpu']} · CPU cores: {env['cpu_cores']} · torch {env['torch']}, "
            f"triton {env['triton']}, scipy {env['scipy']}, Python {env['python']}\n\n")
    lines = []
    for r in rows:
        tri, twin, cpu = r["triton"], r.get("torch"), r["cpu"]
        mark = lambda d: "*" if d and d["extrapolated"] else ""  # noqa: E731
        target = TARGETS_S.get((r["N"], r["T"])) if r["S"] == 0 else None
        tgt = "-" if target is None else f"≤ {_fmt(target)}: {'met' if tri['seconds'] <= target else 'missed'}"
        twin_s = f"{_fmt(twin['seconds'])}{mark(twin)}" if twin else "-"
        twin_r = _ratio(twin['seconds'] / tri['seconds']) if twin else "-"
        lines.append([r["N"], r["T"], r["S"], r["pairs"], f"{_fmt(tri['seconds'])}{mark(tri)}",
                      f"{r['pairs'] / tri['seconds']:,.0f}", twin_s, twin_r, f"{_fmt(cpu['seconds'])}†",
                      _ratio(cpu["seconds"] / tri["seconds"]), f"{r['max_dte']:.1e}", tgt])
    notes = ("\n\n\\* extrapolated from a timed random sample of the pairs (sizes in te_bench.json). "
             "† always extrapolated: compute seconds per pair measured in one process per core (4 pairs each, "
             "all cores busy) × pairs / cores, no overhead counted.\n")
    header = ["N", "T", "S", "pairs", "Triton", "pairs/s", "torch twin", "Triton speed-up vs twin",
              f"cKDTree, {env['cpu_cores']} cores", "Triton speed-up vs cKDTree", "max \\|dTE\\| vs cKDTree", "target"]
    return head + md_table(header, lines) + notes


def kernel_table(rows: list[dict]) -> str:
    """Kernel-only times (CUDA events): previous brute-force kernel vs the pruned one, same batch."""
    lines = [[r["N"], r["T"], r["S"], f"{k['items']:,}",
              f"{k['prev_ms']:.2f} ms{'*' if k['prev_items_timed'] < k['items'] else ''}", f"{k['pruned_ms']:.2f} ms",
              _ratio(k["prev_ms"] / k["pruned_ms"]), _fmt(r["triton"]["seconds"]), f"{k['max_dte_prev']:.1e}"]
             for r in rows if "kernel" in r for k in [r["kernel"]]]
    if not lines:
        return ""
    return ("\nKernel only (CUDA events, whole network batch; * brute force timed on a prefix of the items):\n\n"
            + md_table(["N", "T", "S", "items", "brute-force kernel", "pruned kernel", "speed-up", "full network call",
                        "max \\|dTE\\| brute vs pruned"], lines) + "\n")


def stages_table(rows: list[dict]) -> str:
    """Warm stage timings of one full network call (S = 0) next to the headline time of the same row."""
    lines = [[r["N"], r["T"], *(f"{r['stages_ms'][k]:.2f}" for k in ("blocks", "sort", "prepare", "kernel", "copy")),
              f"{sum(r['stages_ms'].values()):.2f}", f"{r['triton']['seconds'] * 1e3:.2f}", f"{r['headline_vs_stages']:.2f}"]
             for r in rows if "stages_ms" in r]
    if not lines:
        return ""
    return ("\nStages of one full network call, S = 0 (ms, warm, median of 5) against the headline (warm too):\n\n"
            + md_table(["N", "T", "blocks", "sort", "prepare", "kernel", "copy", "sum", "headline", "headline / sum"],
                       lines) + "\n")


def main_multi_gpu(cases: list, surr: list[int], gpu_counts: list[int], out: Path) -> int:
    """--gpus mode: each case through 1, 2, ... GPU TEEstimators; speed-up and identical edges."""
    import torch

    from actors.common.storage import atomic_write_json

    have = torch.cuda.device_count()
    if have == 0:
        print("--gpus needs CUDA GPUs (TEEstimators are pinned with num_gpus=1); none is visible", flush=True)
        return 2
    counts = [g for g in gpu_counts if g <= have] or [1]
    if counts != gpu_counts:
        print(f"only {have} GPU(s) visible: timing {counts}", flush=True)
    env, results, lines = environment(), [], []
    for n_vars, length in cases:
        for s in surr:
            r = multi_gpu(network_data(n_vars, length), s, counts)
            results.append(r)
            for run in r["runs"]:
                lines.append([n_vars, length, s, run["gpus"], _fmt(run["seconds"]), f"{run['speedup']:.2f}×",
                              "yes" if run["identical_to_first"] else "**no**"])
    md = (f"{env['date']} · GPU: {env['gpu']} × {have}\n\n"
          + md_table(["N", "T", "S", "GPUs", "wall (Ray, warm)", "speed-up", "edges identical to 1 GPU"], lines) + "\n")
    print(md)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "te_bench_gpus.json", {"env": env, "results": [{k: v for k, v in r.items() if k != "te"}
                                                                            for r in results]})
    return 0 if all(run["identical_to_first"] for r in results for run in r["runs"]) else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="100x1000,100x10000,1000x1000", help="comma-separated NxT")
    ap.add_argument("--surrogates", default="0,100", help="comma-separated S values")
    ap.add_argument("--backend", default="triton", choices=["triton", "torch"], help="the device path timed first")
    ap.add_argument("--budget", type=float, default=20.0, help="seconds per device timing before sampling")
    ap.add_argument("--twin-budget", type=float, default=5.0, help="seconds per torch-twin timing (0: skip)")
    ap.add_argument("--workers", type=int, default=0, help="also time the Ray pool with this many GPU estimators")
    ap.add_argument("--tune", action="store_true", help="first pick the Triton launch config on the first case")
    ap.add_argument("--gpus", default="", help="only time the cases on 1, 2, ... GPU TEEstimators, e.g. '1,2'")
    ap.add_argument("--strips", default="", help="only time the pruned kernel's 1-D vs 2-D k-NN layouts, e.g. '128,512'")
    ap.add_argument("--wins", default="32,64", help="phase-A windows tried with each --strips strip")
    ap.add_argument("--out", default="runs/te_bench")
    args = ap.parse_args(argv)
    from actors.common.storage import atomic_write_bytes, atomic_write_json

    cases = [tuple(int(v) for v in c.split("x")) for c in args.cases.split(",")]
    surr = [int(s) for s in args.surrogates.split(",")]
    if args.strips:
        return main_layouts(cases, surr, [int(v) for v in args.strips.split(",")],
                            [int(v) for v in args.wins.split(",")], Path(args.out))
    if args.gpus:
        return main_multi_gpu(cases, surr, [int(g) for g in args.gpus.split(",")], Path(args.out))
    cores = os.cpu_count() or 1
    rng = np.random.default_rng(0)
    env = environment()
    rows = []
    with ProcessPoolExecutor(max_workers=cores, mp_context=get_context("spawn")) as pool:
        list(pool.map(_warm, range(cores)))
        # compile the kernels outside the timed region
        warm = network_data(4, 200)
        device_network_time(warm, [(0, 1), (1, 0)], args.backend, 1, 1.0, rng)
        if args.tune:
            env["triton_config"] = tune_kernel(network_data(*cases[0]))
            os.environ["ATTRACTOR_TE_PRUNED_CONFIG"] = json.dumps(env["triton_config"]["pruned"])   # for Ray workers
            print("triton launch config:", env["triton_config"], flush=True)
        for n_vars, length in cases:
            data = network_data(n_vars, length)
            pairs = [(i, j) for i in range(n_vars) for j in range(n_vars) if i != j]
            for s in surr:
                row = {"N": n_vars, "T": length, "S": s, "pairs": len(pairs)}
                row["triton"] = device_network_time(data, pairs, args.backend, s, args.budget, rng)
                if args.backend == "triton" and _cuda() and len(pairs) * (s + 1) <= 4_000_000:
                    row["kernel"] = kernel_times(data, s)
                    if s == 0:
                        row["stages_ms"] = host_breakdown(data)
                        # both warm: the headline should be the stages plus pairs_te_arrays' own overhead
                        row["headline_vs_stages"] = row["triton"]["seconds"] * 1e3 / sum(row["stages_ms"].values())
                        print("stages (ms):", json.dumps(row["stages_ms"]),
                              f"headline / stages: {row['headline_vs_stages']:.2f}", flush=True)
                if args.twin_budget > 0:
                    row["torch"] = device_network_time(data, pairs, "torch", s, args.twin_budget, rng)
                cpu = cpu_network_time(pool, cores, data, pairs, s, rng)
                row["max_dte"] = max_te_error(data, cpu.pop("te"), args.backend)
                row["cpu"] = cpu
                rows.append(row)
                print(json.dumps(row), flush=True)
            if args.workers:
                rows[-1]["ray"] = ray_pool_time(data, surr[-1], args.workers)
                print(json.dumps(rows[-1]["ray"]), flush=True)
    md = table(rows, env) + kernel_table(rows) + stages_table(rows)
    for r in rows:
        if "ray" in r:
            md += (f"\nRay pool, N={r['N']}, T={r['T']}, S={r['ray']['surrogates']}: {r['ray']['workers']} GPU "
                   f"TEEstimator(s), {_fmt(r['ray']['seconds'])} wall (actors warm).\n")
    print(md)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "te_bench.md", md.encode())
    atomic_write_json(out / "te_bench.json", {"env": env, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
