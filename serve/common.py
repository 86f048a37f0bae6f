"""What every Serve app shares: replica arguments, the FastAPI app with the one error contract, and the
application builder.

An app module defines its `XServeArgs(ServeArgs)` (its own limits), its routes in `make_fastapi(args)`
(starting from `new_app`), an ingress class (`@serve.deployment` + `@serve.ingress()` whose
`__serve_build_asgi_app__` returns `make_fastapi(self.args)`), and `build_app = builder(Ingress, Args)`.

Errors: an engine's `InputError` is answered with its status (422, 413 `TooLarge`, 404 `NotFound`,
504 `BudgetExceeded`) and FastAPI's request-validation errors with 422 — all with the body
{"detail": {field, message, allowed}}.

Bounded work (`Admission`, installed by `new_app(..., args=...)`): at most `max_concurrent` requests
compute at once per replica and `max_waiting` more wait for a slot; beyond that the answer is 503 with
Retry-After at once (Serve's own `max_queued_requests` bounds the router queue in front, also 503).
Each admitted request runs under a `Budget` of `request_timeout_s` that the engines' loops check
(504 when spent), and a client that disconnects cancels its budget, so the loop stops.
`/healthz` and the docs bypass admission: Serve's `max_ongoing_requests` is sized with headroom above
the work slots, so a health check is answered while every slot is busy.

Authentication (`BearerAuth`, off by default): with a token configured — the app argument
`auth_token_file` (a file holding it, e.g. a mounted Kubernetes Secret) or else the environment
variable ATTRACTOR_API_TOKEN on the replica — every route but `/healthz` needs
`Authorization: Bearer <token>` (compared in constant time); otherwise 401 with `WWW-Authenticate`,
before admission, so unauthenticated requests take no work slot. The token is read once per replica.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError
from ray.serve import Application
from starlette.exceptions import HTTPException as StarletteHTTPException

from actors.common.budget import Budget, Cancelled, scope
from actors.common.config import Strict, load_yaml
from actors.common.errors import InputError, allowed_range

__all__ = ["Admission", "AppIngress", "BearerAuth", "ServeArgs", "Unauthorized", "api_token", "body_schema",
           "builder", "error_response", "json_bytes_response", "new_app", "parse_body", "token_matches"]

log = logging.getLogger("attractor.serve")
EXEMPT_PATHS = frozenset({"/healthz", "/docs", "/openapi.json", "/docs/oauth2-redirect", "/redoc"})
HEALTH_HEADROOM = 4   # Serve request slots kept free of work for /healthz and the docs
HEALTH_CHECK_PERIOD_S = 2.0   # Serve's default 10 s left ~11 s of 500s after a replica died
TOKEN_ENV = "ATTRACTOR_API_TOKEN"   # the bearer token, when no auth_token_file is given
AUTH_EXEMPT_PATHS = frozenset({"/healthz"})

A = TypeVar("A", bound="ServeArgs")


class ServeArgs(Strict):
    """Replica options every app takes (`serve run serve.X:build_app num_replicas=2 ...`)."""

    num_replicas: int = Field(1, ge=1, le=1024)
    num_gpus: float = Field(0, ge=0, le=8)     # per replica; 0 -> the engine runs on CPU
    num_cpus: float = Field(1, gt=0, le=1024)  # per replica
    max_concurrent: int = Field(2, ge=1, le=1024)        # requests computing at once per replica
    max_waiting: int = Field(8, ge=0, le=100_000)        # more requests waiting for a slot; then 503
    max_queued_requests: int = Field(32, ge=-1)           # Serve's router queue in front (-1: unbounded)
    request_timeout_s: float = Field(120.0, gt=0, le=86_400)   # compute budget per request; then 504
    retry_after_s: int = Field(1, ge=0, le=3600)          # Retry-After of a 503
    auth_token_file: str | None = None   # file holding the bearer token (else $ATTRACTOR_API_TOKEN; neither: no auth)

    def max_ongoing_requests(self) -> int:
        """Serve's per-replica request limit: the work slots, the waiting room and health headroom."""
        return self.max_concurrent + self.max_waiting + HEALTH_HEADROOM


class Unauthorized(InputError):
    """A request without the configured bearer token (HTTP 401 / gRPC UNAUTHENTICATED)."""

    status_code = 401


def api_token(args: ServeArgs | None = None) -> str | None:
    """The bearer token every route but /healthz requires, or None (no authentication).

    `args.auth_token_file` names a file holding it (a mounted Secret; surrounding whitespace ignored);
    else the replica's environment variable ATTRACTOR_API_TOKEN. A configured file that is missing or
    empty is an error (fail closed), never an open app."""
    path = args.auth_token_file if args is not None else None
    if path is not None:
        try:
            token = Path(path).read_text().strip()
        except OSError as exc:
            raise InputError("auth_token_file", f"cannot read the token file ({exc.strerror})",
                             "a readable file holding the token") from None
        if not token:
            raise InputError("auth_token_file", "the token file is empty", "a file holding the token")
        return token
    return os.environ.get(TOKEN_ENV, "").strip() or None


