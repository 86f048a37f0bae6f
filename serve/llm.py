"""OpenAI-compatible LLM serving: vLLM engines as Ray Serve LLM deployments (`ray.serve.llm`).

    python -m jobs.llm_tiny --out runs/tiny
    serve run serve.llm:build_app model_source=runs/tiny profile=cpu          # 127.0.0.1:8000
    serve run serve.llm:build_app 'models=[qwen2.5-0.5b-dummy.yaml, llama-3.1-8b-dummy.yaml]' profile=gpu
    python -m serve.build serve.llm:app -o llm.yaml     # a RayService serveConfigV2 (see docs/llm.md)

One application serves one or more models (`models`: presets of configs/llm or YAML files, each an
`actors.llm.config.EngineSpec`), each as its own `LLMServer` deployment behind one OpenAI ingress
(`ray.serve.llm.build_openai_app`): GET /v1/models, POST /v1/completions, /v1/chat/completions
(`stream: true` answers server-sent events). `profile=cpu` runs every model on CPU workers (fp32, eager;
configuration only), `profile=gpu` as the presets say (GPU workers pinned by `accelerator`; one replica
per GPU or per tensor-parallel group, Ray placement groups).

Errors (OpenAI's envelope, {"error": {message, type, param, code}}, from Ray Serve LLM and vLLM): an
unknown model is 404 naming it; a prompt longer than max_model_len, max_tokens <= 0, temperature < 0,
top_p outside (0, 1], malformed JSON and wrong types are 400 naming the field. The ingress
(`LLMIngress`, Ray's OpenAiIngress) puts the field's name in `param` for schema errors (Ray's handler
puts the offending value there). A model directory that is missing or corrupt is refused by
`build_app` before anything starts (InputError naming the path).
"""
from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator
from ray.serve import Application

from actors.common.config import Strict, validated
from actors.common.errors import InputError, UnknownName
from actors.llm.config import (
    EngineSpec,
    Profile,
    apply_profile,
    check_model_source,
    deployment_settings,
    engine_kwargs,
    load_engine_spec,
    runtime_env_vars,
)
from serve.common import parse_cli_args

__all__ = ["LLMServeArgs", "build_app", "engine_specs", "llm_config"]   # and `app`, built on first access


class LLMServeArgs(Strict):
    """`serve run serve.llm:build_app key=value ...` (each value read as YAML)."""

    models: list[str] = Field(default_factory=lambda: ["tiny.yaml"], min_length=1, max_length=32)
    model_source: str | None = None    # overrides the model_source of the one model served
    model_id: str | None = None        # overrides its model_id
    profile: Profile | None = None     # cpu: every model on CPU workers; gpu / unset: as the presets say
    check_sources: bool = True         # validate model directories before building (off: serve build only)

    @model_validator(mode="after")
    def _one_model_for_overrides(self) -> LLMServeArgs:
        if (self.model_source or self.model_id) and len(self.models) != 1:
            raise InputError("model_source", "model_source / model_id override a single model", "one entry in models")
        return self


def _accelerators() -> set[str]:
    from ray.util.accelerators import accelerators

    return {v for k, v in vars(accelerators).items() if k.isupper() and isinstance(v, str)}


def engine_specs(args: LLMServeArgs) -> list[EngineSpec]:
    """The validated, profiled specs of the app's models (model sources checked unless told not to)."""
    specs = [apply_profile(load_engine_spec(m, model_source=args.model_source, model_id=args.model_id), args.profile)
             for m in args.models]
    seen: set[str] = set()
    for s in specs:
        if s.model_id in seen:
            raise InputError("models", f"model_id {s.model_id!r} is served twice", "distinct model_id values")
        seen.add(s.model_id)
        if not s.on_cpu and s.accelerator != "gpu" and s.accelerator not in _accelerators():
            raise UnknownName("accelerator", s.accelerator, sorted(_accelerators() | {"cpu", "gpu"}))
        if args.check_sources:
            check_model_source(s)
    return specs


def llm_config(spec: EngineSpec) -> Any:
    """The `ray.serve.llm.LLMConfig` of one engine spec."""
    from ray.serve.llm import LLMConfig

    kw: dict[str, Any] = {}
    if spec.on_cpu:
        kw["accelerator_config"] = {"kind": "cpu"}
        kw["placement_group_config"] = {"bundles": [{"CPU": spec.cpus_per_worker}], "strategy": "PACK"}
    elif spec.accelerator == "gpu":
        kw["placement_group_config"] = {"bundle_per_worker": {"GPU": 1, "CPU": spec.cpus_per_worker}, "strategy": "PACK"}
    else:
        kw["accelerator_type"] = spec.accelerator
    # frontend option of vLLM's OpenAI server: usage.prompt_tokens_details.cached_tokens (prefix-cache hits)
    frontend = {"enable_prompt_tokens_details": True}
    return LLMConfig(model_loading_config={"model_id": spec.model_id, "model_source": spec.source_path()},
                     engine_kwargs=engine_kwargs(spec) | frontend, deployment_config=deployment_settings(spec),
                     runtime_env={"env_vars": runtime_env_vars(spec)}, log_engine_metrics=spec.log_engine_metrics,
                     **kw)


async def _schema_error(_: Any, exc: Any) -> Any:
    """A request that fails the OpenAI schema: 400 in OpenAI's envelope, `param` = the dotted field."""
    from fastapi.responses import JSONResponse

    err = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    param = "body" if err.get("type") == "json_invalid" or not loc else ".".join(loc)
    return JSONResponse(status_code=400, content={"error": {
        "message": f"Invalid request: {param}: {err.get('msg', 'invalid value')}",
        "type": err.get("type", "invalid_request_error"), "param": param, "code": "invalid_parameter"}})


def ingress_cls() -> type:
    """Ray's OpenAI ingress with the schema-error handler above (installed when the replica sets its app)."""
    from fastapi.exceptions import RequestValidationError
    from ray.serve.llm.ingress import OpenAiIngress

    class LLMIngress(OpenAiIngress):
        def _set_asgi_app(self, app: Any) -> None:
            app.add_exception_handler(RequestValidationError, _schema_error)
            super()._set_asgi_app(app)   # type: ignore[misc]

    return LLMIngress


def build_app(args: dict | None = None) -> Application:
    """Application builder for `serve run` / `serve build` (args are LLMServeArgs fields)."""
    from ray.serve.llm import build_openai_app

    cfg = validated(LLMServeArgs, parse_cli_args(args))
    return build_openai_app({"llm_configs": [llm_config(s) for s in engine_specs(cfg)],
                             "ingress_cls_config": {"ingress_cls": ingress_cls()}})


def __getattr__(name: str) -> Any:
    """`app` (for `python -m serve.build serve.llm:app`) is built on first access, not at import: building
    a Ray Serve LLM app reads the Ray runtime context, which starts (or joins) a Ray cluster. It is the
    tiny preset by name; a deployment sets the model with `import_path: serve.llm:build_app` and
    `args: {model_source: ..., profile: ...}` (docs/llm.md)."""
    if name == "app":
        value = build_app({"check_sources": False})
        globals()["app"] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
