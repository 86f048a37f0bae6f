# syntax=docker/dockerfile:1
# The attractor image: Ray 2.60 + the project on a CUDA runtime base, run as a non-root user (uid 1000,
# the uid the KubeRay manifests' securityContext names). Build:
#   docker build -t ghcr.io/attractor/attractor:0.1.0 .            # the tag cluster/kuberay/values.yaml names
#   docker build --build-arg EXTRAS=gpu,neuro,text -t ...:0.1.0-text .    # more extras (pyproject.toml)
# The install steps are the Makefile's venv steps, through the same script cluster/install.sh (same order and
# arguments but the project's extras: tests/test_deploy_files.py checks it).
ARG CUDA_BASE=nvidia/cuda:12.8.1-runtime-ubuntu22.04
ARG PYTHON=python3.11

# ---- build: a venv with the project and its extras (compilers only here) ----------------------------------
FROM ${CUDA_BASE} AS build
ARG PYTHON
ARG EXTRAS=gpu,neuro
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends ${PYTHON} ${PYTHON}-venv ${PYTHON}-dev build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN ${PYTHON} -m venv /opt/venv && /opt/venv/bin/python -m pip install -q --upgrade pip
WORKDIR /app
COPY . /app
RUN sh cluster/install.sh /opt/venv/bin/python ".[${EXTRAS}]"
RUN DS_BUILD_OPS=0 sh cluster/install.sh /opt/venv/bin/python --no-build-isolation "deepspeed==0.19.8"

# ---- runtime: the CUDA runtime, the interpreter, the venv and the sources (configs, jobs) -----------------
FROM ${CUDA_BASE} AS runtime
ARG PYTHON
ENV DEBIAN_FRONTEND=noninteractive
# wget: KubeRay's default exec probes call it
RUN apt-get update \
 && apt-get install -y --no-install-recommends ${PYTHON} wget ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 1000 ray \
 && useradd --uid 1000 --gid 1000 --create-home --shell /bin/bash ray
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=1000:1000 /app /app
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0 HOME=/home/ray
WORKDIR /app
USER 1000:1000
CMD ["python", "-m", "jobs.demo", "--help"]
