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
