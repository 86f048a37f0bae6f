"""Shared fixtures, in the style of Ray's own python/ray/tests/conftest.py: context managers that start
and stop one thing, thin fixtures around them, overridable per test through indirect parametrization
(`@pytest.mark.parametrize("ray_cluster", [{"num_gpus": 0}], indirect=True)`).

- `ray_cluster`: a private in-process Ray per module (own temp dir, no dashboard, 2 CPUs + 2 fake GPUs).
- `serve_instance`: Ray + Serve per module, HTTP (and gRPC, when given servicers) on free 127.0.0.1 ports.
- `job_head`: a `ray start --head` subprocess with its own temp dir and ports (the job server is its
  dashboard); stopped by its PID, never by `ray stop`, which would stop every Ray on the machine.
- `free_port`: a TCP port free on 127.0.0.1.

Two process-wide switches are decided here, before any test module is imported:
- TRITON_INTERPRET=1 when CUDA is absent. Triton reads it when @triton.jit decorates a kernel and again
  at launch, so it must precede the first kernel module import, and one process runs either
  interpreted or compiled kernels. Tests marked `triton_interpret` (interpreter-only: CPU tensors,
  small inputs) run only where the interpreter is on; tests marked `gpu` only where CUDA is present
  and the interpreter off. Tests with neither marker run on both (e.g. the TE kernels: interpreted on
  a CPU, compiled on CUDA). The unselected ones are deselected, not skipped.
- hypothesis runs derandomized (examples from a hash of the test), so every run tests the same cases.
- torch uses one thread in the test process where CUDA is absent (as Ray's workers do): the then
  48-trajectory torch DP5 solve of tests/test_engine.py (now 24) took 10.2 s CPU / 19.6 s wall on one
  thread against 33.6 s / 47.6 s on two (same result; 2-core VM at load ~11, 2026-12-02).
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


CUDA = _cuda_available()
if not CUDA:  # before any test module imports a Triton kernel (see the module docstring)
    os.environ.setdefault("TRITON_INTERPRET", "1")
    # one torch thread in the test process (Ray's workers already run one each): the CPU suite's tensors are
    # small, where a second thread buys nothing and, on 2 cores shared with Ray, stalls at every barrier
    with contextlib.suppress(ImportError):
        import torch

        torch.set_num_threads(1)
TRITON_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"

try:
    from hypothesis import HealthCheck, settings

    settings.register_profile("attractor", derandomize=True, database=None, max_examples=60, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "attractor"))
except ImportError:  # the bench venv (.venv-bench) has no hypothesis and runs no property test
    pass


def _bench_baselines_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("evidently", "sdmetrics", "cleanlab"))


# The longest modules (per-module sums of --durations on the 2-core CI VM, 2026-12-02), longest first.
# `make test` runs pytest-xdist with --dist loadfile: modules go, in collection order, each whole to the
# next free worker, so one of these collected last would run alone at the end while the other worker
# idles. Putting them first is longest-processing-time-first scheduling. Order only: every test runs,
# each module's tests in their own order.
LONGEST_MODULES = ("test_sweep_reference.py", "reliability/test_kill.py", "test_sweep_integ.py", "test_engine.py",
                   "test_serve_te.py", "test_sweep_scale.py", "test_pool.py", "reliability/test_fuzz.py",
                   "reliability/test_serve.py", "test_multinode.py", "test_te_job.py", "trainer/test_train_dist.py",
                   "test_jobs.py")


def _schedule_rank(item) -> int:
    rel = Path(str(item.fspath)).relative_to(ROOT / "tests").as_posix()
    return LONGEST_MODULES.index(rel) if rel in LONGEST_MODULES else len(LONGEST_MODULES)


def pytest_collection_modifyitems(config, items):
    """Deselect what this process cannot run: `gpu` tests without CUDA or with the Triton interpreter
    on, `triton_interpret` tests with it off (CUDA machines), `bench` tests without the bench extra
    (its own venv, .venv-bench: `make test` runs them there). Then the longest modules first (a stable
    sort: see LONGEST_MODULES)."""
    bench = _bench_baselines_available()
    keep, drop = [], []
    for item in items:
        off = (("gpu" in item.keywords and (not CUDA or TRITON_INTERPRETED))
               or ("triton_interpret" in item.keywords and not TRITON_INTERPRETED)
               or ("bench" in item.keywords and not bench))
        (drop if off else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = sorted(keep, key=_schedule_rank)


# ---- ports -----------------------------------------------------------------------------------------
def free_ports(n: int) -> list[int]:
    """n distinct TCP ports free on 127.0.0.1 (all bound at once, so none is handed out twice)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


@pytest.fixture
def free_port() -> int:
    """A TCP port free on 127.0.0.1 at the time of the call."""
    return free_ports(1)[0]


def _with_project_path(env: dict[str, str]) -> dict[str, str]:
    """env with the repository on PYTHONPATH: Ray workers outside the driver's job (Serve's controller,
    proxies and replicas; a job head's processes) can then import actors/, serve/, jobs/."""
    return {**env, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)}


# ---- in-process Ray ----------------------------------------------------------------------------------
@contextlib.contextmanager
def _ray_start(**init_kwargs) -> Iterator[tuple[object, str]]:
    """ray.init in a private temp dir (no dashboard, namespace attractor-test unless given); yields
    (ray, temp dir) and shuts Ray down and removes the directory after."""
    import ray

    assert not ray.is_initialized(), "Ray is already running in this process (a test did not shut it down)"
    tmp = tempfile.mkdtemp(prefix="ray_t_", dir="/tmp")
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = _with_project_path(dict(os.environ))["PYTHONPATH"]  # workers inherit it
    kwargs = {"include_dashboard": False, "namespace": "attractor-test", "log_to_driver": False, **init_kwargs}
    try:
        ray.init(_temp_dir=tmp, **kwargs)
        yield ray, tmp
    finally:
        ray.shutdown()
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_cluster(request):
    """Ray with 2 CPUs and 2 fake GPUs in a private temp dir; shut down after the module.
    Indirect parameters (a dict) override ray.init arguments, e.g. {"num_gpus": 0}."""
    with _ray_start(**{"num_cpus": 2, "num_gpus": 2, **getattr(request, "param", {})}) as (ray, _):
        yield ray


