"""Ray Train entry points: `run_training(spec, data, out)` runs engine.train on TorchTrainer workers.

    from actors.trainer.pool import run_training
    summary = run_training(spec, "data/lorenz", "runs/train")                  # a new, uniquely named run
    summary = run_training(spec, "data/lorenz", "runs/train", resume=True)     # continue the latest run
    summary = run_training(spec, "data/lorenz", "runs/train", resume="mlp-20261202-101500-3f9a2c")

A run lives in `<out>/<run name>/` (Ray Train's storage_path / name): run.json (spec, identity, data
fingerprint), checkpoints/ckpt-<step>/ (the engine's atomic checkpoints, registered with Ray Train
through `ray.train.report(..., checkpoint_upload_mode=NO_UPLOAD)`: no copy), metrics.jsonl,
loss.png, summary.json. Every new run gets a new name, so Ray Train never silently resumes an old run
with the same RunConfig(name, storage_path); only `resume` reuses a name, after checking that the run
trains the same model on the same data in the same order. `FailureConfig(max_failures)` restarts the
worker group after a worker dies; each worker then resumes from `ray.train.get_checkpoint()` (the
latest checkpoint) with the saved RNG streams and data cursor, so the loss curve continues exactly.
Workers are sized like every pool (WorkerConfig): `num_workers: auto` is one per GPU, or per
`num_cpus` CPUs; CPU workers use gloo, GPU workers NCCL.
"""
from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from actors.common.errors import InputError
from actors.common.storage import atomic_write_json
from actors.common.worker import SECONDS_BOUNDARIES, resolve_worker_resources
from actors.trainer import checkpoint as ck
from actors.trainer.config import TrainSpec
from actors.trainer.engine import read_events, read_metrics
from actors.trainer.plots import write_loss_curve
from actors.trainer.shards import ShardDataset

__all__ = ["find_run", "new_run_name", "run_training", "train_loop_per_worker"]

RUN_FILE = "run.json"


def new_run_name(prefix: str) -> str:
    """`<prefix>-<UTC time>-<6 hex>`: unique, sortable by start time."""
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in prefix)[:60] or "run"
    return f"{safe}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"


def find_run(out: Path, name: str | None = None) -> Path:
    """The run directory to resume: `name` under `out`, or the newest run there (by run.json time)."""
    out = Path(out)
    if name:
        run = out / name
        if not (run / RUN_FILE).is_file():
            runs = sorted(p.name for p in out.glob(f"*/{RUN_FILE}"))
            raise InputError("resume", f"no run {name!r} in {out}", ", ".join(p.split("/")[0] for p in runs) or "none")
        return run
    runs = [(json.loads(p.read_text()).get("created", 0), p.parent) for p in out.glob(f"*/{RUN_FILE}")]
    if not runs:
        raise InputError("resume", f"{out} holds no run to resume", "an --out directory of an earlier run")
    return max(runs)[1]


def _identity(spec: TrainSpec, ds: ShardDataset) -> dict[str, Any]:
    return {"model": spec.model.model_dump(mode="json"), "batch_size": spec.batch_size, "seed": spec.seed,
            "shuffle": spec.shuffle, "data": ds.fingerprint}


def _input_error(exc: BaseException) -> InputError | None:
    """An InputError raised in a worker, found in a TrainingFailedError's causes."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, InputError):
            return e
        todo += [e.__cause__, e.__context__, getattr(e, "cause", None)]
        todo += list(getattr(e, "worker_failures", {}).values()) if isinstance(getattr(e, "worker_failures", None), dict) else []
        if isinstance(getattr(e, "exceptions", None), (list, tuple)):
            todo += list(e.exceptions)
    return None


def _resume_point(restored: Any, config: dict[str, Any]) -> str | None:
    """The newest of: Ray Train's latest registered checkpoint, the run's `resume_from`, and the newest
    complete checkpoint in the run directory. A restart can come before Ray Train's controller has
    registered the last reported checkpoint (reports are collected by polling the workers; a worker
    that dies right after a report takes it with it), but the engine's atomic checkpoints on disk are
    complete by construction and belong to this run (run directories are never shared)."""
    found: list[tuple[int, str]] = []
    for path in (restored.path if restored is not None else None, config.get("resume_from"),
                 ck.latest_checkpoint(Path(config["run_dir"]) / "checkpoints")):
        if path and (Path(path) / "meta.json").is_file():
            found.append((int(ck.read_meta(Path(path), verify=False)["step"]), str(path)))
    return max(found)[1] if found else None


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """The TorchTrainer worker function: engine.train with Ray Train's rank, device, checkpoint, report."""
    import ray.train
    import ray.train.torch
    from ray.train import Checkpoint
    from ray.train.v2.api.report_config import CheckpointUploadMode
    from ray.util import metrics as ray_metrics

    from actors.trainer.engine import train

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    spec = TrainSpec.model_validate(config["spec"])
    resume_from = _resume_point(ray.train.get_checkpoint(), config)
    tags = {"run": config["run_name"], "rank": str(rank)}
    loss_g = ray_metrics.Gauge("attractor_trainer_loss", "Training loss (mean over ranks).", tag_keys=("run", "rank"))
    step_g = ray_metrics.Gauge("attractor_trainer_step", "Global step.", tag_keys=("run", "rank"))
    tokens_c = ray_metrics.Counter("attractor_trainer_tokens_total", "Tokens trained on.", tag_keys=("run", "rank"))
    step_h = ray_metrics.Histogram("attractor_trainer_step_seconds", "Wall time of one step.",
                                   boundaries=SECONDS_BOUNDARIES, tag_keys=("run", "rank"))
    for m in (loss_g, step_g, tokens_c, step_h):
        m.set_default_tags(tags)

    def report(metrics: dict[str, Any], saved: Path | None) -> None:
        if "loss" in metrics:
            loss_g.set(metrics["loss"])
            step_g.set(metrics["step"])
            tokens_c.inc(metrics["tokens"] / world)
            step_h.observe(metrics["time_step"])
        ckpt = Checkpoint.from_directory(str(saved)) if saved is not None and rank == 0 else None
        ray.train.report(metrics, checkpoint=ckpt, checkpoint_upload_mode=CheckpointUploadMode.NO_UPLOAD)

    train(spec, config["data"], config["run_dir"], rank=rank, world_size=world, device=ray.train.torch.get_device(),
          resume_from=resume_from, report=report, until_step=config.get("until_step"), prune=False,
          log=print if rank == 0 else None)