def token_matches(authorization: str | None, token: str) -> bool:
    """Whether an `Authorization` value is `Bearer <token>`; constant-time in the token's content
    (both sides are hashed first, so neither their bytes nor their lengths leak through timing)."""
    scheme, _, given = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        given = ""
    return hmac.compare_digest(hashlib.sha256(given.strip().encode()).digest(),
                               hashlib.sha256(token.encode()).digest()) and bool(given.strip())


def app_path(scope_: dict) -> str:
    """The request's path inside the app: Serve mounts an app under its route_prefix and passes the full
    path with root_path set to the prefix (/sweep/healthz with root_path /sweep is the app's /healthz)."""
    path, root = scope_["path"], scope_.get("root_path", "")
    if root and root != "/" and path.startswith(root):
        return path[len(root):] or "/"
    return path


class BearerAuth:
    """ASGI middleware: every HTTP route but /healthz needs `Authorization: Bearer <token>`; else 401
    with `WWW-Authenticate: Bearer` (RFC 6750; `error="invalid_token"` when a wrong one was sent)."""

    def __init__(self, app: Any, token: str):
        self.app = app
        self.token = token

    async def __call__(self, scope_: dict, receive: Any, send: Any) -> None:
        if scope_["type"] != "http" or app_path(scope_) in AUTH_EXEMPT_PATHS:
            await self.app(scope_, receive, send)
            return
        sent = next((v.decode("latin-1") for k, v in scope_.get("headers", ()) if k == b"authorization"), None)
        if token_matches(sent, self.token):
            await self.app(scope_, receive, send)
            return
        challenge = 'Bearer realm="attractor"' + (', error="invalid_token"' if sent else "")
        raw = json.dumps({"detail": Unauthorized(
            "authorization", "a valid bearer token is required" if sent is None else "the bearer token is not valid",
            "Authorization: Bearer <token>").to_dict()}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()),
                                (b"www-authenticate", challenge.encode())]})
        await send({"type": "http.response.body", "body": raw})


def error_response(exc: InputError) -> JSONResponse:
    """The one error body of every app: {"detail": {field, message, allowed}} with the error's status."""
    return JSONResponse(status_code=exc.status_code, content={"detail": exc.to_dict()})


def _from_request_validation(exc: RequestValidationError) -> InputError:
    err = exc.errors()[0] if exc.errors() else {}
    if err.get("type") == "json_invalid":   # unparseable JSON: the body, not a character offset
        return InputError("body", err.get("msg", "invalid JSON"), "a JSON document")
    loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
    return InputError(".".join(loc) or "body", err.get("msg", "invalid request"), allowed_range(err.get("ctx") or {}))


class Admission:
    """ASGI middleware: bounded concurrency, an immediate 503 when full, a budget per request.

    Pure ASGI (not BaseHTTPMiddleware) so Serve's cancellation of a disconnected request reaches it as
    asyncio.CancelledError, which cancels the request's budget before it propagates.
    """

    def __init__(self, app: Any, args: ServeArgs):
        self.app = app
        self.args = args
        self.slots = asyncio.Semaphore(args.max_concurrent)
        self.waiting = 0

    async def _reply(self, send: Any, status: int, body: dict, headers: list | None = None) -> None:
        raw = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()),
                                *(headers or [])]})
        await send({"type": "http.response.body", "body": raw})

    async def __call__(self, scope_: dict, receive: Any, send: Any) -> None:
        if scope_["type"] != "http" or app_path(scope_) in EXEMPT_PATHS:
            await self.app(scope_, receive, send)
            return
        if self.slots.locked() and self.waiting >= self.args.max_waiting:
            await self._reply(send, 503, {"detail": {
                "field": "request", "message": "request: the replica is at capacity; retry later",
                "allowed": f"<= {self.args.max_concurrent} computing + {self.args.max_waiting} waiting per replica"}},
                [(b"retry-after", str(self.args.retry_after_s).encode())])
            return
        self.waiting += 1
        try:
            await self.slots.acquire()
        finally:
            self.waiting -= 1
        budget = Budget(self.args.request_timeout_s)
        try:
            with scope(budget):   # copied into the worker thread of a sync endpoint with the context
                await self.app(scope_, receive, send)
        except asyncio.CancelledError:
            budget.cancel()
            raise
        finally:
            self.slots.release()


M = TypeVar("M", bound=BaseModel)


async def parse_body(request: Request, model_cls: type[M]) -> M:
    """The request body validated as `model_cls` by pydantic-core's JSON parser in one pass (for a latency-
    bound route: FastAPI's own path, json.loads and then validation, costs ~0.1 ms more for a 384-float
    body); errors are FastAPI's RequestValidationError, so they get the app's one 422 body."""
    try:
        return model_cls.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None


