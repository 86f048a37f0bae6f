"""LLM engine configs as data: `configs/llm/*.yaml` -> `EngineSpec` (validated, Strict) -> the vLLM engine
arguments and deployment settings that the Serve layer (serve/llm.py: `ray.serve.llm.LLMConfig`) and the
batch layer (actors/llm/raydata.py: `ray.data.llm.vLLMEngineProcessorConfig`) are built from.

A profile changes configuration only, never code: `apply_profile(spec, "cpu")` is the same model on
CPU workers (fp32, eager, one worker, a KV cache of `kv_cache_gb`), `"gpu"` the preset as written
(GPU workers pinned by `accelerator`, one replica per GPU or per tensor-parallel group).

`check_model_source(spec)` validates the model directory or GGUF file *before* anything starts: a
missing path, a directory without config.json / weights / tokenizer, an unreadable config.json or a
safetensors / GGUF file with a bad header is an InputError naming `model_source` and the path.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from actors.common.config import Strict, load_yaml, validated
from actors.common.errors import InputError, NotFound

__all__ = ["Autoscaling", "DType", "EngineSpec", "Profile", "Source", "apply_profile", "check_model_source",
           "deployment_settings", "engine_kwargs", "load_engine_spec", "runtime_env_vars"]

Source = Literal["safetensors", "gguf", "dummy"]   # dummy: vLLM's random weights on a config.json's shapes
DType = Literal["auto", "float32", "float16", "bfloat16"]
Profile = Literal["cpu", "gpu"]

# what the cpu profile sets (the gpu profile leaves the preset as written)
CPU_PROFILE: dict[str, Any] = {"accelerator": "cpu", "dtype": "float32", "enforce_eager": True,
                               "tensor_parallel_size": 1}


class Autoscaling(Strict):
    """Serve replicas of one model: fixed when min == max, else Serve's autoscaler between them."""

    min_replicas: int = Field(1, ge=0, le=256)
    max_replicas: int = Field(1, ge=1, le=256)
    target_ongoing_requests: float = Field(16.0, gt=0, le=10_000)

    @model_validator(mode="after")
    def _ordered(self) -> Autoscaling:
        if self.max_replicas < self.min_replicas:
            raise InputError("max_replicas", f"{self.max_replicas} is below min_replicas {self.min_replicas}",
                             f">= {self.min_replicas}")
        return self


class EngineSpec(Strict):
    """One served model: what to load, how the engine runs it, where its replicas go."""

    model_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")   # the name clients send
    model_source: str | None = None   # a local directory (or hub id where the network allows); None: model_id
    source: Source = "safetensors"
    gguf_file: str | None = None      # source: gguf — the .gguf file (relative to model_source or absolute)
    tokenizer: str | None = None      # a tokenizer directory other than model_source (gguf: model_source)
    dtype: DType = "auto"
    max_model_len: int = Field(2048, ge=16, le=1_048_576)
    max_num_seqs: int = Field(64, ge=1, le=4096)
    tensor_parallel_size: int = Field(1, ge=1, le=64)
    accelerator: str = Field("cpu", pattern=r"^[A-Za-z0-9_.-]{1,64}$")   # cpu, gpu (any) or a Ray accelerator type (H100, H200, L4, ...)
    cpus_per_worker: float = Field(1.0, gt=0, le=256)    # CPU share of each engine worker's placement bundle
    enforce_eager: bool = False
    enable_prefix_caching: bool = True
    prefix_cache_affinity: bool = False     # Serve's PrefixCacheAffinityRouter instead of power-of-two
    kv_cache_gb: float = Field(1.0, gt=0, le=4096)          # CPU: VLLM_CPU_KVCACHE_SPACE
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)   # GPU: share of memory for weights + KV cache
    seed: int = Field(0, ge=0, le=2**31 - 1)
    max_ongoing_requests: int = Field(256, ge=1, le=100_000)
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    log_engine_metrics: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> EngineSpec:
        if self.source == "gguf" and not self.gguf_file:
            raise InputError("gguf_file", "source: gguf needs the .gguf file", "a path ending in .gguf")
        if self.gguf_file and not self.gguf_file.endswith(".gguf"):
            raise InputError("gguf_file", f"{self.gguf_file!r} does not end in .gguf", "a path ending in .gguf")
        if self.accelerator == "cpu" and self.tensor_parallel_size != 1:
            raise InputError("tensor_parallel_size", "CPU engines here run one worker", "1 with accelerator: cpu")
        return self

    @property
    def on_cpu(self) -> bool:
        return self.accelerator == "cpu"

    def source_path(self) -> str:
        """Where vLLM loads from: the directory, or the GGUF file for source: gguf."""
        base = self.model_source or self.model_id
        if self.source == "gguf" and self.gguf_file:
            g = Path(self.gguf_file)
            return str(g if g.is_absolute() else Path(base) / g)
        return base


def apply_profile(spec: EngineSpec, profile: Profile | None) -> EngineSpec:
    """The spec under `profile` (configuration only): cpu -> CPU_PROFILE, gpu / None -> as written."""
    if profile == "cpu":
        return validated(EngineSpec, spec, **CPU_PROFILE)
    if profile == "gpu" and spec.on_cpu:
        raise InputError("profile", f"model {spec.model_id!r} names no GPU accelerator", "a preset with accelerator: <type>")
    return spec


