"""The sweep pool: find or create named SweepWorkers, shard a grid into chunks, write each chunk
atomically, skip chunks already on disk, and merge the result.

Load balancing is pull-based: each worker keeps `inflight` chunks queued and gets the next one as
soon as one returns, so fast and slow workers (or GPUs) finish together.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray
from ray.actor import ActorHandle

from actors.common.errors import InputError
from actors.common.storage import atomic_write_json, atomic_write_parquet
from actors.sweep.actor import remote_worker_class
from actors.sweep.config import SweepSpec, WorkerConfig

WORKER_PREFIX = "sweep-worker"


def chunk_path(out_dir: Path, index: int) -> Path:
    return out_dir / "chunks" / f"chunk-{index:06d}.parquet"


def finished_chunks(out_dir: Path, n_chunks: int) -> set[int]:
    """Chunks already written (a readable Parquet footer is the proof of completion)."""
    import pyarrow as pa

    done = set()
    for i in range(n_chunks):
        p = chunk_path(out_dir, i)
        if p.exists():
            try:
                pq.read_metadata(p)
                done.add(i)
            except (pa.ArrowInvalid, OSError):
                p.unlink(missing_ok=True)  # torn write from a non-atomic copy: recompute
    return done


@dataclass
class SweepSummary:
    name: str
    model: str
    out_dir: str
    n_points: int
    n_chunks: int
    chunks_computed: int
    chunks_skipped: int
    wall_seconds: float
    trajectories_per_second: float | None
    workers: list[dict] = field(default_factory=list)
    regime_counts: dict[str, int] = field(default_factory=dict)
    attractor_counts: dict[str, int] = field(default_factory=dict)
    chunks_per_worker: list[int] = field(default_factory=list)   # computed this run, by worker index
    backends: list[str] = field(default_factory=list)            # backends that produced the rows
    spectra: str | None = None                                   # spectra.parquet, when analysed


def resolve_worker_resources(cfg: WorkerConfig) -> tuple[int, float]:
    """(number of workers, GPUs per worker) for this cluster: one actor per GPU when there are GPUs."""
    total_gpus = int(ray.cluster_resources().get("GPU", 0))
    num_gpus = (1.0 if total_gpus > 0 else 0.0) if cfg.num_gpus == "auto" else float(cfg.num_gpus)
    if cfg.num_workers != "auto":
        return int(cfg.num_workers), num_gpus
    if num_gpus > 0:
        return max(1, int(total_gpus // num_gpus)), num_gpus
    total_cpus = int(ray.cluster_resources().get("CPU", 1))
    return max(1, int(total_cpus // cfg.num_cpus)), 0.0


def workers(cfg: WorkerConfig) -> list[ActorHandle]:
    """Named SweepWorkers `sweep-worker-<i>` in the current namespace, created when missing."""
    n, num_gpus = resolve_worker_resources(cfg)
    cls = remote_worker_class(cfg.num_cpus, num_gpus, cfg.max_restarts, cfg.max_task_retries)
    tag = f"{WORKER_PREFIX}-{'gpu' if num_gpus else 'cpu'}"
    return [cls.options(name=f"{tag}-{i}", get_if_exists=True).remote(i) for i in range(n)]


def _check_out_dir(spec: SweepSpec, out_dir: Path) -> None:
    """Resume only into a directory that holds the same sweep."""
    spec_file = out_dir / "spec.json"
    current = json.loads(spec.model_dump_json())
    if spec_file.exists():
        previous = json.loads(spec_file.read_text())
        previous.setdefault("analysis", None)  # written before the analysis block existed
        if previous != current:
            raise InputError("out", f"{out_dir} already holds a different sweep ({spec_file})",
                             "an empty directory or one written by the same spec")
    else:
        atomic_write_json(spec_file, current)


def run_sweep(spec: SweepSpec, out_dir: str | Path, *, progress: bool = True, inflight: int = 2) -> SweepSummary:
    """Run every missing chunk of `spec` on the pool, then merge into trajectories.parquet."""
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_out_dir(spec, out_dir)
    n_chunks = math.ceil(spec.n_points / spec.chunk_size)
    done = finished_chunks(out_dir, n_chunks)
    todo = [i for i in range(n_chunks) if i not in done]
    t0 = time.perf_counter()
    pool = workers(spec.workers) if todo else []
    infos = ray.get([w.info.remote() for w in pool]) if pool else []
    spec_json = spec.model_dump_json()
    bar = tqdm(total=spec.n_points, initial=min(len(done) * spec.chunk_size, spec.n_points),
               desc=f"sweep {spec.name}", unit="traj", disable=not progress)
    pending: dict[ray.ObjectRef, tuple[int, int]] = {}
    queue = list(todo)

    def submit(worker_pos: int) -> None:
        i = queue.pop(0)
        start, stop = i * spec.chunk_size, min((i + 1) * spec.chunk_size, spec.n_points)
        ref = pool[worker_pos].run_chunk.remote(spec_json, i, start, stop)
        pending[ref] = (i, worker_pos)

    for _ in range(inflight):
        for w in range(len(pool)):
            if queue:
                submit(w)
    computed = 0
    per_worker = [0] * len(pool)
    n_new = sum(min((i + 1) * spec.chunk_size, spec.n_points) - i * spec.chunk_size for i in todo)
    rows_new = 0
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        i, w = pending.pop(ready[0])
        frame: pd.DataFrame = ray.get(ready[0])
        atomic_write_parquet(chunk_path(out_dir, i), frame)  # on disk now: the driver keeps no rows
        computed += 1
        per_worker[w] += 1
        rows_new += len(frame)
        bar.update(len(frame))
        if progress:  # one plain line per chunk: readable in `ray job logs` where the bar is not
            elapsed = time.perf_counter() - t0
            rate = rows_new / max(elapsed, 1e-9)
            print(f"[sweep {spec.name}] chunk {i} by worker {w}: {computed}/{len(todo)} chunks, "
                  f"{rows_new}/{n_new} trajectories, {rate:.0f}/s, eta {(n_new - rows_new) / max(rate, 1e-9):.0f} s",
                  flush=True)
        del frame
        if queue:
            submit(w)
    bar.close()
    wall = time.perf_counter() - t0
    merged = merge_chunks(out_dir, n_chunks)
    spectra = None
    if spec.analysis is not None and spec.analysis.spectrum is not None:
        spectra = str(run_spectra(spec, out_dir, pool))
    summary = SweepSummary(
        name=spec.name, model=spec.model, out_dir=str(out_dir), n_points=spec.n_points, n_chunks=n_chunks,
        chunks_computed=computed, chunks_skipped=len(done), wall_seconds=round(wall, 3),
        trajectories_per_second=round(n_new / wall, 3) if computed else None, workers=infos,
        regime_counts=merged.regime_counts, attractor_counts=merged.attractor_counts,
        chunks_per_worker=per_worker, backends=merged.backends, spectra=spectra)
    atomic_write_json(out_dir / "summary.json", asdict(summary))
    return summary


def run_spectra(spec: SweepSpec, out_dir: Path, pool: list[ActorHandle]) -> Path:
    """DIR/spectra.parquet from one worker (skipped when present: same spec, same seeded points).

    Grid rows get the sweep's own regime next to the spectrum's, so the two rules can be compared.
    """
    path = out_dir / "spectra.parquet"
    if path.exists():
        return path
    pool = pool or workers(spec.workers)
    frame: pd.DataFrame = ray.get(pool[0].spectra.remote(spec.model_dump_json()))
    grid_points = sorted({int(p) for s, p in zip(frame["source"], frame["point"], strict=True) if s == "grid"})
    regime = {}
    if grid_points:  # only the sampled rows are read, so a 10^7-point table never enters memory
        rows = pq.read_table(out_dir / "trajectories.parquet", columns=["point", "regime"],
                             filters=[("point", "in", grid_points)]).to_pydict()
        regime = dict(zip(rows["point"], rows["regime"], strict=True))
    frame["regime_sweep"] = [regime.get(p, "") if s == "grid" else ""
                             for s, p in zip(frame["source"], frame["point"], strict=True)]
    atomic_write_parquet(path, frame)
    return path


@dataclass
class MergeSummary:
    n_rows: int
    regime_counts: dict[str, int]
    attractor_counts: dict[str, int]
    backends: list[str]


def merge_chunks(out_dir: Path, n_chunks: int) -> MergeSummary:
    """Stream the chunk files, in point order, into trajectories.parquet (written atomically).

    One chunk is in memory at a time (chunk i holds points [i*chunk_size, (i+1)*chunk_size), so
    chunk order is point order), which keeps 10^6-10^7-point sweeps memory-bounded; the counts the
    summary reports are accumulated on the way.
    """
    import collections
    import os
    import tempfile

    target = out_dir / "trajectories.parquet"
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".trajectories.parquet.", suffix=".tmp")
    os.close(fd)
    regimes, attractors, backends = collections.Counter(), collections.Counter(), set()
    n_rows = 0
    writer = None
    try:
        for i in range(n_chunks):
            part = pq.read_table(chunk_path(out_dir, i))
            if writer is None:
                writer = pq.ParquetWriter(tmp, part.schema, compression="zstd")
            writer.write_table(part.cast(writer.schema))
            n_rows += part.num_rows
            for counter, name in ((regimes, "regime"), (attractors, "attractor")):
                for item in pc.value_counts(part.column(name)).to_pylist():
                    counter[item["values"]] += item["counts"]
            if "backend" in part.column_names:
                backends.update(b for b in pc.unique(part.column("backend")).to_pylist() if b is not None)
        if writer is not None:
            writer.close()
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return MergeSummary(n_rows=n_rows, regime_counts=dict(regimes.most_common()),
                        attractor_counts=dict(attractors.most_common()),
                        backends=sorted(backends))
