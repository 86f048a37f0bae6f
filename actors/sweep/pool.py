"""The sweep pool: named SweepWorkers run a grid chunk by chunk (actors.common.scheduler.run_tasks pulls
work as workers free up), each chunk is written to DIR/chunks/chunk-<i>.parquet the moment it arrives,
chunks already on disk are skipped, and the chunks are streamed into DIR/trajectories.parquet.

Also the Ray side of the sweep's other fan-outs: the spectra of `analysis.spectrum` and the chunks of
a bifurcation diagram (run_bifurcation). The compute itself lives in the Ray-free engines.

A model registered in the driver (`register_model`, a job's `--model FILE.yaml`) travels inside the
spec sent to the workers (models.ship_model), so worker processes need no registration. Each run's
summary is DIR/summary.json (the latest run) and one line of DIR/summaries.jsonl (every run, appended),
so a resubmitted sweep keeps the first run's record.
"""
from __future__ import annotations

import collections
import datetime
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

from actors.common.config import WorkerConfig
from actors.common.scheduler import run_tasks
from actors.common.storage import (
    FileStore,
    atomic_write_json,
    atomic_write_parquet,
    atomic_write_text,
    atomic_write_via,
    claim_out_dir,
    parquet_store,
)
from actors.common.worker import named_actors
from actors.sweep.actor import SweepWorker
from actors.sweep.bifurcation import BifurcationSpec, Chunk, write_diagram
from actors.sweep.config import SOLVERS, SweepSpec
from actors.sweep.models import ship_model

__all__ = ["HISTORY_FILE", "RUN_ONLY_FIELDS", "WORKER_PREFIX", "MergeSummary", "SweepSummary", "append_history",
           "chunk_path", "chunk_store", "claim_sweep_dir", "merge_chunks", "run_bifurcation", "run_spectra",
           "run_sweep", "shipped", "workers"]

WORKER_PREFIX = "sweep-worker"
HISTORY_FILE = "summaries.jsonl"            # one summary per run, appended
RUN_ONLY_FIELDS = ("chunk_timeout_s",)      # spec fields that do not change the rows (a resume may change them)


def chunk_store(out_dir: Path) -> FileStore:
    """DIR/chunks/chunk-000000.parquet, ...: one file per finished chunk (the resume record)."""
    return parquet_store(Path(out_dir) / "chunks", "chunk-{:06d}.parquet")


def chunk_path(out_dir: Path, index: int) -> Path:
    """Where chunk `index` of the sweep in `out_dir` is (or will be) stored."""
    return chunk_store(out_dir).path(index)


def workers(cfg: WorkerConfig, *, limit: int | None = None) -> list[ActorHandle]:
    """Named SweepWorkers `sweep-worker-<cpu|gpu>-<i>` in the current namespace, created when missing."""
    return named_actors(SweepWorker, cfg, WORKER_PREFIX, limit=limit)


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
    started_at: str = ""                                         # UTC, ISO 8601: tells the runs apart
    finished_at: str = ""


def _in_todays_form(identity: dict) -> dict:
    """An older DIR/spec.json in the current form: written before the `analysis` block existed, or
    with the solver options of every backend (before the per-backend solver classes). The options a
    backend did not read are dropped: the rows they produced are the same."""
    out = {**identity}
    out.setdefault("analysis", None)
    solver = out.get("solver")
    if isinstance(solver, dict) and solver.get("backend", "torch") in SOLVERS:
        fields = SOLVERS[solver.get("backend", "torch")].model_fields
        out["solver"] = {k: v for k, v in solver.items() if k in fields}
    return out


def _rows_identity(identity: dict) -> dict:
    """The part of a spec.json that decides the rows (run-only settings such as the chunk budget dropped)."""
    return {k: v for k, v in identity.items() if k not in RUN_ONLY_FIELDS}


def claim_sweep_dir(spec: SweepSpec, out_dir: Path) -> None:
    """Resume only into a directory that holds the same sweep (an older spec.json of the same sweep
    is rewritten in today's form first, so directories written by earlier versions still resume; so is
    one that differs only in run-only settings, e.g. a raised `chunk_timeout_s` after a timed-out chunk)."""
    current = json.loads(spec.model_dump_json())
    spec_file = Path(out_dir) / "spec.json"
    if spec_file.exists():
        previous = json.loads(spec_file.read_text())
        if previous != current and _rows_identity(_in_todays_form(previous)) == _rows_identity(current):
            atomic_write_json(spec_file, current)
    claim_out_dir(out_dir, current, "sweep")


def shipped(spec: SweepSpec) -> SweepSpec:
    """`spec` as sent to the workers: a model registered in this process inline (models.ship_model)."""
    model = ship_model(spec.model)
    return spec if model is spec.model else spec.model_copy(update={"model": model})


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def append_history(out_dir: Path, record: dict) -> Path:
    """Append `record` as one JSON line to DIR/summaries.jsonl (rewritten atomically, 0644)."""
    path = Path(out_dir) / HISTORY_FILE
    previous = path.read_text() if path.exists() else ""
    if previous and not previous.endswith("\n"):
        previous += "\n"
    atomic_write_text(path, previous + json.dumps(record, default=str) + "\n")
    return path