def load_engine_spec(preset_or_path: str | Path, **overrides: Any) -> EngineSpec:
    """A preset of configs/llm (by file name, e.g. "tiny.yaml") or a YAML path, with field overrides."""
    from configs import preset, presets

    p = Path(preset_or_path)
    if not p.is_file():
        candidate = preset("llm", p.name if p.suffix else f"{p.name}.yaml")
        if p.parent != Path(".") or not candidate.is_file():
            known = [q.name for q in presets("llm")]
            raise NotFound("models", f"no LLM preset or file {str(preset_or_path)!r}", ", ".join(known))
        p = candidate
    raw = load_yaml(p.read_text()) or {}
    if not isinstance(raw, dict):
        raise InputError("models", f"{p} holds a {type(raw).__name__}, not a mapping", "a YAML mapping")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    return validated(EngineSpec, raw, prefix=f"{p.name}: ")


def _bad(path: Path, message: str) -> InputError:
    return InputError("model_source", f"{path}: {message}", "a model directory written by save_pretrained / jobs.llm_tiny")


def _check_safetensors(path: Path) -> None:
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) != 8:
            raise _bad(path, "truncated safetensors file")
        (n,) = struct.unpack("<Q", head)
        if not 0 < n < 100_000_000:
            raise _bad(path, "not a safetensors file (bad header length)")
        try:
            json.loads(fh.read(n))
        except ValueError:
            raise _bad(path, "not a safetensors file (unreadable header)") from None


def check_model_source(spec: EngineSpec) -> None:
    """Fail early, naming the path, when the model cannot be loaded from a local directory / file.

    Sources that are not local paths (a hub id) are left to vLLM; `dummy` needs only config.json."""
    base = Path(spec.model_source or spec.model_id)
    local = spec.model_source is not None or base.exists() or spec.model_id.startswith(("/", "."))
    if not local:
        return
    if not base.is_dir():
        raise InputError("model_source", f"{base}: no such model directory", "an existing directory")
    config = base / "config.json"
    if not config.is_file():
        raise _bad(config, "missing (every model directory holds its config.json)")
    try:
        cfg = json.loads(config.read_text())
        if not isinstance(cfg, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        raise _bad(config, f"unreadable ({exc})") from None
    if spec.source == "dummy":
        return
    if not any((base / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        raise _bad(base, "no tokenizer (tokenizer.json, tokenizer.model or vocab.json)")
    if spec.source == "gguf":
        g = Path(spec.source_path())
        if not g.is_file():
            raise InputError("gguf_file", f"{g}: no such GGUF file", "an existing .gguf file")
        with open(g, "rb") as fh:
            if fh.read(4) != b"GGUF":
                raise InputError("gguf_file", f"{g}: not a GGUF file (bad magic)", "a GGUF v3 file")
        return
    weights = sorted(base.glob("*.safetensors"))
    if not weights:
        raise _bad(base, "no *.safetensors weights")
    for w in weights:
        _check_safetensors(w)


def engine_kwargs(spec: EngineSpec) -> dict[str, Any]:
    """vLLM engine arguments (the same for Serve's LLMConfig and Ray Data's processor)."""
    kw: dict[str, Any] = {"dtype": spec.dtype, "max_model_len": spec.max_model_len, "max_num_seqs": spec.max_num_seqs,
                          "tensor_parallel_size": spec.tensor_parallel_size, "enforce_eager": spec.enforce_eager,
                          "enable_prefix_caching": spec.enable_prefix_caching, "seed": spec.seed}
    if spec.source == "dummy":
        kw["load_format"] = "dummy"
    if spec.tokenizer or spec.source == "gguf":
        kw["tokenizer"] = spec.tokenizer or spec.model_source or spec.model_id   # gguf: the HF tokenizer beside it
    if not spec.on_cpu:
        kw["gpu_memory_utilization"] = spec.gpu_memory_utilization
    return kw


def runtime_env_vars(spec: EngineSpec) -> dict[str, str]:
    """Environment of the engine processes: no hub downloads; the CPU KV cache size."""
    env = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if spec.on_cpu:
        env["VLLM_CPU_KVCACHE_SPACE"] = f"{spec.kv_cache_gb:g}"
    return env


def deployment_settings(spec: EngineSpec) -> dict[str, Any]:
    """Serve deployment options of the model's LLMServer (replicas, routing, actor resources)."""
    a = spec.autoscaling
    d: dict[str, Any] = {"max_ongoing_requests": spec.max_ongoing_requests}
    if a.min_replicas == a.max_replicas:
        d["num_replicas"] = a.min_replicas
    else:
        d["autoscaling_config"] = {"min_replicas": a.min_replicas, "max_replicas": a.max_replicas,
                                   "target_ongoing_requests": a.target_ongoing_requests}
    if spec.on_cpu:
        # the replica actor itself holds no CPU: on a 2-core machine its engine worker's bundle and the
        # ingress would otherwise not both fit
        d["ray_actor_options"] = {"num_cpus": 0}
    if spec.prefix_cache_affinity:
        d["request_router_config"] = {
            "request_router_class": "ray.serve.llm.request_router:PrefixCacheAffinityRouter"}
    return d
