#!/bin/sh
# The project's install steps: the one source for `make` (.venv, .venv-bench) and the Dockerfile.
#   sh cluster/install.sh PYTHON PIP_ARGS...
#   sh cluster/install.sh .venv/bin/python -e ".[dev]"            # Makefile: the dev venv
#   sh cluster/install.sh /opt/venv/bin/python ".[gpu]"           # Dockerfile: the image
# torch first, pinned (on a machine whose index serves the CPU build that is what it gets; on PyPI proper
# the CUDA build); the project's `torch>=2.5` is then already satisfied and nothing pulls another torch.
set -eu
PY="$1"
shift
"$PY" -m pip install -q torch==2.13.0
"$PY" -m pip install -q "$@"
