"""The validation pool: detector dimensions as tasks on named ValidationWorkers, and cascade rungs as
Ray tasks. Everything Ray in the validation subsystem is here (and in actor.py); the engines import
no Ray.

Detector: the pooled tables go to the object store once; `run_tasks` hands each worker the next
dimension (longest first) as soon as it returns one. With `out_dir`, every finished dimension is
pickled there (DIR/dimension-<k>.pkl, k its index in config.DIMENSIONS) and a rerun with the same
detector config and data skips it; DIR/spec.json holds that identity, so other data or settings are
refused instead of mixed in. The report equals the in-process `detect` (dimensions are seeded
independently).

Cascade: `cascade_runner` runs each rung (and each out-of-fold fit) as a Ray task; the climb itself
(actors/validation/cascade.py) consumes them in ladder order, so the answer equals the in-process one.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import ray
from ray.actor import ActorHandle

from actors.common.config import WorkerConfig, validated
from actors.common.scheduler import run_tasks
from actors.common.storage import FileStore, claim_out_dir, pickle_store
from actors.common.worker import named_actors
from actors.validation.actor import ValidationWorker
from actors.validation.cascade import CascadeResult, Submit, climb, train_cascade
from actors.validation.cascade_config import CascadeConfig
from actors.validation.config import DIMENSIONS, DetectorConfig, ValidationSpec
from actors.validation.data import fingerprint
from actors.validation.detector import CollapseReport, combine, prepare
from actors.validation.pipeline import ValidationResult, validate
from actors.validation.rungs import CascadeData

__all__ = ["WORKER_PREFIX", "cascade_runner", "climb_on_cluster", "detect_on_cluster", "dimension_store",
           "train_cascade_on_cluster", "validate_on_cluster", "workers"]

WORKER_PREFIX = "validation-worker"
_COST = {"dependence": 4, "classifier": 3, "correlation": 3, "spectral": 2}   # rough relative run time


def workers(cfg: WorkerConfig, n_tasks: int) -> list[ActorHandle]:
    """Named ValidationWorkers `validation-worker-<cpu|gpu>-<i>`, created when missing; an `auto`
    count is capped at the number of dimensions (an idle actor would only hold a CPU)."""
    return named_actors(ValidationWorker, cfg, WORKER_PREFIX, limit=n_tasks)


@dataclass(frozen=True)
class _DimensionFiles(FileStore):
    """A pickle store whose files are named by the dimension's index in DIMENSIONS, while `run_tasks`
    indexes its (cost-ordered) task list: task i is stored as dimension `keys[i]`."""

    keys: tuple[int, ...] = ()

    def path(self, index: int) -> Path:
        return super().path(self.keys[index])


def dimension_store(out_dir: str | Path, names: list[str]) -> FileStore:
    """DIR/dimension-<k>.pkl for the dimensions `names`, in the order tasks are given to run_tasks."""
    base = pickle_store(Path(out_dir), "dimension-{:02d}.pkl")
    return _DimensionFiles(base.directory, base.pattern, base.write, base.read,
                           tuple(DIMENSIONS.index(n) for n in names))


def detect_on_cluster(real: pd.DataFrame, synth: pd.DataFrame, config: DetectorConfig | dict | None = None,
                      worker_cfg: WorkerConfig | dict | None = None, *,
                      out_dir: str | Path | None = None) -> tuple[CollapseReport, dict]:
    """`detect` with each dimension a task on the worker pool; returns (report, stats).

    stats: workers used, wall seconds, dimensions computed this run and skipped (found in `out_dir`).
    """
    cfg = validated(DetectorConfig, config)
    wcfg = validated(WorkerConfig, worker_cfg, prefix="workers.")
    t0 = time.perf_counter()
    pooled = prepare(real, synth, cfg)          # bad input fails here, before any actor starts
    names = sorted(cfg.dimensions, key=lambda d: -_COST.get(d, 1))     # longest first
    store = None
    if out_dir is not None:
        claim_out_dir(Path(out_dir), {"detector": cfg.model_dump(mode="json"), "data": fingerprint(real, synth)},
                      "validation detector run")
        store = dimension_store(out_dir, names)
    config_json = cfg.model_dump_json()
    shared: dict[str, Any] = {}

    def pool() -> list[ActorHandle]:   # only called when a dimension is left to compute
        shared["pooled"] = ray.put(pooled)
        return workers(wcfg, len(names))

    def submit(worker: ActorHandle, _: int, name: str) -> ray.ObjectRef:
        return worker.run_dimension.remote(name, shared["pooled"], config_json)

    run = run_tasks(pool, names, submit, store=store, inflight=1)
    ordered = {d: run.results[names.index(d)] for d in cfg.dimensions}
    stats = {"workers": len(run.per_worker), "wall_seconds": round(time.perf_counter() - t0, 3),
             "dimensions_computed": run.computed, "dimensions_skipped": run.skipped}
    return combine(ordered, cfg, pooled.n_real, pooled.n_synth), stats


def validate_on_cluster(real: pd.DataFrame, synth: pd.DataFrame, spec: ValidationSpec | dict | None = None, *,
                        label: str | None = None, out_dir: str | Path | None = None) -> ValidationResult:
    """`validate` with the detector's dimensions on the worker pool (resumable in `out_dir`); the same
    result as in process."""
    spec = validated(ValidationSpec, spec)

    def on_pool(r: pd.DataFrame, s: pd.DataFrame, cfg: DetectorConfig) -> tuple[CollapseReport, dict]:
        return detect_on_cluster(r, s, cfg, spec.workers, out_dir=out_dir)

    return validate(real, synth, spec, label=label, detector=on_pool)


# ---------------------------------------------------------------- cascade rungs as Ray tasks

_REMOTE: dict[Callable, Any] = {}   # one Ray remote function per rung function, options set per task


def cascade_runner(cfg: CascadeConfig, data: CascadeData) -> Submit:
    """Each rung / out-of-fold fit a Ray task: the data go to the object store once, MLP rungs ask for
    `cfg.num_gpus`, every task `cfg.num_cpus`; Ray retries a task whose worker died (they are seeded)."""
    data_ref = ray.put(data)

    def submit(fn: Callable, spec: Any, *args: Any) -> Callable[[], Any]:
        if fn not in _REMOTE:
            _REMOTE[fn] = ray.remote(max_retries=2)(fn)
        gpus = cfg.num_gpus if spec.kind == "mlp" else 0
        ref = _REMOTE[fn].options(num_cpus=cfg.num_cpus, num_gpus=gpus).remote(spec, *args, data_ref, cfg)
        return lambda: ray.get(ref)

    return submit


def climb_on_cluster(real: pd.DataFrame, synth: pd.DataFrame, label: str,
                     config: CascadeConfig | dict | None = None, **kwargs: Any) -> Iterator[dict]:
    """`climb` with the rungs as Ray tasks (Ray must be initialised: cluster.connect())."""
    return climb(real, synth, label, config, runner=cascade_runner, **kwargs)


def train_cascade_on_cluster(real: pd.DataFrame, synth: pd.DataFrame, label: str,
                             config: CascadeConfig | dict | None = None, **kwargs: Any) -> CascadeResult:
    """`train_cascade` with the rungs as Ray tasks (Ray must be initialised: cluster.connect())."""
    return train_cascade(real, synth, label, config, runner=cascade_runner, **kwargs)
