"""What every subsystem's Ray actor shares: resource sizing, named actors, GPU ids, thread pinning,
`info()` and metrics.

A subsystem's actor subclasses `BaseWorker` and adds only its domain methods; its pool calls
`named_actors(cls, cfg, prefix)` to find or create `<prefix>-<cpu|gpu>-<i>` in the current namespace,
so a second job on the same cluster reuses the warm actors (compiled kernels, loaded models).
"""
from __future__ import annotations

import os
import socket
import time
import weakref
from typing import Any, ClassVar

import ray
from ray.actor import ActorHandle
from ray.util import metrics

from actors.common.config import WorkerConfig

__all__ = ["SECONDS_BOUNDARIES", "BaseWorker", "named_actors", "resolve_worker_resources"]

# one set of latency buckets for every subsystem's histograms, so dashboards compare like with like
SECONDS_BOUNDARIES = [0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600]


def resolve_worker_resources(cfg: WorkerConfig, *, limit: int | None = None) -> tuple[int, float]:
    """(number of workers, GPUs per worker) on this cluster; `limit` caps an `auto` count (e.g. tasks)."""
    resources = ray.cluster_resources()
    total_gpus = int(resources.get("GPU", 0))
    num_gpus = (1.0 if total_gpus > 0 else 0.0) if cfg.num_gpus == "auto" else float(cfg.num_gpus)
    if cfg.num_workers != "auto":
        return int(cfg.num_workers), num_gpus
    if num_gpus > 0:
        n = int(total_gpus // num_gpus)
    else:
        n = int(resources.get("CPU", 1) // cfg.num_cpus)
    n = max(1, n)
    return (min(n, limit) if limit else n), num_gpus


def named_actors(cls: type, cfg: WorkerConfig, prefix: str, *, limit: int | None = None,
                 ready_timeout_s: float = 10.0, release_timeout_s: float = 30.0) -> list[ActorHandle]:
    """Named actors `<prefix>-<cpu|gpu>-<i>` of `cls` sized by `cfg`, created when missing.

    `cls.__init__` takes the worker index. Restarts and task retries come from `cfg`, so a killed
    actor comes back and its idempotent tasks are retried. Two races are closed here:
    - this process dropped its last handle to an actor it created (e.g. the previous job of this
      driver): Ray is tearing that actor down, so its name must not be reused; we wait up to
      `release_timeout_s` for the name to be released and create the actor anew;
    - a name resolves to a dead actor (killed, node lost): each actor is probed for
      `ready_timeout_s`, and one that answers with an actor error is created anew (up to 3 times).
    Actors still being created when the probe times out are returned as they are.
    """
    n, num_gpus = resolve_worker_resources(cfg, limit=limit)
    remote_cls = ray.remote(num_cpus=cfg.num_cpus, num_gpus=num_gpus, max_restarts=cfg.max_restarts,
                            max_task_retries=cfg.max_task_retries)(cls)
    tag = f"{prefix}-{'gpu' if num_gpus else 'cpu'}"

    def create(i: int) -> ActorHandle:
        name = f"{tag}-{i}"
        handle = remote_cls.options(name=name, get_if_exists=True).remote(i)
        _CREATED[_scoped(name)] = (handle._actor_id, weakref.ref(handle))
        return handle

    def find_or_create(i: int) -> ActorHandle:
        actor_id, ref = _CREATED.get(_scoped(f"{tag}-{i}"), (None, None))
        if ref is not None:
            if (handle := ref()) is not None:
                return handle
            _await_release(f"{tag}-{i}", actor_id, release_timeout_s)
        return create(i)

    handles = [find_or_create(i) for i in range(n)]
    for attempt in range(3):
        dying = _dying(handles, ready_timeout_s)
        if not dying:
            break
        time.sleep(0.5 * (attempt + 1))
        for i in dying:
            handles[i] = create(i)
    return handles


# actors this process created, by (cluster, namespace, name): their id and a weak reference to the
# handle we returned. While the handle lives the actor is ours and kept alive; once it is gone Ray
# destroys the actor (a non-detached actor dies with its last handle), so the name resolves to an actor
# about to die. The cluster (its GCS address) is in the key: after ray.shutdown() / ray.init() a handle
# kept from the old cluster must not be handed out.
_CREATED: dict[tuple[str, str, str], tuple[Any, weakref.ref]] = {}


def _scoped(name: str) -> tuple[str, str, str]:
    ctx = ray.get_runtime_context()
    return ctx.gcs_address, ctx.namespace, name


def _await_release(name: str, actor_id: Any, timeout_s: float) -> None:
    """Wait until `name` no longer resolves to `actor_id` (Ray finished tearing it down)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if ray.get_actor(name)._actor_id != actor_id:
                return
        except ValueError:   # no actor by that name
            return
        time.sleep(0.1)


def _dying(handles: list[ActorHandle], timeout_s: float) -> list[int]:
    """Positions of the actors whose readiness probe failed with an actor error within `timeout_s`."""
    probes = {h.__ray_ready__.remote(): i for i, h in enumerate(handles)}
    ready, _ = ray.wait(list(probes), num_returns=len(probes), timeout=timeout_s)
    dying = []
    for ref in ready:
        try:
            ray.get(ref)
        except ray.exceptions.RayActorError:
            dying.append(probes[ref])
    return sorted(dying)


class BaseWorker:
    """Plain class turned into a Ray actor by `named_actors`.

    Sets `worker_index`, `gpu_ids`, `num_cpus` (what Ray assigned), `device` ("cuda" when a GPU is
    assigned and visible, else "cpu"), pins torch's threads to the assigned CPUs (no oversubscription
    when several actors share a node) and registers `attractor_<subsystem>_worker_gpu_memory_bytes`.
    """

    subsystem: ClassVar[str] = "worker"

    def __init__(self, worker_index: int = 0):
        import torch

        self.worker_index = worker_index
        self.gpu_ids = [str(g) for g in ray.get_gpu_ids()]
        assigned = ray.get_runtime_context().get_assigned_resources()
        self.num_cpus = max(1, int(assigned.get("CPU", 1) or 1))
        self.device = "cuda" if self.gpu_ids and torch.cuda.is_available() else "cpu"
        torch.set_num_threads(self.num_cpus)
        self._gpu_memory = self.gauge("worker_gpu_memory_bytes", "Peak CUDA memory allocated by the worker.")

    # -- metrics: names are attractor_<subsystem>_<name>, every series tagged with the worker index
    def _tagged(self, metric: Any) -> Any:
        metric.set_default_tags({"worker": str(self.worker_index)})
        return metric

    def counter(self, name: str, description: str, tag_keys: tuple[str, ...] = ()) -> metrics.Counter:
        return self._tagged(metrics.Counter(f"attractor_{self.subsystem}_{name}", description,
                                            tag_keys=("worker", *tag_keys)))

    def histogram(self, name: str, description: str, tag_keys: tuple[str, ...] = ()) -> metrics.Histogram:
        return self._tagged(metrics.Histogram(f"attractor_{self.subsystem}_{name}", description,
                                              boundaries=SECONDS_BOUNDARIES, tag_keys=("worker", *tag_keys)))

    def gauge(self, name: str, description: str, tag_keys: tuple[str, ...] = ()) -> metrics.Gauge:
        return self._tagged(metrics.Gauge(f"attractor_{self.subsystem}_{name}", description,
                                          tag_keys=("worker", *tag_keys)))

    def record_gpu_memory(self) -> None:
        """Set the GPU-memory gauge to the peak allocated so far (no-op on a CPU worker)."""
        if self.device == "cuda":
            import torch

            self._gpu_memory.set(float(torch.cuda.max_memory_allocated()))

    def info(self) -> dict[str, Any]:
        """Where this worker runs: index, node, pid, assigned GPU ids, compute device."""
        return {"worker_index": self.worker_index, "gpu_ids": self.gpu_ids, "device": self.device,
                "num_cpus": self.num_cpus, "pid": os.getpid(), "host": socket.gethostname(),
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
