"""A real multi-node Ray cluster on this machine (issue 16): a head and two worker nodes, each its own
`ray start` process tree (own temp dirs, ports chosen free, everything on 127.0.0.1), the worker nodes
carrying a custom `accel` resource where KubeRay's `gpu` group would carry GPUs.

1. the RayService's serveConfigV2 rendered by `cluster.kuberay` (values: the sweep app only, token auth on
   with a local token file) is deployed with `serve deploy`, the proxy moved to 127.0.0.1 on a free port and
   to the head only (three proxies of one machine cannot share a port); the app answers 401 without the
   token and a simulation with it;
2. the sweep RayJob's entrypoint is submitted with `ray job submit` twice: once uninterrupted, once with the
   worker node holding a sweep worker killed mid-sweep (SIGKILL to the raylet the test started, then to the
   rest of that node's processes); both jobs succeed and write the same trajectories table.

The head advertises no CPUs (as in cluster/kuberay/values.yaml), so the sweep workers and the replica run
on the worker nodes; GCS health checks are shortened (RAY_health_check_*) so the lost node is noticed in
about 2 s. Every process is stopped by the PID the test holds.
"""
from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pandas as pd
import psutil
import pytest
import yaml
from conftest import _wait_for_job_server, _with_project_path, free_ports, terminate

from cluster.kuberay import load_values, render

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TOKEN = "multinode-token-0123456789"
FAST_HEALTH = {"RAY_health_check_initial_delay_ms": "0", "RAY_health_check_period_ms": "500",
               "RAY_health_check_failure_threshold": "4"}
# Each node gets its own loopback address: Ray rewrites a bootstrap address of 127.0.0.1 / localhost to the
# machine's network address (services.resolve_ip_for_localhost), but not 127.0.0.2, so nothing leaves lo.
HEAD_IP, WORKER_IPS = "127.0.0.2", {"w1": "127.0.0.3", "w2": "127.0.0.4"}


