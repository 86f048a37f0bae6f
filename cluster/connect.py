"""One way into Ray for every job, test and notebook.

`connect()` joins the cluster named by an explicit address or RAY_ADDRESS (which `ray job submit`
sets), and otherwise starts an embedded local Ray sized to this machine, so `python -m jobs.X`
works alone on a laptop and unchanged on a KubeRay head.
"""
from __future__ import annotations

import os
import shutil
import socket
from typing import Any

NAMESPACE = "attractor"
DASHBOARD_HOST = "127.0.0.1"
DASHBOARD_PORT = 8265
DASHBOARD_ATTEMPTS = 3


def detect_resources() -> dict[str, int]:
    """CPUs and CUDA GPUs visible to this process (GPUs via torch, else nvidia-smi)."""
    num_cpus = os.cpu_count() or 1
    num_gpus = 0
    try:
        import torch

        num_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # torch missing or broken CUDA: fall back to the driver tool
        num_gpus = 0
    if num_gpus == 0 and shutil.which("nvidia-smi"):
        import subprocess

        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False).stdout
        num_gpus = sum(1 for line in out.splitlines() if line.startswith("GPU "))
    return {"num_cpus": num_cpus, "num_gpus": num_gpus}


def _dashboard_installed() -> bool:
    import ray._private.utils as ray_utils

    return ray_utils.get_dashboard_dependency_error() is None   # minimal install: no dashboard


def _port_free(port: int, host: str = DASHBOARD_HOST) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def _any_free_port(host: str = DASHBOARD_HOST) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def dashboard_ports(attempts: int = DASHBOARD_ATTEMPTS) -> list[int]:
    """8265 when it is free, then ports the OS reports free: one per start attempt."""
    first = [DASHBOARD_PORT] if _port_free(DASHBOARD_PORT) else []
    return (first + [_any_free_port() for _ in range(attempts)])[:attempts]


def connect(address: str | None = None, *, namespace: str = NAMESPACE, quiet: bool = False,
            **init_kwargs: Any):
    """Connect to Ray and return the RayContext.

    address / RAY_ADDRESS → join that cluster. Otherwise start an embedded cluster with the
    detected CPUs and GPUs, in namespace `attractor`, with the dashboard on 127.0.0.1:8265 when
    that port is free, else on a free port it prints (a port taken between the check and the bind is
    retried on another port, never fatal). Extra keyword arguments go to `ray.init` (tests pass num_cpus, _temp_dir).
    Safe to call twice: an already initialised Ray is reused.
    """
    import ray

    if ray.is_initialized():
        return ray.get_runtime_context()
    address = address or os.environ.get("RAY_ADDRESS")
    runtime_env = init_kwargs.pop("runtime_env", None)
    if address:
        ctx = ray.init(address=address, namespace=namespace, runtime_env=runtime_env,
                       log_to_driver=True, **init_kwargs)
        where = f"connected to Ray at {address}"
    else:
        res = detect_resources()
        init_kwargs.setdefault("num_cpus", res["num_cpus"])
        init_kwargs.setdefault("num_gpus", res["num_gpus"])
        with_dash = init_kwargs.pop("include_dashboard", None)
        if with_dash is None:
            with_dash = _dashboard_installed()
        ctx = _start_embedded(namespace, with_dash, runtime_env, init_kwargs)
        where = (f"started embedded Ray ({init_kwargs['num_cpus']} CPUs, {init_kwargs['num_gpus']} GPUs)")
    if not quiet:
        dash = getattr(ctx, "dashboard_url", None)
        print(f"[attractor] {where}; namespace={namespace}"
              + (f"; dashboard http://{dash}" if dash else "; dashboard off"), flush=True)
    return ctx


def _start_embedded(namespace: str, with_dash: bool, runtime_env: Any, init_kwargs: dict[str, Any]):
    """ray.init for a new local cluster (address="local": never join another Ray instance that happens to
    run on this machine); a dashboard port lost to a race is retried on another free port."""
    import ray

    if not with_dash or "dashboard_port" in init_kwargs:
        return ray.init(address="local", namespace=namespace, include_dashboard=with_dash, runtime_env=runtime_env,
                        **init_kwargs)
    init_kwargs.setdefault("dashboard_host", DASHBOARD_HOST)
    last: Exception | None = None
    for port in dashboard_ports():
        try:
            return ray.init(address="local", namespace=namespace, include_dashboard=True, runtime_env=runtime_env,
                            dashboard_port=port, **init_kwargs)
        except Exception as exc:   # the port was taken after the check (or the dashboard failed): next port
            last = exc
            if ray.is_initialized():
                ray.shutdown()
            print(f"[attractor] dashboard port {port} unavailable ({type(exc).__name__}); retrying", flush=True)
    raise RuntimeError(f"could not start Ray with a dashboard on {DASHBOARD_ATTEMPTS} ports") from last
