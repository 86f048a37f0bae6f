"""The training loop: one function for one process and for every Ray Train worker (no Ray here).

    from actors.trainer.engine import train
    summary = train(spec, data_dir, run_dir)                        # one process
    summary = train(spec, data_dir, run_dir, rank=r, world_size=w,  # inside a worker whose process
                    report=report_fn, resume_from=ckpt)             # group is initialised

Step s (1-based) trains on global batch s-1 of the deterministic shard order: epoch (s-1) // B,
cursor (s-1) % B, where B = full global batches per epoch. Every `checkpoint.every` steps (and at the
last) all ranks write one atomic checkpoint (checkpoint.py) holding the weights, optimizer, schedule
step, RNG streams of every rank and each rank's data cursor, so a resumed run continues with exactly
the batches, random draws and updates the uninterrupted run would have made. Metrics (loss and the
model's other scalars, averaged over ranks; lr, grad norm, tokens, step-time breakdown) go to
`<run>/metrics.jsonl` (rank 0) and to `report(metrics, checkpoint_dir_or_None)` on every rank.
"""
from __future__ import annotations

import json
import math
import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from actors.common.errors import InputError
from actors.trainer import checkpoint as ck
from actors.trainer.config import TrainSpec
from actors.trainer.registry import build_model
from actors.trainer.shards import ShardDataset
from actors.trainer.strategies import Strategy, make_strategy

__all__ = ["Report", "lr_at", "read_events", "read_metrics", "resolve_precision", "train"]

Report = Callable[[dict[str, Any], "Path | None"], None]
METRICS = "metrics.jsonl"
EVENTS = "events.jsonl"
FAILURE_MARKER = ".injected-failure"


def lr_at(spec: TrainSpec, step: int) -> float:
    """The learning rate of update `step` (0-based): linear warmup, then cosine to lr * min_lr_ratio."""
    base, sch = spec.optimizer.lr, spec.scheduler
    if sch.warmup_steps and step < sch.warmup_steps:
        return base * (step + 1) / sch.warmup_steps
    if sch.name == "constant":
        return base
    span = max(1, spec.steps - sch.warmup_steps)
    progress = min(1.0, (step - sch.warmup_steps) / span)
    return base * (sch.min_lr_ratio + (1 - sch.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def resolve_precision(spec: TrainSpec, device: torch.device) -> bool:
    """True for bf16: `auto` is bf16 on CUDA and fp32 on the CPU; bf16 on the CPU is refused."""
    if spec.precision == "auto":
        return device.type == "cuda"
    if spec.precision == "bf16" and device.type != "cuda":
        raise InputError("precision", "bf16 mixed precision needs a CUDA device; the CPU trains in fp32", "auto or fp32")
    return spec.precision == "bf16"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _to_device(batch: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device, non_blocking=True) for k, v in batch.items()}


def _check_output(out: Any, name: str) -> None:
    if not isinstance(out, dict) or "loss" not in out:
        raise InputError("model.name", f"model {name!r} returned {type(out).__name__}, not a dict with key 'loss'",
                         "forward(batch, step) -> {'loss': scalar tensor, ...}")
    for k, v in out.items():
        if not (isinstance(v, torch.Tensor) and v.numel() == 1):
            raise InputError("model.name", f"model {name!r} returned {k!r} that is not a scalar tensor",
                             "scalar tensors only")
    if not out["loss"].requires_grad:
        raise InputError("model.name", f"model {name!r} returned a loss that does not require grad",
                         "a loss computed from the parameters")


def _all_mean(values: torch.Tensor, world_size: int) -> torch.Tensor:
    if world_size > 1:
        dist.all_reduce(values)
        values /= world_size
    return values


def _barrier(world_size: int) -> None:
    if world_size > 1:
        dist.barrier()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _inject_failure(spec: TrainSpec, run_dir: Path, rank: int, step: int) -> None:
    f = spec.inject_failure
    if f is None or f.step != step or f.rank != rank:
        return
    marker = run_dir / FAILURE_MARKER
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)   # once per run directory
    except FileExistsError:
        return
    os.write(fd, f"rank {rank} pid {os.getpid()} step {step}\n".encode())
    os.fsync(fd)
    os.close(fd)
    if f.mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise RuntimeError(f"injected failure: rank {rank} at step {step}")


def _jsonl(path: Path) -> list[dict[str, Any]]:
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:   # a torn last line (a crash mid-append)
                continue
    return out


def read_events(run_dir: Path) -> list[dict[str, Any]]:
    """The run's start events (one per process-group start: fresh, resumed, or restarted by Ray)."""
    return _jsonl(Path(run_dir) / EVENTS)