def _env() -> dict[str, str]:
    env = _with_project_path({**os.environ, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0", **FAST_HEALTH})
    env.pop("RAY_ADDRESS", None)
    env["PATH"] = os.pathsep.join((str(BIN), env.get("PATH", "")))   # `python` of an entrypoint = this venv's
    return env


def _start(args: list[str], tmp: Path, log_name: str) -> subprocess.Popen:
    with open(tmp / log_name, "wb") as log:
        return subprocess.Popen([str(BIN / "ray"), "start", "--block", "--disable-usage-stats", *args],
                                stdout=log, stderr=subprocess.STDOUT, env=_env(), cwd=ROOT)


def _stop(proc: subprocess.Popen) -> None:
    """Stop a `ray start --block` tree: SIGTERM it (it stops what it started), then kill any child left
    behind, all by PID."""
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    terminate(proc, timeout=30)
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


@pytest.fixture(scope="module")
def three_nodes():
    """(dashboard URL, {node tag: its `ray start` process}, temp dir) of a head and two worker nodes."""
    tmp = Path(tempfile.mkdtemp(prefix="ray_mn_", dir="/tmp"))
    ports = free_ports(9)
    gcs, dash = ports[0], ports[1]
    head = _start(["--head", "--num-cpus=0", "--num-gpus=0", f"--node-ip-address={HEAD_IP}", f"--port={gcs}",
                   "--include-dashboard=true", f"--dashboard-host={HEAD_IP}", f"--dashboard-port={dash}",
                   f"--ray-client-server-port={ports[2]}", f"--node-manager-port={ports[3]}",
                   f"--object-manager-port={ports[4]}", f"--dashboard-agent-listen-port={ports[5]}",
                   f"--dashboard-agent-grpc-port={ports[6]}", f"--metrics-export-port={ports[7]}",
                   f"--runtime-env-agent-port={ports[8]}", f"--temp-dir={tmp}"], tmp, "head.log")
    procs = {"head": head}
    url = f"http://{HEAD_IP}:{dash}"
    try:
        _wait_for_job_server(head, url, tmp / "head.log", 120)
        for n, tag in enumerate(("w1", "w2"), start=2):   # one at a time: a loaded 2-core machine
            for attempt in range(2):                     # (a raylet gets 30 s to register, hard-coded)
                wp = free_ports(6)
                procs[tag] = _start([f"--address={HEAD_IP}:{gcs}", "--num-cpus=3", "--num-gpus=0",
                                     f"--node-ip-address={WORKER_IPS[tag]}",
                                     f"--resources={json.dumps({'accel': 1, tag: 1})}",
                                     f"--node-manager-port={wp[0]}", f"--object-manager-port={wp[1]}",
                                     f"--dashboard-agent-listen-port={wp[2]}", f"--dashboard-agent-grpc-port={wp[3]}",
                                     f"--metrics-export-port={wp[4]}", f"--runtime-env-agent-port={wp[5]}",
                                     f"--temp-dir={tmp}"], tmp, f"{tag}-{attempt}.log")
                deadline = time.time() + 90
                while len(_alive_nodes(url)) < n and procs[tag].poll() is None and time.time() < deadline:
                    time.sleep(1)
                if len(_alive_nodes(url)) >= n:
                    break
                _stop(procs[tag])
            assert len(_alive_nodes(url)) >= n, (tmp / f"{tag}-1.log").read_text()[-2000:]
        yield url, procs, tmp
    finally:
        for proc in reversed(list(procs.values())):
            _stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def _state(url: str, what: str) -> list[dict]:
    r = httpx.get(f"{url}/api/v0/{what}", params={"limit": 1000, "detail": "true"}, timeout=30)
    r.raise_for_status()
    return r.json()["data"]["result"]["result"]


def _alive_nodes(url: str) -> dict[str, dict]:
    with contextlib.suppress(httpx.HTTPError):
        return {n["node_id"]: n for n in _state(url, "nodes") if n["state"] == "ALIVE"}
    return {}


def _cli(*args: str, timeout: float = 120) -> str:
    done = subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, env=_env(), cwd=ROOT,
                          timeout=timeout)
    assert done.returncode == 0, f"{args}: {done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def rendered(three_nodes, tmp_path_factory):
    """Manifests from the default values with the test's sweep job, only the sweep app and a local token."""
    _, _, tmp = three_nodes
    token_dir = tmp_path_factory.mktemp("token")
    (token_dir / "token").write_text(TOKEN)
    values = load_values(overrides={
        "serve.apps": {"sweep": {"module": "serve.sweep", "route_prefix": "/sweep", "args": {"num_cpus": 0.25}}},
        "serve.auth.mount_path": str(token_dir),
        "jobs.sweep.args": ["--config", "configs/sweep/ci_tiny.yaml", "--out", "OUT", "--no-progress", "--set",
                            "chunk_size=3", "solver.t_span=[0.0, 20.0]", "workers.num_workers=2",
                            "workers.num_gpus=0", "workers.num_cpus=1"]})
    return render(values)


def test_cluster_has_three_nodes_and_the_stand_in_resource(three_nodes):
    url, _, _ = three_nodes
    nodes = _alive_nodes(url)
    assert len(nodes) == 3
    assert sum(n["resources_total"].get("accel", 0) for n in nodes.values()) == 2
    assert sum(n["resources_total"].get("CPU", 0) for n in nodes.values()) == 6   # the head advertises none


def test_rendered_serve_config_deploys_and_answers(three_nodes, rendered, tmp_path):
    url, _, _ = three_nodes
    config = yaml.safe_load(rendered["rayservice.yaml"]["spec"]["serveConfigV2"])
    http_port, grpc_port = free_ports(2)
    config["http_options"].update(host="127.0.0.1", port=http_port)   # loopback only, a free port
    config["grpc_options"]["port"] = grpc_port
    config["proxy_location"] = "HeadOnly"   # one machine: the nodes' proxies would share the port
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    _cli("serve", "deploy", str(path), "--address", url)
    base = f"http://127.0.0.1:{http_port}/sweep"
    deadline, last = time.time() + 120, None
    while True:
        with contextlib.suppress(httpx.HTTPError):
            last = httpx.get(f"{base}/healthz", timeout=10)
            if last.status_code == 200:
                break
        assert time.time() < deadline, (last and (last.status_code, last.text), _cli("serve", "status", "--address", url))
        time.sleep(1)
    body = {"model": "lorenz", "t_span": [0.0, 1.0], "n_save": 5, "solver": {"lyapunov": False}}
    assert httpx.post(f"{base}/sweep/simulate", json=body, timeout=60).status_code == 401
    r = httpx.post(f"{base}/sweep/simulate", json=body, headers={"authorization": f"Bearer {TOKEN}"}, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "lorenz" and len(r.json()["t"]) == 5, r.json()
    _cli("serve", "shutdown", "--address", url, "-y")


def _submit(url: str, entrypoint: list[str]) -> str:
    out = _cli("ray", "job", "submit", "--address", url, "--no-wait", "--", *entrypoint)
    return next(line.split("'")[1] for line in out.splitlines() if "submitted successfully" in line)


def _wait_job(url: str, job_id: str, timeout: float = 240) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = httpx.get(f"{url}/api/jobs/{job_id}", timeout=30).json()["status"]
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            return status
        time.sleep(0.5)
    return "TIMEOUT"


def _entrypoint(rendered: dict, out: Path) -> list[str]:
    argv = shlex.split(rendered["rayjob-sweep.yaml"]["spec"]["entrypoint"])
    argv[argv.index("OUT")] = str(out)
    return argv


def test_sweep_job_survives_a_lost_worker_node(three_nodes, rendered, tmp_path):
    url, procs, _ = three_nodes
    ref_id = _submit(url, _entrypoint(rendered, tmp_path / "ref"))
    assert _wait_job(url, ref_id) == "SUCCEEDED", _cli("ray", "job", "logs", "--address", url, ref_id)

    lost = tmp_path / "lost"
    job_id = _submit(url, _entrypoint(rendered, lost))
    deadline = time.time() + 180
    while len(list((lost / "chunks").glob("*.parquet"))) < 2:
        assert time.time() < deadline and _wait_job(url, job_id, 0) == "TIMEOUT", "no chunks written"
        time.sleep(0.05)
    done_before = len(list((lost / "chunks").glob("*.parquet")))
    nodes = _alive_nodes(url)
    workers = [a for a in _state(url, "actors") if a.get("name", "").startswith("sweep-worker")
               and a["state"] == "ALIVE"]
    target_node = workers[0]["node_id"]
    tag = next(t for t in ("w1", "w2") if nodes[target_node]["resources_total"].get(t))
    tree = psutil.Process(procs[tag].pid).children(recursive=True)
    raylet = next(p for p in tree if "raylet" in p.name())
    raylet.send_signal(signal.SIGKILL)          # the node dies: its raylet first, by the PID we started
    for p in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    killed_at = time.time()
    status = _wait_job(url, job_id)
    logs = _cli("ray", "job", "logs", "--address", url, job_id)
    print(f"\n[multinode] node {tag} killed with {done_before}/12 chunks stored; job {status} "
          f"{time.time() - killed_at:.1f} s later")
    assert status == "SUCCEEDED", logs[-3000:]
    assert 2 <= done_before < 12
    assert len(_alive_nodes(url)) == 2
    summary = json.loads((lost / "summary.json").read_text())
    assert summary["n_chunks"] == 12 and summary["chunks_computed"] == 12, summary
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "ref" / "trajectories.parquet"),
                                  pd.read_parquet(lost / "trajectories.parquet"))
