"""Node loss mid-sweep: a two-node Ray cluster (`ray.cluster_utils.Cluster`: a head with 2 CPUs and a
second node with 2 CPUs of its own), the sweep's workers on the second node, that node removed
ungracefully (its raylet and workers killed) while chunks run; the sweep finishes on the head with
the same table as an uninterrupted run.

The workers are placed on the second node by occupying the head's CPUs while the pool is created (a
blocker actor pinned to the head), then freeing them: after the loss the restarted workers
(WorkerConfig.max_restarts) fit on the head and the chunks they held are retried there
(max_task_retries). GCS health checks are shortened so the dead node is noticed in about 2 s.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import free_ports

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def two_nodes():
    import ray
    from ray.cluster_utils import Cluster

    assert not ray.is_initialized()
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), saved) if p)   # workers import the repo
    tmp = tempfile.mkdtemp(prefix="ray_n_", dir="/tmp")
    # the head is added inside the try, so a head that fails to start is still shut down; its dashboard
    # process (started even with include_dashboard False) on a free port, not 8265: another Ray on the
    # machine may hold that one, and the head would fail with it
    # Cluster writes the head's address to /tmp/ray/ray_current_cluster (a FileNotFoundError where /tmp/ray
    # does not exist, as on a fresh machine; elsewhere an address every later plain ray.init() on the machine
    # would try): written into this cluster's own temp dir instead
    write_address = ray._private.utils.write_ray_address
    cluster = Cluster(initialize_head=False)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(ray._private.utils, "write_ray_address", lambda address, temp_dir=None:
                       write_address(address, temp_dir or tmp))
            cluster.add_node(num_cpus=2, num_gpus=0, include_dashboard=False, temp_dir=tmp,
                             dashboard_port=free_ports(1)[0],
                             _system_config={"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                                             "health_check_failure_threshold": 4})
        second = cluster.add_node(num_cpus=2, num_gpus=0)
        ray.init(address=cluster.address, namespace="attractor-test", log_to_driver=False)
        cluster.wait_for_nodes()
        yield cluster, second
    finally:
        ray.shutdown()
        cluster.shutdown()
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
        shutil.rmtree(tmp, ignore_errors=True)


def _nodes_of(prefix: str) -> dict[str, str]:
    """name -> node id of the live actors whose name starts with `prefix`."""
    import ray._private.state as state

    return {a["Name"]: a["Address"]["NodeID"] for a in state.actors().values()
            if a.get("Name", "").startswith(prefix) and a["State"] == "ALIVE"}


def test_node_lost_mid_sweep_gives_the_uninterrupted_table(two_nodes, tmp_path):
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from actors.common.config import WorkerConfig
    from actors.sweep.pool import WORKER_PREFIX, run_sweep, workers
    from configs import preset
    from jobs.sweep import load_spec

    cluster, second = two_nodes
    head_id, second_id = cluster.head_node.node_id, second.node_id
    spec = load_spec(preset("sweep", "ci_tiny.yaml"), {"chunk_size": 3, "solver.t_span": [0.0, 40.0]})   # 12 chunks
    spec = spec.model_copy(update={"workers": WorkerConfig(num_workers=2, num_gpus=0, num_cpus=1)})
    assert spec.workers.max_restarts != 0 and spec.workers.max_task_retries != 0

    @ray.remote(num_cpus=2)
    class Blocker:
        def ready(self) -> bool:
            return True

    blocker = Blocker.options(scheduling_strategy=NodeAffinitySchedulingStrategy(head_id, soft=False)).remote()
    ray.get(blocker.ready.remote())
    pool = workers(spec.workers)
    ray.get([w.info.remote() for w in pool])
    ray.kill(blocker)
    placed = _nodes_of(WORKER_PREFIX)
    assert len(placed) == 2 and set(placed.values()) == {second_id}, placed

    reference = run_sweep(spec, tmp_path / "ref", progress=False)
    assert reference.chunks_computed == 12

    chunks = tmp_path / "lost" / "chunks"
    seen: dict = {}

    def remove_when_running() -> None:
        deadline = time.time() + 180
        while time.time() < deadline and len(list(chunks.glob("*.parquet"))) < 2:
            time.sleep(0.01)
        seen["done_before_loss"] = len(list(chunks.glob("*.parquet")))
        cluster.remove_node(second, allow_graceful=False)
        seen["removed"] = time.time()

    remover = threading.Thread(target=remove_when_running, daemon=True)
    remover.start()
    t0 = time.time()
    summary = run_sweep(spec, tmp_path / "lost", progress=False)
    remover.join(timeout=60)
    print(f"\n[node loss] {seen['done_before_loss']}/12 chunks stored when the node went; sweep done "
          f"{time.time() - seen['removed']:.1f} s after the loss ({time.time() - t0:.1f} s in all)")
    assert 2 <= seen["done_before_loss"] < 12, seen        # the node went mid-sweep
    assert summary.chunks_computed == 12
    assert set(_nodes_of(WORKER_PREFIX).values()) == {head_id}   # the workers came back on the head
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "ref" / "trajectories.parquet"),
                                  pd.read_parquet(tmp_path / "lost" / "trajectories.parquet"))


def test_tasks_of_a_worker_that_cannot_come_back_move_to_the_live_ones(two_nodes):
    """A worker whose node is lost and whose restart fits nowhere (it needs a resource only that node had)
    would hold its queued tasks forever; run_tasks moves them to the live worker after stall_timeout_s."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from actors.common.scheduler import actor_state, run_tasks

    cluster, _ = two_nodes
    doomed = cluster.add_node(num_cpus=1, num_gpus=0, resources={"doomed_node": 1})
    cluster.wait_for_nodes()

    @ray.remote(max_restarts=-1, max_task_retries=-1)
    class Square:
        def run(self, i: int) -> int:
            time.sleep(0.2)
            return i * i

    live = Square.options(num_cpus=1, scheduling_strategy=NodeAffinitySchedulingStrategy(
        cluster.head_node.node_id, soft=False)).remote()
    stuck = Square.options(num_cpus=1, resources={"doomed_node": 1}).remote()
    ray.get([live.run.remote(0), stuck.run.remote(0)])
    seen: dict = {}

    def on_result(i: int, result: int, w: int) -> None:
        if len(seen) == 3:                                  # mid-run: the other worker holds queued tasks
            cluster.remove_node(doomed, allow_graceful=False)
        seen[i] = w

    run = run_tasks([live, stuck], list(range(16)), lambda w, i, t: w.run.remote(t), inflight=3,
                    on_result=on_result, stall_timeout_s=4.0)
    assert run.results == {i: i * i for i in range(16)} and run.computed == 16
    assert run.reassigned >= 1 and actor_state(stuck) != "ALIVE"
    assert sum(run.per_worker) == 16 and run.per_worker[0] > run.per_worker[1]
    ray.kill(live)
    ray.kill(stuck)
