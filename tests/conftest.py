"""Shared fixtures: a private Ray cluster per test module (own temp dir, no dashboard clash)."""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def _gpu_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def _bench_baselines_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("evidently", "sdmetrics", "cleanlab"))


def pytest_collection_modifyitems(config, items):
    """GPU-marked tests run only where CUDA exists (the GPU machine); bench-marked tests only where the
    `bench` extra is installed (its own venv, .venv-bench: `make test` runs them there). Elsewhere they
    are deselected, not skipped."""
    gpu, bench = _gpu_available(), _bench_baselines_available()
    keep, drop = [], []
    for item in items:
        off = ("gpu" in item.keywords and not gpu) or ("bench" in item.keywords and not bench)
        (drop if off else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="module")
def ray_cluster():
    """Ray with 2 CPUs and 2 fake GPUs in a private temp dir; shut down after the module."""
    import ray

    tmp = tempfile.mkdtemp(prefix="ray_t_", dir="/tmp")
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, namespace="attractor-test", _temp_dir=tmp,
             log_to_driver=False)
    yield ray
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)