def _append(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(row) + "\n")


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The run's logged steps in step order; a step logged twice (replayed after a restart) keeps the
    last record, and a torn last line (a crash mid-append) is skipped."""
    rows = {int(r["step"]): r for r in _jsonl(Path(run_dir) / METRICS)}
    return [rows[k] for k in sorted(rows)]


class _Batches:
    """Rank r's batches over epochs from a step, in the shard order of ShardDataset.batches."""

    def __init__(self, ds: ShardDataset, spec: TrainSpec, rank: int, world_size: int):
        self.ds, self.spec, self.rank, self.world_size = ds, spec, rank, world_size
        self.per_rank = spec.batch_size // world_size
        self.per_epoch = ds.batches_per_epoch(world_size, self.per_rank)
        if self.per_epoch == 0:
            raise InputError("batch_size", f"{spec.batch_size} is more than the {ds.num_samples} samples of "
                             f"{ds.directory}", f"<= {ds.num_samples}")
        self._it: Iterator[dict[str, np.ndarray]] | None = None
        self._epoch = -1

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, cursor) of 0-based update `step`."""
        return divmod(step, self.per_epoch)

    def get(self, step: int) -> dict[str, np.ndarray]:
        epoch, cursor = self.position(step)
        if self._it is None or epoch != self._epoch or cursor != self._next:
            self._it = self.ds.batches(self.rank, self.world_size, self.per_rank, epoch, cursor,
                                       seed=self.spec.seed, shuffle=self.spec.shuffle)
            self._epoch = epoch
        self._next = cursor + 1
        return next(self._it)


def train(spec: TrainSpec, data_dir: str | Path, run_dir: str | Path, *, rank: int = 0, world_size: int = 1,
          device: torch.device | str | None = None, resume_from: str | Path | None = None,
          report: Report | None = None, until_step: int | None = None, prune: bool = True,
          timing: bool = False, log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Train `spec` on the shards in `data_dir`, checkpoints and metrics under `run_dir`.

    `rank` / `world_size`: this process in an initialised torch.distributed group (Ray Train sets it
    up). `resume_from`: a checkpoint directory to continue from (checked: same model, data and data
    order). `report(metrics, ckpt)`: called on every rank at each logged step and each checkpoint (Ray
    Train's report). `until_step`: stop after this step (default spec.steps; PBT rounds). `prune`:
    delete checkpoints beyond `checkpoint.keep` (Ray Train prunes its own when False). `timing`:
    synchronise CUDA around each phase for an exact step-time breakdown. Returns a summary dict.
    """
    run_dir = Path(run_dir)
    ckpt_root = run_dir / "checkpoints"
    if world_size < 1 or not 0 <= rank < world_size:
        raise InputError("rank", f"{rank} of {world_size}", "0 <= rank < world_size")
    if spec.batch_size % world_size:
        raise InputError("batch_size", f"{spec.batch_size} is not divisible by {world_size} workers",
                         f"a multiple of {world_size}")
    until = spec.steps if until_step is None else min(int(until_step), spec.steps)
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bf16 = resolve_precision(spec, device)
    ds = ShardDataset(data_dir)
    batches = _Batches(ds, spec, rank, world_size)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        ck.remove_stale(ckpt_root)
    _barrier(world_size)

    seed_everything(spec.seed)   # identical initial weights on every rank and under every strategy
    model = build_model(spec.model.name, spec.model.cfg)
    fingerprint = ck.model_fingerprint(spec.model.name, spec.model.cfg, model)
    identity = spec.identity()
    if resume_from is not None:   # refuse a foreign checkpoint before any strategy starts
        path = Path(resume_from)
        meta = ck.read_meta(path)
        ck.check_compatible(meta, path, model=fingerprint, data=ds.fingerprint, identity=identity,
                            strategy=spec.strategy, world_size=world_size)
    strategy: Strategy = make_strategy(model, spec, device, rank, world_size, bf16)

    step = 0
    resumed_from = None
    if resume_from is not None:
        strategy.load(path)
        step = int(meta["step"])
        rng_file = path / f"rng-rank{rank}.pt"
        if not rng_file.exists():   # another world size: every rank continues rank 0's streams
            rng_file = path / "rng-rank0.pt"
        ck.restore_rng(torch.load(rng_file, weights_only=False))
        resumed_from = str(path)
        if log and rank == 0:
            log(f"resumed from {path} at step {step}")
    if rank == 0:
        _append(run_dir / EVENTS, {"event": "start", "time": time.time(), "step": step, "resumed_from": resumed_from,
                                   "world_size": world_size, "strategy": spec.strategy, "pid": os.getpid()})

    n_params = strategy.num_parameters()
    tokens_total = 0.0
    t_start = time.perf_counter()
    last: dict[str, Any] = {}
    checkpoints: list[str] = []
    first = True
    while step < until:
        _inject_failure(spec, run_dir, rank, step + 1)
        t0 = time.perf_counter()
        epoch, cursor = batches.position(step)
        batch = _to_device(batches.get(step), device)
        if timing:
            _sync(device)
        t1 = time.perf_counter()
        out = strategy.forward(batch, step)
        if first:
            _check_output(out, spec.model.name)
            first = False
        loss = out["loss"]
        if timing:
            _sync(device)
        t2 = time.perf_counter()
        strategy.backward(loss)
        if timing:
            _sync(device)
        t3 = time.perf_counter()
        lr = lr_at(spec, step)
        grad_norm = strategy.step(lr)
        if timing:
            _sync(device)
        t4 = time.perf_counter()
        step += 1

        tokens_total += float(out["tokens"]) if "tokens" in out else float(batches.per_rank)
        logged = step % spec.log_every == 0 or step == until
        reported = report is not None and (step % spec.report_every == 0 or step % spec.checkpoint.every == 0
                                           or step == until)
        if logged or reported:
            names = sorted(k for k in out if k != "tokens")
            tokens = float(out["tokens"]) if "tokens" in out else float(batches.per_rank)
            vals = torch.tensor([float(out[k].detach().float()) for k in names] + [tokens], dtype=torch.float64)
            vals = _all_mean(vals, world_size)
            metrics = {k: float(v) for k, v in zip(names, vals[:-1].tolist())}
            step_tokens = float(vals[-1]) * world_size
            metrics.update(step=step, epoch=epoch, cursor=cursor, lr=lr, grad_norm=grad_norm,
                           tokens=step_tokens, time_data=t1 - t0, time_forward=t2 - t1, time_backward=t3 - t2,
                           time_optimizer=t4 - t3, time_step=t4 - t0, elapsed=time.perf_counter() - t_start)
            last = metrics
            if rank == 0 and logged:
                _append(run_dir / METRICS, metrics)
                if log:
                    log(f"step {step}/{spec.steps} loss {metrics['loss']:.6g} lr {lr:.3g} "
                        f"{step_tokens / max(t4 - t0, 1e-12):.1f} tokens/s")
        saved = _maybe_checkpoint(spec, strategy, step, until, batches, run_dir, ckpt_root, rank, world_size,
                                  fingerprint, ds, identity, prune)
        if saved is not None:
            checkpoints.append(str(saved))
        if reported:
            report(metrics, saved)
    return {"steps": step, "resumed_from": resumed_from, "final": last, "checkpoints": checkpoints,
            "latest_checkpoint": str(ck.latest_checkpoint(ckpt_root) or ""), "num_parameters": n_params,
            "world_size": world_size, "strategy": spec.strategy, "bf16": bf16, "device": str(device),
            "wall_s": time.perf_counter() - t_start, "tokens": tokens_total * world_size}


