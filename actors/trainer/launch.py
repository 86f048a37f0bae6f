"""Several ranks on one machine without Ray: torch.multiprocessing processes in one gloo/NCCL group.

    from actors.trainer.launch import spawn_train, spawn_runs
    summaries = spawn_train(spec, data_dir, run_dir, world_size=2)   # one summary per rank
    per_rank = spawn_runs([(spec_a, data, dir_a, {}), (spec_b, data, dir_b, {})])  # one start-up

What Ray Train does for its workers (rendezvous, ranks, env vars), done here with a free local port, so
tests and benchmarks can compare strategies across ranks cheaply; production runs use
actors.trainer.pool (Ray Train). An InputError on a rank is re-raised in the caller.
"""
from __future__ import annotations

import os
import pickle
import socket
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from actors.trainer.config import TrainSpec

__all__ = ["spawn_runs", "spawn_train"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, runs: list[tuple[str, str, str, dict[str, Any]]],
            result_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world_size))
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1") or 1))
    out: dict[str, Any]
    try:
        from actors.trainer.engine import train

        cuda = torch.cuda.is_available() and torch.cuda.device_count() >= world_size
        device = torch.device(f"cuda:{rank}") if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world_size)
        try:
            summaries = [train(TrainSpec.model_validate_json(spec_json), data, run_dir, rank=rank,
                               world_size=world_size, device=device, log=None, **kwargs)
                         for spec_json, data, run_dir, kwargs in runs]
        finally:
            dist.destroy_process_group()
        out = {"ok": summaries}
    except BaseException as exc:   # noqa: BLE001 - handed to the parent
        try:
            pickle.dumps(exc)
            err = exc
        except Exception:
            err = RuntimeError(repr(exc))
        out = {"error": err, "traceback": traceback.format_exc()}
    with open(Path(result_dir) / f"rank{rank}.pkl", "wb") as fh:
        pickle.dump(out, fh)


def _join(procs: list[Any], results: Path, timeout_s: float) -> None:
    """Wait for every rank; once one has failed, give the others 10 s (they may block in a collective
    waiting for it) and then terminate them; terminate everything after `timeout_s`."""
    start = time.monotonic()
    failed_at = None
    while any(p.is_alive() for p in procs):
        now = time.monotonic()
        if failed_at is None and any(not p.is_alive() and (p.exitcode != 0 or _failed(results, r))
                                     for r, p in enumerate(procs)):
            failed_at = now
        if (failed_at is not None and now - failed_at > 10) or now - start > timeout_s:
            for p in procs:
                if p.is_alive():
                    p.terminate()
            break
        time.sleep(0.05)
    for p in procs:
        p.join()


def _failed(results: Path, rank: int) -> bool:
    f = results / f"rank{rank}.pkl"
    try:
        return f.exists() and "error" in pickle.loads(f.read_bytes())
    except Exception:
        return True


def spawn_train(spec: TrainSpec, data: str | Path, run_dir: str | Path, *, world_size: int = 2,
                timeout_s: float = 1800, **kwargs: Any) -> list[dict[str, Any]]:
    """engine.train on `world_size` local processes; returns each rank's summary (rank order)."""
    return [per_rank[0] for per_rank in
            spawn_runs([(spec, data, run_dir, kwargs)], world_size=world_size, timeout_s=timeout_s)]


def spawn_runs(runs: list[tuple[TrainSpec, str | Path, str | Path, dict[str, Any]]], *, world_size: int = 2,
               timeout_s: float = 1800) -> list[list[dict[str, Any]]]:
    """Several trainings one after another in the same `world_size` processes (one start-up, one process
    group): runs are (spec, data dir, run dir, train kwargs); returns [rank][run] summaries."""
    with tempfile.TemporaryDirectory(prefix="spawn-train-") as results:
        ctx = mp.get_context("spawn")
        port = _free_port()
        payload = [(spec.model_dump_json(), str(data), str(run_dir), dict(kwargs)) for spec, data, run_dir, kwargs in runs]
        procs = [ctx.Process(target=_worker, args=(r, world_size, port, payload, results)) for r in range(world_size)]
        for p in procs:
            p.start()
        _join(procs, Path(results), timeout_s)
        outs = []
        for r in range(world_size):
            f = Path(results) / f"rank{r}.pkl"
            if not f.exists():
                raise RuntimeError(f"rank {r} died (exit code {procs[r].exitcode}) without a result")
            outs.append(pickle.loads(f.read_bytes()))
    for o in outs:
        if "error" in o:
            err = o["error"]
            from actors.common.errors import InputError

            if isinstance(err, InputError):
                raise err
            raise RuntimeError(f"a rank failed:\n{o['traceback']}") from err
    return [o["ok"] for o in outs]
