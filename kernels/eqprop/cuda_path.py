"""Where the CUDA toolkit (NVRTC) is, for CuPy's RawKernel: a pure decision over probed facts.

CuPy compiles RawKernels with NVRTC and finds headers / libraries under CUDA_PATH. Machines differ:
a system toolkit (CUDA_PATH / CUDA_HOME set), only torch's wheels (torch.utils.cpp_extension.CUDA_HOME,
or the nvidia-* pip packages holding libnvrtc), an nvcc on PATH, or just a libnvrtc the dynamic
linker knows (ldconfig -p). `find_cuda_path(facts)` picks the first source that exists, in this order:

    1. env CUDA_PATH, then env CUDA_HOME
    2. torch's CUDA (torch.utils.cpp_extension.CUDA_HOME), then the nvidia pip packages' directories
    3. nvcc on PATH (its bin/ directory's parent)
    4. `ldconfig -p` listing libnvrtc (the library directory's parent)

and returns (path, source); with none it raises CudaNotFound listing what was looked at. `probe()`
gathers the facts from this machine (the only impure part), `cuda_path()` = find_cuda_path(probe()),
and `ensure_cuda_path()` sets CUDA_PATH from it (when unset) before CuPy is imported.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["CudaFacts", "CudaNotFound", "cuda_path", "ensure_cuda_path", "find_cuda_path", "probe"]


class CudaNotFound(RuntimeError):
    """No CUDA toolkit / NVRTC found; the message lists every source checked."""


@dataclass(frozen=True)
class CudaFacts:
    """What probe() saw: environment, torch's CUDA_HOME, nvidia pip package directories, the nvcc on
    PATH and the text of `ldconfig -p` (None where a source is missing)."""

    env: Mapping[str, str] = field(default_factory=dict)
    torch_cuda_home: str | None = None
    pip_dirs: Sequence[str] = ()
    nvcc: str | None = None
    ldconfig: str | None = None


def _ldconfig_nvrtc(text: str | None) -> str | None:
    """The directory above the first libnvrtc.so* in `ldconfig -p` output (e.g. /usr/local/cuda/lib64 -> /usr/local/cuda)."""
    for line in (text or "").splitlines():
        if "libnvrtc.so" in line and "=>" in line:
            lib = line.split("=>", 1)[1].strip()
            return os.path.dirname(os.path.dirname(lib))
    return None


def find_cuda_path(facts: CudaFacts, isdir: Callable[[str], bool] = os.path.isdir) -> tuple[str, str]:
    """(toolkit root, which source gave it): the first existing candidate in the module's order."""
    candidates: list[tuple[str, str | None]] = [
        ("env CUDA_PATH", facts.env.get("CUDA_PATH")),
        ("env CUDA_HOME", facts.env.get("CUDA_HOME")),
        ("torch CUDA_HOME", facts.torch_cuda_home),
        *[("nvidia pip package", d) for d in facts.pip_dirs],
        ("nvcc on PATH", os.path.dirname(os.path.dirname(facts.nvcc)) if facts.nvcc else None),
        ("ldconfig libnvrtc", _ldconfig_nvrtc(facts.ldconfig)),
    ]
    for source, path in candidates:
        if path and isdir(path):
            return path, source
    looked = ", ".join(f"{s}={p!r}" for s, p in candidates if s != "nvidia pip package")
    looked += f", nvidia pip packages={list(facts.pip_dirs)!r}"
    raise CudaNotFound(f"no CUDA toolkit found for CuPy (looked at: {looked}); set CUDA_PATH to the toolkit "
                       "root, or install the nvidia-cuda-nvrtc wheel")


def _pip_dirs() -> list[str]:
    """nvidia pip package roots that hold NVRTC (cu13 / cu12 layouts), wherever `nvidia` is importable."""
    try:
        import nvidia  # type: ignore[import-not-found]
    except ImportError:
        return []
    out = []
    for base in getattr(nvidia, "__path__", []):
        for sub in ("cu13", "cu12", "cuda_nvrtc", "cuda_runtime"):
            d = os.path.join(base, sub)
            if os.path.isdir(d):
                out.append(d)
    return out


def _torch_cuda_home() -> str | None:
    try:
        from torch.utils.cpp_extension import CUDA_HOME
    except Exception:  # noqa: BLE001 - a broken torch install only removes this source
        return None
    return CUDA_HOME


def _ldconfig() -> str | None:
    exe = shutil.which("ldconfig") or ("/sbin/ldconfig" if os.path.exists("/sbin/ldconfig") else None)
    if exe is None:
        return None
    try:
        return subprocess.run([exe, "-p"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def probe() -> CudaFacts:
    """The facts of this machine."""
    env = {k: os.environ[k] for k in ("CUDA_PATH", "CUDA_HOME") if k in os.environ}
    return CudaFacts(env=env, torch_cuda_home=_torch_cuda_home(), pip_dirs=_pip_dirs(), nvcc=shutil.which("nvcc"),
                     ldconfig=_ldconfig())


def cuda_path() -> tuple[str, str]:
    """(toolkit root, source) on this machine; CudaNotFound when there is none."""
    return find_cuda_path(probe())


def ensure_cuda_path() -> tuple[str, str]:
    """Set CUDA_PATH (when unset) to the discovered root before CuPy compiles anything."""
    path, source = cuda_path()
    os.environ.setdefault("CUDA_PATH", path)
    return path, source