def make_trainer(spec: TrainSpec, data: Path, run_dir: Path, *, resume_from: str | None = None,
                 until_step: int | None = None, callbacks: list[Any] | None = None) -> Any:
    """The TorchTrainer of one run (storage_path = run_dir's parent, name = run_dir's name)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    n, num_gpus = resolve_worker_resources(spec.workers)
    if spec.batch_size % n:
        raise InputError("batch_size", f"{spec.batch_size} is not divisible by the {n} workers", f"a multiple of {n}")
    resources = {"CPU": spec.workers.num_cpus, **({"GPU": num_gpus} if num_gpus else {})}
    config = {"spec": spec.model_dump(mode="json"), "data": str(data), "run_dir": str(run_dir),
              "run_name": run_dir.name, "resume_from": resume_from, "until_step": until_step}
    return TorchTrainer(
        train_loop_per_worker, train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=n, use_gpu=num_gpus > 0, resources_per_worker=resources),
        torch_config=TorchConfig(backend="nccl" if num_gpus > 0 else "gloo"),
        run_config=RunConfig(name=run_dir.name, storage_path=str(run_dir.parent),
                             failure_config=FailureConfig(max_failures=spec.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=spec.checkpoint.keep),
                             callbacks=callbacks or None))


def prepare_run(spec: TrainSpec, data: str | Path, out: str | Path, resume: bool | str = False,
                name: str | None = None) -> tuple[Path, Path, str | None]:
    """(data dir, run dir, checkpoint to resume from) — a new run dir, or the checked one to resume."""
    data = Path(data).resolve()
    ds = ShardDataset(data)   # missing shards / bad index: an InputError before any worker starts
    out = Path(out).resolve()
    identity = _identity(spec, ds)
    if resume:
        run_dir = find_run(out, resume if isinstance(resume, str) else None)
        saved = json.loads((run_dir / RUN_FILE).read_text())
        for key in ("model", "batch_size", "seed", "shuffle", "data"):
            if saved["identity"][key] != identity[key]:
                field = "data" if key == "data" else ("model" if key == "model" else key)
                raise InputError(field, f"run {run_dir.name} was trained with {key}={saved['identity'][key]!r}, "
                                 f"this spec has {identity[key]!r}", "the resumed run's value")
        latest = ck.latest_checkpoint(run_dir / "checkpoints")
        return data, run_dir, str(latest) if latest else None
    run_dir = out / (name or new_run_name(spec.model.name))
    if run_dir.exists():
        raise InputError("out", f"{run_dir} already exists (a run name is never reused without resume)",
                         "a new run name, or resume")
    run_dir.mkdir(parents=True)
    atomic_write_json(run_dir / RUN_FILE, {"name": run_dir.name, "created": time.time(), "identity": identity,
                                           "spec": spec.model_dump(mode="json"), "data_dir": str(data)})
    return data, run_dir, None


def run_training(spec: TrainSpec, data: str | Path, out: str | Path, *, resume: bool | str = False,
                 name: str | None = None, until_step: int | None = None, callbacks: list[Any] | None = None,
                 on_done: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train on Ray Train; returns the summary also written to <run>/summary.json (and loss.png)."""
    if not ray.is_initialized():
        raise RuntimeError("run_training needs Ray (cluster.connect() first)")
    data, run_dir, resume_from = prepare_run(spec, data, out, resume, name)
    trainer = make_trainer(spec, data, run_dir, resume_from=resume_from, until_step=until_step, callbacks=callbacks)
    t0, wall0 = time.perf_counter(), time.time()
    try:
        result = trainer.fit()
    except Exception as exc:
        err = _input_error(exc)
        if err is not None:
            raise err from None
        raise
    rows = read_metrics(run_dir)
    figure = write_loss_curve(rows, run_dir / "loss.png", title=run_dir.name) if rows else None
    summary = {"run": run_dir.name, "run_dir": str(run_dir), "steps": rows[-1]["step"] if rows else 0,
               "final": rows[-1] if rows else {}, "resumed_from": resume_from,
               "checkpoint": result.checkpoint.path if result.checkpoint else None,
               "latest_checkpoint": str(ck.latest_checkpoint(run_dir / "checkpoints") or ""),
               "strategy": spec.strategy, "wall_s": time.perf_counter() - t0, "loss_png": str(figure) if figure else None,
               "restarts": _restarts(run_dir, wall0)}
    atomic_write_json(run_dir / "summary.json", summary)
    if on_done:
        on_done(summary)
    return summary


def _restarts(run_dir: Path, since: float) -> int:
    """Worker-group starts after the first one since `since` (the engine logs each start in events.jsonl)."""
    starts = [e for e in read_events(run_dir) if e.get("event") == "start" and e.get("time", 0) >= since]
    return max(0, len(starts) - 1)