def run_sweep(spec: SweepSpec, out_dir: str | Path, *, progress: bool = True, inflight: int = 2) -> SweepSummary:
    """Run every missing chunk of `spec` on the pool, then merge into trajectories.parquet; the summary
    goes to DIR/summary.json (this run) and DIR/summaries.jsonl (appended: every run's)."""
    from tqdm.auto import tqdm

    started_at = _now()
    spec = shipped(spec)
    out_dir = Path(out_dir)
    claim_sweep_dir(spec, out_dir)
    store = chunk_store(out_dir)
    n_chunks = math.ceil(spec.n_points / spec.chunk_size)
    bounds = [(i * spec.chunk_size, min((i + 1) * spec.chunk_size, spec.n_points)) for i in range(n_chunks)]
    todo = [i for i in range(n_chunks) if store.load(i) is None]
    n_new = sum(bounds[i][1] - bounds[i][0] for i in todo)
    pool: list[ActorHandle] = []

    def make_pool() -> list[ActorHandle]:   # only called when some chunk is missing
        pool.extend(workers(spec.workers, limit=len(todo)))
        return pool

    spec_json = spec.model_dump_json()
    bar = tqdm(total=spec.n_points, initial=spec.n_points - n_new, desc=f"sweep {spec.name}", unit="traj",
               disable=not progress)
    t0 = time.perf_counter()
    seen = collections.Counter()

    def on_result(i: int, frame: pd.DataFrame, w: int) -> None:
        seen["chunks"] += 1
        seen["rows"] += len(frame)
        bar.update(len(frame))
        if progress:  # one plain line per chunk: readable in `ray job logs` where the bar is not
            rate = seen["rows"] / max(time.perf_counter() - t0, 1e-9)
            print(f"[sweep {spec.name}] chunk {i} by worker {w}: {seen['chunks']}/{len(todo)} chunks, "
                  f"{seen['rows']}/{n_new} trajectories, {rate:.0f}/s, "
                  f"eta {(n_new - seen['rows']) / max(rate, 1e-9):.0f} s", flush=True)

    run = run_tasks(make_pool, bounds, lambda w, i, b: w.run_chunk.remote(spec_json, i, *b), store=store,
                    inflight=inflight, keep=False, on_result=on_result)
    bar.close()
    infos = ray.get([w.info.remote() for w in pool]) if pool else []
    merged = merge_chunks(out_dir, n_chunks)
    spectra = None
    if spec.analysis is not None and spec.analysis.spectrum is not None:
        spectra = str(run_spectra(spec, out_dir, pool))
    summary = SweepSummary(
        name=spec.name, model=spec.model_name, out_dir=str(out_dir), n_points=spec.n_points, n_chunks=n_chunks,
        chunks_computed=run.computed, chunks_skipped=run.skipped, wall_seconds=round(run.wall_seconds, 3),
        trajectories_per_second=round(n_new / run.wall_seconds, 3) if run.computed else None, workers=infos,
        regime_counts=merged.regime_counts, attractor_counts=merged.attractor_counts,
        chunks_per_worker=run.per_worker, backends=merged.backends, spectra=spectra, started_at=started_at,
        finished_at=_now())
    atomic_write_json(out_dir / "summary.json", asdict(summary))
    append_history(out_dir, asdict(summary))
    return summary


def run_spectra(spec: SweepSpec, out_dir: Path, pool: list[ActorHandle] | None = None) -> Path:
    """DIR/spectra.parquet from one worker (skipped when present: same spec, same seeded points).

    Grid rows get the sweep's own regime next to the spectrum's, so the two rules can be compared.
    """
    path = Path(out_dir) / "spectra.parquet"
    if path.exists():
        return path
    pool = pool or workers(spec.workers, limit=1)
    frame: pd.DataFrame = ray.get(pool[0].spectra.remote(spec.model_dump_json()))
    grid_points = sorted({int(p) for s, p in zip(frame["source"], frame["point"], strict=True) if s == "grid"})
    regime = {}
    if grid_points:  # only the sampled rows are read, so a 10^7-point table never enters memory
        rows = pq.read_table(Path(out_dir) / "trajectories.parquet", columns=["point", "regime"],
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
    store = chunk_store(out_dir)
    regimes, attractors, backends = collections.Counter(), collections.Counter(), set()
    n_rows = 0

    def write(tmp: str) -> None:
        nonlocal n_rows
        writer = None
        try:
            for i in range(n_chunks):
                part = pq.read_table(store.path(i))
                if writer is None:
                    writer = pq.ParquetWriter(tmp, part.schema, compression="zstd")
                writer.write_table(part.cast(writer.schema))
                n_rows += part.num_rows
                for counter, name in ((regimes, "regime"), (attractors, "attractor")):
                    for item in pc.value_counts(part.column(name)).to_pylist():
                        counter[item["values"]] += item["counts"]
                if "backend" in part.column_names:
                    backends.update(b for b in pc.unique(part.column("backend")).to_pylist() if b is not None)
        finally:
            if writer is not None:
                writer.close()

    atomic_write_via(Path(out_dir) / "trajectories.parquet", write)
    return MergeSummary(n_rows=n_rows, regime_counts=dict(regimes.most_common()),
                        attractor_counts=dict(attractors.most_common()), backends=sorted(backends))


def run_bifurcation(spec: BifurcationSpec, out_dir: str | Path, *, inflight: int = 2) -> dict:
    """A bifurcation diagram (actors/sweep/bifurcation.write_diagram) with its chunks pulled by
    SweepWorkers (one GPU each when the cluster has GPUs); the tables equal the in-process run's."""

    def on_workers(spec: BifurcationSpec, bounds: list[tuple[int, int]]) -> list[Chunk]:
        spec_json = spec.model_copy(update={"model": ship_model(spec.model)}).model_dump_json()
        run = run_tasks(lambda: workers(spec.workers, limit=len(bounds)), bounds,
                        lambda w, i, b: w.bifurcation_chunk.remote(spec_json, *b), inflight=inflight)
        return [run.results[i] for i in range(len(bounds))]

    return write_diagram(spec, out_dir, map_chunks=on_workers)
