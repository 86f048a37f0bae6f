"""What every Serve app shares: replica arguments, the FastAPI app with the one error contract, and the
application builder.

An app module defines its `XServeArgs(ServeArgs)` (its own limits), its routes in `make_fastapi(args)`
(starting from `new_app`), an ingress class (`@serve.deployment` + `@serve.ingress()` whose
`__serve_build_asgi_app__` returns `make_fastapi(self.args)`), and `build_app = builder(Ingress, Args)`.

Errors: an engine's `InputError` is answered with its status (422, 413 `TooLarge`, 404 `NotFound`) and
FastAPI's request-validation errors with 422 — both with the body {"detail": {field, message, allowed}}.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import Field
from ray.serve import Application

from actors.common.config import Strict
from actors.common.errors import InputError

__all__ = ["ServeArgs", "builder", "error_response", "new_app"]

A = TypeVar("A", bound="ServeArgs")


class ServeArgs(Strict):
    """Replica options every app takes (`serve run serve.X:build_app num_replicas=2 ...`)."""

    num_replicas: int = Field(1, ge=1, le=1024)
    num_gpus: float = Field(0, ge=0, le=8)     # per replica; 0 -> the engine runs on CPU
    num_cpus: float = Field(1, gt=0, le=1024)  # per replica


def error_response(exc: InputError) -> JSONResponse:
    """The one error body of every app: {"detail": {field, message, allowed}} with the error's status."""
    return JSONResponse(status_code=exc.status_code, content={"detail": exc.to_dict()})


def _from_request_validation(exc: RequestValidationError) -> InputError:
    err = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
    ctx = err.get("ctx") or {}
    bounds = [f"{op} {ctx[k]}" for k, op in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")) if k in ctx]
    allowed = " and ".join(bounds) or (str(ctx["expected"]) if "expected" in ctx else None)
    return InputError(".".join(loc) or "body", err.get("msg", "invalid request"), allowed)


def new_app(title: str, description: str, version: str = "0.1.0") -> FastAPI:
    """A FastAPI app (OpenAPI at /docs) that answers InputError and bad request bodies with 4xx."""
    app = FastAPI(title=title, version=version, description=description)

    async def _input_error(_: Request, exc: Exception) -> JSONResponse:
        return error_response(exc)  # type: ignore[arg-type]

    async def _bad_request(_: Request, exc: Exception) -> JSONResponse:
        return error_response(_from_request_validation(exc))  # type: ignore[arg-type]

    app.add_exception_handler(InputError, _input_error)
    app.add_exception_handler(RequestValidationError, _bad_request)
    return app


def builder(ingress: Any, args_cls: type[A], *, actor_options: Callable[[A], dict] | None = None
            ) -> Callable[[dict | None], Application]:
    """`build_app(args)` for `serve run` / `serve build`: validates args, sizes replicas, binds them."""

    def build_app(args: dict | None = None) -> Application:
        cfg = args_cls.model_validate(args or {})
        options = {"num_gpus": cfg.num_gpus, "num_cpus": cfg.num_cpus}
        if actor_options is not None:
            options.update(actor_options(cfg))
        return ingress.options(num_replicas=cfg.num_replicas, ray_actor_options=options).bind(cfg.model_dump())

    build_app.__doc__ = f"Application builder for `serve run` / `serve build` (args are {args_cls.__name__} fields)."
    return build_app
