"""Trainer throughput per strategy: tokens/s, MFU and the step-time breakdown of DDP, FSDP2 and ZeRO-3.

    python -m jobs.bench.trainer --out runs/bench_trainer                         # tiny CPU MLP, 1 and 2 ranks
    python -m jobs.bench.trainer --config configs/train/neurofmx_100m.yaml --data DIR --world-sizes 1 \\
        --steps 30 --out DIR                                                    # a real model on a GPU machine
    ... --set batch_size=256 model.cfg.scan=chunked                             # the same with spec overrides

Each (strategy, world size) row trains the same spec from the same initial weights on the same shards
(engine.train in this process for 1 rank, actors.trainer.launch for more: one process per rank on one
machine, gloo on the CPU, NCCL on GPUs) with `timing` on (the device is synchronised around each
phase). The first --warmup steps are dropped; the row is the median of the rest:
- step time and its parts: data (next batch + copy to the device), forward (including the loss),
  backward, optimizer (clipping, update; ZeRO-3's and FSDP2's communication lands in backward/optimizer);
- tokens/s: tokens per global step (the model's "tokens" output, else samples) / step time;
- MFU: achieved FLOP/s / peak FLOP/s. FLOPs per step are counted once by torch.utils.flop_counter on a
  forward + backward of the plain model on one global batch (ops it does not know, e.g. a fused GRU or an
  elementwise scan, are not counted: then 6 x parameters x tokens is used and the row says so). Peak: on
  a GPU the vendor's dense bf16 (or fp32) figure for the device when listed, else a measured matmul; on
  the CPU a measured fp32 matmul (2048 x 2048, same threads per rank) x ranks — MFU against what this
  machine's BLAS reaches, not a datasheet number.
Writes DIR/trainer_bench.md and DIR/trainer_bench.json (date, machine, versions, command).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from jobs.bench.lib import gpu_name, md_table, module_versions, utc_stamp

# dense peak FLOP/s per GPU (NVIDIA datasheets, without sparsity): bf16, fp32
PEAKS = {"H200": (989e12, 67e12), "H100": (989e12, 67e12), "A100": (312e12, 19.5e12)}

DEFAULT_SPEC = {"model": {"name": "mlp_regression", "cfg": {"d_in": 256, "d_out": 256, "hidden": [1024, 1024]}},
                "steps": 25, "batch_size": 64, "optimizer": {"lr": 1e-3}, "checkpoint": {"every": 100000, "keep": 1},
                "log_every": 1}


def synthetic_data(spec: Any, out: Path, n: int) -> Path:
    """Shards of random x / y for the toy regression models (mlp_regression, gru_regression)."""
    from actors.trainer.shards import write_shards

    cfg = spec.model.cfg
    rng = np.random.default_rng(0)
    if spec.model.name == "gru_regression":
        t = int(cfg.get("seq_len", 32))
        shape_x, shape_y = (t, int(cfg.get("d_in", 4))), (t, int(cfg.get("d_out", 2)))
    elif spec.model.name == "mlp_regression":
        shape_x, shape_y = (int(cfg.get("d_in", 8)),), (int(cfg.get("d_out", 1)),)
    else:
        raise SystemExit(f"no synthetic data for model {spec.model.name!r}: pass --data DIR")
    write_shards(({"x": rng.normal(size=shape_x).astype(np.float32), "y": rng.normal(size=shape_y).astype(np.float32)}
                  for _ in range(n)), out, shard_size=1000)
    return out


def model_and_batch(spec: Any, data: Path, device: str) -> tuple[Any, dict[str, Any]]:
    """The spec's plain model (seed 0) and the first global batch of `data`, both on `device`."""
    import torch

    from actors.trainer.registry import build_model
    from actors.trainer.shards import ShardDataset

    torch.manual_seed(0)
    model = build_model(spec.model.name, spec.model.cfg).to(device)
    batch = next(ShardDataset(data).batches(0, 1, spec.batch_size, 0))
    return model, {k: torch.from_numpy(v).to(device) for k, v in batch.items()}


COUNT_BATCH = 128   # the largest batch whose FLOPs are counted directly (see count_flops)


