"""llm: vLLM engines behind Ray Serve LLM (OpenAI-compatible), the project's tiny test model, batch
inference with Ray Data LLM. See docs/llm.md.

    from actors.llm import build_tiny, load_engine_spec
    build_tiny("runs/tiny")                                   # seeded tiny Llama + BPE + GGUF copies
    spec = load_engine_spec("tiny_cpu.yaml", model_source="runs/tiny")   # configs/llm/*.yaml, validated

Engine modules (no Ray): tiny (the test model), config (EngineSpec, profiles, model-source checks,
the vLLM engine arguments). Ray wrapper, imported by its module path: raydata (batch inference through
Ray Data LLM, `run_batch`). The Serve layer (serve/llm.py) turns an EngineSpec into a
`ray.serve.llm.LLMConfig`.
"""
from __future__ import annotations

from actors.common.lazy import lazy_exports

_EXPORTS = {
    "actors.llm.tiny": ("CHAT_TEMPLATE", "CORPUS", "GGUF_TYPES", "TinySpec", "build_tiny", "gguf_path"),
    "actors.llm.config": ("Autoscaling", "EngineSpec", "apply_profile", "check_model_source", "deployment_settings",
                          "engine_kwargs", "load_engine_spec", "runtime_env_vars"),
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