def body_schema(model_cls: type[BaseModel]) -> dict:
    """`openapi_extra` of a route that reads its body with `parse_body`: the request schema in the docs."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model_cls.model_json_schema(
        ref_template="#/components/schemas/{model}")}}}}


def _finite_or_null(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v) for v in value]
    return value


def json_bytes_response(content: Any, status_code: int = 200) -> Response:
    """JSON-able `content` as a response without FastAPI's response-model pass (the route's handler built it).
    A non-finite float is written as null, as pydantic's serialiser of a response model does (e.g. log Z
    = -inf at T = 0)."""
    try:
        raw = json.dumps(content, allow_nan=False)
    except ValueError:
        raw = json.dumps(_finite_or_null(content), allow_nan=False)
    return Response(raw.encode(), status_code=status_code, media_type="application/json")


def new_app(title: str, description: str, version: str = "0.1.0", *, args: ServeArgs | None = None) -> FastAPI:
    """A FastAPI app (OpenAPI at /docs) that answers InputError and bad request bodies with 4xx, hides
    internal errors behind a request id, — given `args` — bounds its work (`Admission`), and — with a
    token configured (`api_token`) — requires it on every route but /healthz (`BearerAuth`)."""
    app = FastAPI(title=title, version=version, description=description)

    async def _input_error(_: Request, exc: Exception) -> JSONResponse:
        return error_response(exc)  # type: ignore[arg-type]

    async def _bad_request(_: Request, exc: Exception) -> JSONResponse:
        return error_response(_from_request_validation(exc))  # type: ignore[arg-type]

    async def _http_error(_: Request, exc: Exception) -> JSONResponse:
        # unknown route (404), wrong method (405): the same body as every other error
        field = "body" if exc.status_code == 400 else "path"   # type: ignore[attr-defined]  # 400: unreadable body
        return JSONResponse(status_code=exc.status_code, headers=getattr(exc, "headers", None),  # type: ignore[attr-defined]
                            content={"detail": {"field": field, "message": str(exc.detail),  # type: ignore[attr-defined]
                                                "allowed": None}})

    async def _cancelled(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(status_code=499, content={"detail": {"field": "request", "message": "cancelled",
                                                                 "allowed": None}})

    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        request_id = uuid.uuid4().hex[:16]
        log.error("internal error %s on %s %s", request_id, request.method, request.url.path, exc_info=exc)
        return JSONResponse(status_code=500, content={"detail": {
            "field": None, "message": f"internal error (request id {request_id}; details are in the server log)",
            "allowed": None}})

    app.add_exception_handler(InputError, _input_error)
    app.add_exception_handler(RequestValidationError, _bad_request)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Cancelled, _cancelled)
    app.add_exception_handler(Exception, _internal)
    if args is not None:
        app.add_middleware(Admission, args=args)
    token = api_token(args)
    if token is not None:   # added last = outermost: a 401 takes no admission slot
        app.add_middleware(BearerAuth, token=token)
    return app


class AppIngress:
    """Base of every app's Serve ingress: the replica validates its args and builds the FastAPI app.

        @serve.deployment(name="TEServe")
        @serve.ingress()
        class TEIngress(AppIngress):
            args_cls = TEServeArgs
            make_fastapi = staticmethod(make_fastapi)

    `warm_up()` runs once per replica before the first request (compile a model, load an index).
    """

    args_cls: type[ServeArgs] = ServeArgs
    make_fastapi: Callable[[Any], FastAPI]

    def __init__(self, args: dict | None = None):
        self.args = self.args_cls.model_validate(args or {})
        self.warm_up()

    def warm_up(self) -> None:
        """Per-replica set-up before the first request (nothing by default)."""

    def __serve_build_asgi_app__(self) -> FastAPI:
        return type(self).make_fastapi(self.args)


def parse_cli_args(args: dict | None) -> dict:
    """`serve run mod:build_app key=value` passes strings: read each as YAML (`2` -> 2, `[a]` -> list),
    as jobs read `--set`; typed values (a `serve deploy` config) pass through."""
    return {k: (load_yaml(v) if isinstance(v, str) else v) for k, v in (args or {}).items()}


def builder(ingress: Any, args_cls: type[A], *, actor_options: Callable[[A], dict] | None = None
            ) -> Callable[[dict | None], Application]:
    """`build_app(args)` for `serve run` / `serve build`: validates args, sizes replicas, binds them."""

    def build_app(args: dict | None = None) -> Application:
        cfg = args_cls.model_validate(parse_cli_args(args))
        options = {"num_gpus": cfg.num_gpus, "num_cpus": cfg.num_cpus}
        if actor_options is not None:
            options.update(actor_options(cfg))
        return ingress.options(num_replicas=cfg.num_replicas, max_ongoing_requests=cfg.max_ongoing_requests(),
                               max_queued_requests=cfg.max_queued_requests, health_check_period_s=HEALTH_CHECK_PERIOD_S,
                               ray_actor_options=options).bind(cfg.model_dump())

    build_app.__doc__ = f"Application builder for `serve run` / `serve build` (args are {args_cls.__name__} fields)."
    return build_app