def count_flops(spec: Any, data: Path, device: str, memo: dict[str, tuple[float, str]] | None = None
                ) -> tuple[float, str]:
    """(FLOPs of one forward + backward on one global batch, how they were counted). The count runs the
    model eagerly, which holds more activations than the compiled step it describes (at batch 384 the
    100M model's eager step does not fit in 80 GB): a larger batch is counted on its first COUNT_BATCH
    samples and scaled by the batch ratio (every op is per sample but the contrastive logits, B x B x
    proj_dim: under 0.01 % of the step at the 100M size). `memo`: counts by `_flop_key` of the spec
    counted, so variants that share it (another strategy, `compile`, or batches over COUNT_BATCH of one
    model) are counted once."""
    if spec.batch_size > COUNT_BATCH:
        flops, how = count_flops(spec.model_copy(update={"batch_size": COUNT_BATCH}), data, device, memo)
        return flops * spec.batch_size / COUNT_BATCH, f"{how} on {COUNT_BATCH} samples x {spec.batch_size / COUNT_BATCH:g}"
    key = _flop_key(spec)
    if memo is not None and key in memo:
        return memo[key]
    result = _count_flops(spec, data, device)
    if memo is not None:
        memo[key] = result
    return result


def _count_flops(spec: Any, data: Path, device: str) -> tuple[float, str]:
    """count_flops of one batch, counted (no scaling, no memo)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model, batch = model_and_batch(spec, data, device)
    counter = FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: conv_backward_flops})
    # torch.compile'd parts run eagerly here: the same arithmetic, counted op by op
    with torch.compiler.set_stance("force_eager"), counter:
        out = model(batch, 0)
        out["loss"].backward()
    flops = float(counter.get_total_flops())
    tokens = float(out["tokens"]) if "tokens" in out else float(spec.batch_size)
    estimate = 6.0 * sum(p.numel() for p in model.parameters()) * tokens
    del model, out, counter
    if device == "cuda":   # the counted step's memory goes back before the timed rows
        torch.cuda.empty_cache()
    if flops < 0.5 * estimate:   # ops the counter does not know: the dense-parameter estimate
        return estimate, "6*params*tokens"
    return flops, "flop_counter"


def conv_backward_flops(grad_out_shape: Any, x_shape: Any, w_shape: Any, _bias: Any, _stride: Any, _padding: Any,
                        _dilation: Any, transposed: bool, _output_padding: Any, _groups: Any, output_mask: Any,
                        out_shape: Any = None, **_: Any) -> int:
    """FLOPs of a convolution's backward: each gradient asked for (input, weight) costs what the forward did.
    torch's own formula (2.11, 2.13) counts the weight gradient of a grouped conv as if it were dense — a
    depthwise Conv1d over C channels C times over (the eager Mamba blocks' conv: 4.96e13 FLOPs per 100M step
    instead of 3.06e13, which inflated those rows' MFU)."""
    from torch.utils.flop_counter import conv_flop_count

    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def profile_step(spec: Any, data: Path, device: str, bf16: bool, top: int = 25) -> str:
    """torch.profiler's table of one forward + backward of the plain model on one global batch (after
    three unprofiled ones), the `top` ops by device time (CPU time on the CPU): where a step goes."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    model, batch = model_and_batch(spec, data, device)

    def step() -> None:
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            loss = model(batch, 0)["loss"]
        loss.backward()
        model.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
        if device == "cuda":
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=top, max_name_column_width=60)


def peak_flops(device: str, bf16: bool, threads: int) -> tuple[float, str]:
    import torch

    if device == "cuda":
        name = gpu_name()
        for key, (p16, p32) in PEAKS.items():
            if key in name:
                return (p16 if bf16 else p32), f"{key} datasheet ({'bf16' if bf16 else 'fp32'} dense)"
    dtype = torch.bfloat16 if (bf16 and device == "cuda") else torch.float32
    n = 4096 if device == "cuda" else 2048
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        best = float("inf")
        for _ in range(5):
            if device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            a @ b
            if device == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t)
    finally:
        torch.set_num_threads(old)
    return 2 * n ** 3 / best, f"measured {n}^3 {str(dtype).split('.')[-1]} matmul, {threads} thread(s)"


def row_from_metrics(rows: list[dict[str, Any]], warmup: int) -> dict[str, float]:
    timed = [r for r in rows if r["step"] > warmup]
    med = {k: statistics.median(r[k] for r in timed) for k in
           ("time_step", "time_data", "time_forward", "time_backward", "time_optimizer", "tokens")}
    med["loss_last"] = rows[-1]["loss"]
    med["timed_steps"] = len(timed)
    return med


def run_case(spec: Any, data: Path, out: Path, world: int) -> list[dict[str, Any]]:
    from actors.trainer.engine import read_metrics, train
    from actors.trainer.launch import spawn_train

    if world == 1:
        train(spec, data, out, timing=True, log=None)
    else:
        spawn_train(spec, data, out, world_size=world, timing=True)
    return read_metrics(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--config", help="train YAML (default: a tiny CPU MLP)")
    ap.add_argument("--data", help="shard directory (default: synthetic shards for the toy models)")
    ap.add_argument("--strategies", default="ddp,fsdp2,deepspeed_zero3")
    ap.add_argument("--world-sizes", default="1,2", help="ranks per row, e.g. 1,2")
    ap.add_argument("--steps", type=int, default=None, help="steps per row (default: the spec's)")
    ap.add_argument("--warmup", type=int, default=5, help="steps dropped before the median")
    ap.add_argument("--samples", type=int, default=4096, help="synthetic samples")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="override spec fields, e.g. batch_size=256 model.cfg.scan=chunked")
    ap.add_argument("--variant", action="append", default=[], metavar="LABEL:KEY=VALUE[,KEY=VALUE...]",
                    help="rows of every strategy (or of the one it sets with strategy=...) again with these overrides "
                         "on top of --set, in this process (kernels compiled and autotuned once), e.g. "
                         "eager:model.cfg.compile=false")
    ap.add_argument("--profile", action="store_true", help="append torch.profiler's top ops of one step")
    args = ap.parse_args(argv)

    import torch

    from actors.common.config import apply_overrides
    from actors.trainer.config import TrainSpec
    from actors.trainer.engine import resolve_precision
    from jobs import cli

    raw = cli.read_yaml(args.config) if args.config else json.loads(json.dumps(DEFAULT_SPEC))
    raw = apply_overrides(raw, cli.parse_set(args.set))
    raw["log_every"] = 1   # every step's timing is a row of the median
    if args.steps:
        raw["steps"] = args.steps
        # a throughput row needs no learning-rate schedule: a warm-up longer than the row is cut to fit
        sched = raw.get("scheduler") or {}
        if int(sched.get("warmup_steps", 0)) > args.steps:
            raw["scheduler"] = {**sched, "warmup_steps": args.steps}
    spec0 = TrainSpec.model_validate(raw)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-trainer-", dir=out))
    data = Path(args.data) if args.data else synthetic_data(spec0, tmp / "data", args.samples)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    threads = int(os.environ.get("OMP_NUM_THREADS", "1") or 1)
    torch.set_num_threads(threads)
    bf16 = resolve_precision(spec0, torch.device(device))
    flops_of: dict[str, tuple[float, str]] = {}
    flops, flop_method = count_flops(spec0, data, device, flops_of)
    peak1, peak_method = peak_flops(device, bf16, threads)

    variants = [parse_variant(v) for v in args.variant] or [("", {})]
    results: list[dict[str, Any]] = []
    env = {"date": utc_stamp(), "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
           "cpus": os.cpu_count(), "gpu": gpu_name(), "threads_per_rank": threads, "device": device, "bf16": bf16,
           "versions": module_versions(["torch", "ray", "deepspeed", "numpy"]),
           "command": "python -m jobs.bench.trainer " + " ".join(argv if argv is not None else sys.argv[1:])}
    for label, overrides in variants:
        spec_v = TrainSpec.model_validate(apply_overrides(spec0.model_dump(mode="json"), overrides))
        flops_v = count_flops(spec_v, data, device, flops_of)[0]   # another batch or model: its own count
        for world in [int(w) for w in args.world_sizes.split(",")]:
            # a variant that sets `strategy` is a row of that strategy only
            for strategy in [overrides["strategy"]] if "strategy" in overrides else args.strategies.split(","):
                results.append(bench_row(spec_v.model_copy(update={"strategy": strategy}), label, world, data,
                                         tmp, flops_v, peak1, args.warmup, device))
                text = write_report(out, env, spec0, args, flops, flop_method, peak1, peak_method, results)
    if args.profile:
        text += f"\n## One step, torch.profiler (plain model, one global batch)\n\n```\n{profile_step(spec0, data, device, bf16)}\n```\n"
        (out / "trainer_bench.md").write_text(text)
    print(text, flush=True)
    return 0


def _flop_key(spec: Any) -> str:
    """What a step's counted FLOPs depend on: the model and the global batch — not the strategy, nor
    `model.cfg.compile` (count_flops runs the compiled parts eagerly: the same ops)."""
    model = spec.model.model_dump(mode="json")
    model["cfg"] = {k: v for k, v in (model.get("cfg") or {}).items() if k != "compile"}
    return json.dumps([model, spec.batch_size], sort_keys=True)


def bench_row(spec: Any, label: str, world: int, data: Path, tmp: Path, flops: float, peak1: float,
              warmup: int, device: str = "cpu") -> dict[str, Any]:
    """One (variant, strategy, ranks) row: its medians, tokens/s and MFU, or the error that stopped it."""
    import torch

    head = {"variant": label, "strategy": spec.strategy, "world_size": world}
    name = f"{label + '-' if label else ''}{spec.strategy}-{world}"
    t0 = time.perf_counter()
    cuda = world == 1 and device == "cuda"
    if cuda:   # peak memory of this row alone (one rank runs in this process)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        rows = run_case(spec, data, tmp / name, world)
    except Exception as exc:   # noqa: BLE001 - a strategy that cannot run here is a row, not a crash
        print(f"{name}: {type(exc).__name__}: {exc}", flush=True)
        return {**head, "error": f"{type(exc).__name__}: {exc}"[:300]}
    med = row_from_metrics(rows, warmup)
    achieved = flops / med["time_step"]
    row = {**head, **med, "tokens_per_s": med["tokens"] / med["time_step"], "flops_per_step": flops,
           "batch_size": spec.batch_size, "achieved_flops": achieved,
           "mfu": achieved / (peak1 * world), "wall_s": time.perf_counter() - t0}
    if cuda:
        row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    print(f"{name}: {row['tokens_per_s']:.0f} tokens/s, step {1e3 * med['time_step']:.1f} ms, "
          f"MFU {100 * row['mfu']:.1f}%" + (f", peak {row['peak_gib']:.1f} GiB" if cuda else ""), flush=True)
    return row


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """'LABEL:KEY=VALUE,KEY=VALUE' -> (LABEL, overrides)."""
    from jobs import cli

    label, sep, rest = text.partition(":")
    if not sep or not label:
        raise SystemExit(f"--variant {text!r}: expected LABEL:KEY=VALUE[,KEY=VALUE...]")
    return label, cli.parse_set([kv for kv in rest.split(",") if kv])


def write_report(out: Path, env: dict[str, Any], spec0: Any, args: argparse.Namespace, flops: float,
                 flop_method: str, peak1: float, peak_method: str, results: list[dict[str, Any]]) -> str:
    """DIR/trainer_bench.md and .json with the rows so far (rewritten after each row: a run cut short keeps them)."""
    first = ["variant"] if args.variant else []
    header = first + ["strategy", "ranks", "tokens/s", "step ms", "data ms", "fwd ms", "bwd ms", "opt ms", "MFU",
                      "last loss", "peak GiB"]
    lines = []
    for r in results:
        head = ([r["variant"]] if args.variant else []) + [r["strategy"], r["world_size"]]
        if "error" in r:
            lines.append(head + ["error: " + r["error"]] + [""] * 8)
        else:
            peak = f"{r['peak_gib']:.1f}" if "peak_gib" in r else ""   # CUDA, one rank
            lines.append(head + [f"{r['tokens_per_s']:.0f}", f"{1e3 * r['time_step']:.1f}",
                                 f"{1e3 * r['time_data']:.2f}", f"{1e3 * r['time_forward']:.1f}",
                                 f"{1e3 * r['time_backward']:.1f}", f"{1e3 * r['time_optimizer']:.1f}",
                                 f"{100 * r['mfu']:.1f}%", f"{r['loss_last']:.4g}", peak])
    doc = {"env": env, "spec": spec0.model_dump(mode="json"), "variants": args.variant, "flops_per_step": flops,
           "flop_method": flop_method, "peak_flops_per_rank": peak1, "peak_method": peak_method, "rows": results}
    (out / "trainer_bench.json").write_text(json.dumps(doc, indent=2) + "\n")
    text = (f"# Trainer benchmark\n\n{env['date']}, {env['machine']}, {env['cpus']} CPUs, GPU {env['gpu']}, "
            f"{env['threads_per_rank']} thread(s) per rank, versions {env['versions']}\n\n`{env['command']}`\n\n"
            f"Model {spec0.model.name} {spec0.model.cfg}, global batch {spec0.batch_size}, {spec0.steps} steps "
            f"({args.warmup} warm-up dropped, medians). FLOPs/step {flops:.3g} ({flop_method}; counted again for a "
            f"variant of another batch or model); peak per rank {peak1:.3g} FLOP/s ({peak_method}).\n\n{md_table(header, lines)}\n")
    (out / "trainer_bench.md").write_text(text)
    return text


if __name__ == "__main__":
    sys.exit(main())