def _maybe_checkpoint(spec: TrainSpec, strategy: Strategy, step: int, until: int, batches: _Batches, run_dir: Path,
                      ckpt_root: Path, rank: int, world_size: int, fingerprint: dict[str, Any], ds: ShardDataset,
                      identity: dict[str, Any], prune: bool) -> Path | None:
    if step % spec.checkpoint.every and step != until:
        return None
    tmp = ck.temp_checkpoint_dir(ckpt_root, step)
    if rank == 0:
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    _barrier(world_size)
    strategy.save(tmp, rank)
    torch.save(ck.capture_rng(), tmp / f"rng-rank{rank}.pt")
    epoch, cursor = batches.position(step)
    _barrier(world_size)
    final = None
    if rank == 0:
        meta = {"step": step, "model": fingerprint, "strategy": spec.strategy, "world_size": world_size,
                "identity": identity, "data": ds.fingerprint,
                "schedule": {"name": spec.scheduler.name, "next_lr": lr_at(spec, step) if step < spec.steps else None},
                "cursors": [{"rank": r, "epoch": epoch, "cursor": cursor} for r in range(world_size)],
                "spec": spec.model_dump(mode="json"), "time": time.time()}
        final = ck.commit_checkpoint(tmp, meta)
        if prune:
            ck.prune_checkpoints(ckpt_root, spec.checkpoint.keep)
    _barrier(world_size)
    return final if final is not None else ckpt_root / ck.ckpt_name(step)