# ---- Serve -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServeInstance:
    url: str                  # http://127.0.0.1:<port>, Serve's HTTP proxy
    grpc_target: str | None   # 127.0.0.1:<port> of its gRPC proxy; None without servicers
    temp_dir: str             # the cluster's private temp dir (removed after the module)


@contextlib.contextmanager
def serve_start(grpc_servicer_functions=None, **init_kwargs) -> Iterator[ServeInstance]:
    """Ray (2 CPUs unless given) + Serve on free 127.0.0.1 ports, the gRPC proxy too when given servicers;
    Serve and Ray are shut down on exit."""
    from ray import serve

    with _ray_start(**{"num_cpus": 2, **init_kwargs}) as (_, tmp):
        try:
            http_port, grpc_port = _serve_on_free_ports(grpc_servicer_functions)
            yield ServeInstance(url=f"http://127.0.0.1:{http_port}",
                                grpc_target=f"127.0.0.1:{grpc_port}" if grpc_servicer_functions else None,
                                temp_dir=tmp)
        finally:
            serve.shutdown()


def _serve_on_free_ports(grpc_servicer_functions, attempts: int = 4) -> tuple[int, int]:
    """serve.start on ports free a moment ago. Another process (a Ray worker of this or a parallel test
    module) can take such a port before Serve's proxy binds it ("Failed to bind to address", seen once in
    a fresh-clone CI run), and on a loaded host the controller can kill a proxy that was slow to start
    (ActorDiedError, seen under load): then Serve is shut down and started again on new ports."""
    from ray import serve
    from ray.serve.config import gRPCOptions

    def start() -> tuple[int, int]:
        http_port, grpc_port = free_ports(2)
        grpc = (gRPCOptions(port=grpc_port, grpc_servicer_functions=list(grpc_servicer_functions))
                if grpc_servicer_functions else None)
        serve.start(http_options={"host": "127.0.0.1", "port": http_port}, grpc_options=grpc)
        return http_port, grpc_port

    for _ in range(attempts - 1):
        try:
            return start()
        except Exception as exc:  # RayTaskError(RuntimeError) from the proxy actor
            lost_proxy = "ProxyActor" in str(exc) and "killed" in str(exc)   # not up in time on a loaded host
            if not ("Failed to bind" in str(exc) or lost_proxy):
                raise
            serve.shutdown()
    return start()


@pytest.fixture(scope="module")
def serve_instance(request):
    """Ray (2 CPUs, no GPUs) + Serve on free 127.0.0.1 ports; apps are deployed by the test
    (`serve.run(..., route_prefix="/")`); Serve and Ray are shut down after the module.

    Indirect parameters (a dict): `grpc_servicer_functions` (starts the gRPC proxy on a free port),
    anything else goes to ray.init."""
    with serve_start(**getattr(request, "param", {})) as instance:
        yield instance


# ---- a Ray head in its own process (the job server) --------------------------------------------------
@contextlib.contextmanager
def _ray_head(num_cpus: int = 2, timeout: float = 120.0) -> Iterator[str]:
    """`ray start --head --block` in a subprocess with a private temp dir and every port chosen free
    (GCS, dashboard, client server, raylet, object manager, agents, metrics: the defaults would clash
    with any other Ray on the machine). Yields the dashboard URL (the job submission address); on exit
    SIGTERMs that process, whose handler stops the Ray processes it started."""
    tmp = tempfile.mkdtemp(prefix="ray_j_", dir="/tmp")
    (gcs, dash, client, node_mgr, obj_mgr, agent_http, agent_grpc, metrics, env_agent) = free_ports(9)
    ray_cli = Path(sys.executable).with_name("ray")
    cmd = [str(ray_cli), "start", "--head", "--block", "--disable-usage-stats", f"--num-cpus={num_cpus}",
           "--num-gpus=0", "--node-ip-address=127.0.0.1", f"--port={gcs}", "--include-dashboard=true",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--ray-client-server-port={client}",
           f"--node-manager-port={node_mgr}", f"--object-manager-port={obj_mgr}",
           f"--dashboard-agent-listen-port={agent_http}", f"--dashboard-agent-grpc-port={agent_grpc}",
           f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={env_agent}", f"--temp-dir={tmp}"]
    env = _with_project_path({**os.environ, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"})
    env.pop("RAY_ADDRESS", None)
    log_path = Path(tmp) / "ray_start.log"
    url = f"http://127.0.0.1:{dash}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        _wait_for_job_server(proc, url, log_path, timeout)
        yield url
    finally:
        terminate(proc, timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)


def terminate(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM a process this test session started (by PID), SIGKILL it if it outlives `timeout`."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for_job_server(proc: subprocess.Popen, url: str, log_path: Path, timeout: float) -> None:
    """Until the dashboard answers the job API (the head is up), or fail with the head's log."""
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/api/jobs/", timeout=5).status_code == 200:
                return
        time.sleep(1)
    raise TimeoutError(f"no job server at {url} after {timeout} s:\n{log_path.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def job_head() -> Iterator[str]:
    """A local Ray head (2 CPUs) in its own process; yields its job-submission URL."""
    with _ray_head() as url:
        yield url
