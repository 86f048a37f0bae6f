"""cluster.connect: embedded start with detected resources, namespace, and reuse."""
from __future__ import annotations

import os
import shutil
import tempfile

import pytest

pytestmark = pytest.mark.slow


def test_connect_starts_embedded_cluster_in_attractor_namespace(monkeypatch, capsys):
    import ray

    from cluster import connect, detect_resources

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    tmp = tempfile.mkdtemp(prefix="ray_c_", dir="/tmp")
    try:
        connect(include_dashboard=False, _temp_dir=tmp)
        assert ray.get_runtime_context().namespace == "attractor"
        assert ray.cluster_resources()["CPU"] == detect_resources()["num_cpus"] == os.cpu_count()
        assert "started embedded Ray" in capsys.readouterr().out
        connect()  # second call reuses the running instance
        assert ray.is_initialized()
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def test_connect_survives_a_dashboard_port_taken_after_the_check(monkeypatch, capsys):
    """The race: the port looks free when checked, another process binds it before Ray does. The
    embedded start retries on a port the OS reports free, and says so, instead of dying."""
    import importlib
    import socket

    import ray

    cc = importlib.import_module("cluster.connect")   # the package re-exports the function under this name

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if not cc._dashboard_installed():
        pytest.fail("the dashboard extra is a project dependency (ray[default])")
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    monkeypatch.setattr(cc, "DASHBOARD_PORT", taken)
    monkeypatch.setattr(cc, "_port_free", lambda port, host="127.0.0.1": True)   # the check saw it free
    tmp = tempfile.mkdtemp(prefix="ray_c_", dir="/tmp")
    try:
        ctx = cc.connect(num_cpus=1, num_gpus=0, _temp_dir=tmp)
        out = capsys.readouterr().out
        assert f"dashboard port {taken} unavailable" in out
        port = int(ctx.dashboard_url.rsplit(":", 1)[1])
        assert port != taken and f"dashboard http://{ctx.dashboard_url}" in out
    finally:
        ray.shutdown()
        squatter.close()
        shutil.rmtree(tmp, ignore_errors=True)
