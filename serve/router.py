"""HTTP front end of the router: decisions with their thermodynamics, and quality feedback.

    python -m jobs.route_eval --data ../shared/data/routellm/gsm8k.parquet --out runs/re   # writes runs/re/router
    serve run serve.router:build_app model=runs/re/router
    curl -s 127.0.0.1:8000/route -H 'content-type: application/json' -d '{"prompt": "What is 17 * 23?"}'
    curl -s 127.0.0.1:8000/route/feedback -H 'content-type: application/json' \\
         -d '{"request_id": "<id from /route>", "quality": 1.0}'

Routes (OpenAPI at /docs):
    POST /route            the decision for one prompt (or a precomputed 384-d embedding): the chosen
                           model (a Boltzmann draw, seeded per replica), every candidate's energy and
                           probability, the temperature, log Z, free energy, entropy, the five energy
                           terms, the prompt's domain and P(strong better); nothing is generated
    POST /route/feedback   {request_id, quality in [0, 1]}: a conjugate update of the chosen model's
                           Beta posterior in the prompt's domain; an unknown (or already rated) id is 404
    GET  /healthz          models, domains, pending decisions, limits

    GET  /v1/models        the upstream LLM app's models plus `auto`
    POST /v1/chat/completions, /v1/completions
                           OpenAI-compatible pass-through to `upstream` (the LLM app, serve.llm): with
                           `model: auto` the router decides on the first user turn (chat) or the prompt
                           (completions), the body goes upstream with `model` set to the chosen engine
                           (`engines` maps router model names to the LLM app's model ids), and the
                           answer (JSON or server-sent events) comes back as it is, with the decision in
                           the headers x-attractor-request-id / x-attractor-model (feedback takes that
                           id); any other model name passes through untouched

    serve run serve.llm:build_app model_source=runs/tiny profile=cpu route_prefix=/llm ...   # the engines
    serve run serve.router:build_app model=runs/re/router upstream=http://127.0.0.1:8000/llm \
        'engines={gpt-4-1106-preview: tiny, mistralai/Mixtral-8x7B-Instruct-v0.1: tiny}'

The router comes from `model=DIR` (a directory written by jobs.route_eval: DIR/router) or, without
one, is fitted at start-up on `data=[FILES]` (Parquet in the shared routing schema). Its posteriors
learn from feedback in the replica's memory, so the app runs one replica by default (more replicas
learn separately). `timing_us` in each answer splits the encoder's time from the decision's; the
decision overhead is measured by jobs/bench/router.py (docs/router.md).

Errors ({"detail": {field, message, allowed}}, serve.common): an empty prompt, neither or both of
prompt / embedding, an embedding of the wrong length or with non-finite values, an unknown model
name, an empty candidate list (K = 0), a negative or non-finite temperature, a quality outside
[0, 1] are 422 naming the field; a prompt over `max_prompt_chars` is 413; feedback for an unknown
request id is 404; a pass-through body that is not a JSON object, lacks `model` or (with `auto`) has no
text to route is 422 naming the field; an upstream that is not configured or cannot be reached is 503
naming `upstream`. The upstream's own errors (its 4xx with OpenAI's envelope) are passed back as they are.
"""
from __future__ import annotations

import json
import math
import threading
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from ray import serve
from starlette.concurrency import run_in_threadpool

from actors.common.config import Strict
from actors.common.embeddings import DIM, EmbeddingCache, embed, model
from actors.common.errors import InputError, NotFound, TooLarge, UnknownName
from actors.router.boltzmann import sample
from actors.router.config import RouteEvalSpec
from actors.router.data import load_routes
from actors.router.evaluate import fit_all, prepare
from actors.router.features import prompt_embeddings, prompt_stats, token_estimate
from actors.router.router import Router, load_router
from serve.common import AppIngress, ServeArgs, body_schema, builder, json_bytes_response, new_app, parse_body


class RouterServeArgs(ServeArgs):
    """Application arguments (`serve run serve.router:build_app key=value ...`); num_replicas, num_gpus
    and num_cpus per replica come from ServeArgs."""

    model: str | None = Field(None, max_length=4096)         # DIR written by jobs.route_eval (DIR/router)
    data: list[str] = Field(default_factory=list, max_length=64)   # else: fit at start-up on these files
    max_prompt_chars: int = Field(200_000, ge=1, le=10_000_000)
    max_pending: int = Field(100_000, ge=1, le=10_000_000)   # decisions kept for feedback (oldest dropped)
    seed: int = Field(0, ge=0, le=2**32 - 1)                 # the replica's Boltzmann draws
    embedding_cache_dir: str | None = Field(None, max_length=4096)   # cache of start-up fits (None: default)
    max_concurrent: int = Field(8, ge=1, le=1024)            # decisions are short: more slots than ServeArgs'
    upstream: str | None = Field(None, max_length=4096, pattern=r"^https?://")   # the LLM app's base URL
    engines: dict[str, str] = Field(default_factory=dict, max_length=16)   # router model -> upstream model id
    upstream_timeout_s: float = Field(300.0, gt=0, le=86_400)


class UpstreamUnavailable(InputError):
    """The LLM app behind the pass-through is not configured or cannot be reached (HTTP 503)."""

    status_code = 503


class RouteRequest(Strict):
    prompt: str | None = None                                # the text routed (its first turn)
    embedding: list[float] | None = Field(None, max_length=DIM)   # a precomputed unit-norm embedding instead
    models: list[str] | None = Field(None, max_length=16)   # candidates (default: every model), K <= 16
    temperature: float | None = Field(None, ge=0, le=1e6)   # default: the router's
    n_tokens: int | None = Field(None, ge=1, le=100_000_000)   # default: ceil(characters / 4)


class RouteResponse(BaseModel):
    request_id: str
    model: str
    models: list[str]
    energies: list[float]
    probabilities: list[float]
    temperature: float
    log_Z: float
    free_energy: float
    entropy: float
    domain: int
    p_strong_better: float
    terms: dict[str, list[float]]
    timing_us: dict[str, float]


class FeedbackRequest(Strict):
    request_id: str = Field(min_length=1, max_length=64)
    quality: float = Field(ge=0, le=1)


class RouterState:
    """The fitted router, the replica's RNG and the decisions awaiting feedback (thread-safe)."""

    def __init__(self, router: Router, args: RouterServeArgs):
        self.router = router
        self.args = args
        self.rng = np.random.default_rng(args.seed)
        self.pending: OrderedDict[str, tuple[int, int]] = OrderedDict()   # id -> (model index, domain)
        self.lock = threading.Lock()
        self.cache = EmbeddingCache(Path(args.embedding_cache_dir)) if args.embedding_cache_dir else None

    def _features(self, req: RouteRequest) -> tuple[np.ndarray, float, float]:
        """(embedding [1, 384], token count, encoder microseconds)."""
        if (req.prompt is None) == (req.embedding is None):
            raise InputError("prompt", "give exactly one of prompt and embedding", "prompt (text) or embedding")
        if req.embedding is not None:
            if self.router.predictor.n_stats:
                raise InputError("embedding", "this router's predictor also reads prompt statistics of the text",
                                 "prompt (text)")
            e = np.asarray(req.embedding, np.float64)
            if e.shape != (DIM,):
                raise InputError("embedding", f"{e.size} values", f"{DIM} values (all-MiniLM-L6-v2)")
            norm = float(np.linalg.norm(e))
            if not np.isfinite(norm) or norm == 0:
                raise InputError("embedding", "the zero vector or non-finite values", "a unit-norm vector")
            n_tok = float(req.n_tokens or 1)
            return (e / norm)[None, :], n_tok, 0.0
        text = req.prompt
        if len(text) > self.args.max_prompt_chars:
            raise TooLarge("prompt", f"{len(text)} characters exceed the limit of {self.args.max_prompt_chars}",
                           f"at most {self.args.max_prompt_chars}")
        if not text.strip():
            raise InputError("prompt", "is empty", "non-empty text")
        t = time.perf_counter()
        e = embed([text], cache=self.cache, field="prompt")
        if self.router.predictor.n_stats:
            e = np.hstack([e, prompt_stats([text])])
        return e, float(req.n_tokens or token_estimate([text])[0]), (time.perf_counter() - t) * 1e6

    def route(self, req: RouteRequest) -> dict:
        """One decision; remembered under its request id for feedback."""
        E, n_tok, enc_us = self._features(req)
        t = time.perf_counter()
        cols = None
        if req.models is not None:
            if not req.models:
                raise InputError("models", "no candidate models (K = 0)", ", ".join(self.router.names))
            if len(set(req.models)) != len(req.models):
                raise InputError("models", "a model is listed twice", "distinct names")
            unknown = [m for m in req.models if m not in self.router.names]
            if unknown:
                raise UnknownName("models", unknown[0], self.router.names)
            cols = [self.router.names.index(m) for m in req.models]
        with self.lock:
            terms, en, dec, p, d = self.router.decide(E, np.array([n_tok]), temperature=req.temperature, models=cols)
            k = int(sample(dec, self.rng)[0])
            cols = list(range(len(self.router.cards))) if cols is None else cols
            rid = uuid.uuid4().hex[:16]
            self.pending[rid] = (cols[k], int(d[0]))
            while len(self.pending) > self.args.max_pending:
                self.pending.popitem(last=False)
        decide_us = (time.perf_counter() - t) * 1e6
        names = [self.router.names[c] for c in cols]
        return {"request_id": rid, "model": names[k], "models": names, "energies": en[0].tolist(),
                "probabilities": dec.p[0].tolist(), "temperature": float(dec.T[0]), "log_Z": float(dec.log_Z[0]),
                "free_energy": float(dec.free_energy[0]), "entropy": float(dec.entropy[0]), "domain": int(d[0]),
                "p_strong_better": float(p[0]),
                "terms": {f: getattr(terms, f)[0].tolist() for f in ("cost", "quality", "latency", "uncertainty",
                                                                       "context_mismatch")},
                "timing_us": {"encode": enc_us, "decide": decide_us}}

    def feedback(self, req: FeedbackRequest) -> dict:
        """Update the posterior of the model chosen for `request_id` in its domain (once per decision)."""
        with self.lock:
            if req.request_id not in self.pending:
                raise NotFound("request_id", f"no pending decision {req.request_id!r} (unknown, already rated, "
                               f"or dropped after {self.args.max_pending} newer decisions)",
                               "a request_id returned by POST /route")
            m, d = self.pending.pop(req.request_id)
            self.router.feedback(m, d, req.quality)
            post = self.router.posterior
            a, b = float(post.alpha[m, d]), float(post.beta[m, d])
        return {"request_id": req.request_id, "model": self.router.names[m], "domain": d,
                "posterior": {"alpha": a, "beta": b, "mean": a / (a + b)}}

    def health(self) -> dict:
        with self.lock:
            pending = len(self.pending)
        return {"status": "ok", "models": self.router.names, "strong": self.router.names[self.router.strong],
                "n_domains": self.router.domains.n_domains, "temperature": self.router.energy.temperature,
                "pending": pending, "limits": {"max_prompt_chars": self.args.max_prompt_chars,
                                               "max_pending": self.args.max_pending, "max_models": 16}}


def routed_text(body: dict[str, Any], chat: bool) -> str:
    """The text a pass-through request is routed on: the first user turn (chat; text parts joined), or
    the prompt (completions; the first of a list). RouteLLM routes a conversation on its first turn."""
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise InputError("messages", "missing or empty", "a non-empty list of {role, content}")
        for m in messages:
            if isinstance(m, dict) and m.get("role") == "user":
                content = m.get("content")
                if isinstance(content, list):          # OpenAI content parts: the text ones
                    content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
                if isinstance(content, str) and content.strip():
                    return content
        raise InputError("messages", "no user turn with text to route on", "at least one user message with text")
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("prompt", "missing, empty or not text (token-id prompts cannot be routed)",
                         "a non-empty string or list of strings")
    return prompt


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} overflows a float")
    return value


def strict_json(raw: bytes) -> Any:
    """The request body as strict JSON: NaN / Infinity literals and numbers that overflow a float (which the
    upstream could not be sent) and nesting deeper than Python's parser goes are the client's error, not a
    500."""
    try:
        return json.loads(raw, parse_constant=_no_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise InputError("body", f"not valid JSON: {reason}", "a JSON object (finite numbers)") from None


class PassThrough:
    """Forwards OpenAI-compatible requests to the LLM app, deciding `model: auto` with the router first."""

    def __init__(self, state: RouterState, args: RouterServeArgs):
        self.state, self.args = state, args
        self._client = None
        self._loop = None

    def client(self):
        """One pooled AsyncClient per event loop (Serve's replica has one; a test client may start several)."""
        import asyncio

        import httpx

        if self.args.upstream is None:
            raise UpstreamUnavailable("upstream", "no LLM app configured for the pass-through",
                                      "upstream=http://HOST:PORT[/prefix] (an OpenAI-compatible server)")
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._loop = loop
            self._client = httpx.AsyncClient(base_url=self.args.upstream.rstrip("/"),
                                             timeout=self.args.upstream_timeout_s)
        return self._client

    async def models(self, headers: dict[str, str]) -> dict:
        r = await self._send("GET", "/v1/models", None, headers)
        doc = r.json() if r.status_code == 200 else {"object": "list", "data": []}
        doc.setdefault("data", []).insert(0, {"id": "auto", "object": "model", "owned_by": "attractor-router"})
        return doc

    async def _send(self, method: str, path: str, body: dict | None, headers: dict[str, str], stream: bool = False):
        import httpx

        client = self.client()
        try:
            req = client.build_request(method, path, json=body, headers=headers)
            return await client.send(req, stream=stream)
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable("upstream", f"{self.args.upstream} cannot be reached: {type(exc).__name__}",
                                      "a running OpenAI-compatible server") from None

    async def forward(self, request: Request, path: str, chat: bool) -> Response:
        body = strict_json(await request.body())
        if not isinstance(body, dict):
            raise InputError("body", f"a JSON {type(body).__name__}", "a JSON object")
        model_name = body.get("model")
        if not isinstance(model_name, str) or not model_name:
            raise InputError("model", "missing or not a string", "auto or a model id of the LLM app")
        decision_headers = {}
        if model_name == "auto":
            decision = await run_in_threadpool(self.state.route, RouteRequest(prompt=routed_text(body, chat)))
            body = {**body, "model": self.args.engines.get(decision["model"], decision["model"])}
            decision_headers = {"x-attractor-request-id": decision["request_id"],
                                "x-attractor-model": decision["model"], "x-attractor-engine": body["model"]}
        headers: dict[str, str] = {}            # the client's Authorization is this app's, not the upstream's
        if body.get("stream"):
            r = await self._send("POST", path, body, headers, stream=True)

            async def chunks():
                try:
                    async for chunk in r.aiter_raw():
                        yield chunk
                finally:
                    await r.aclose()

            return StreamingResponse(chunks(), status_code=r.status_code, headers=decision_headers,
                                     media_type=r.headers.get("content-type", "text/event-stream"))
        r = await self._send("POST", path, body, headers)
        try:
            content = r.json()
        except ValueError:
            return Response(r.content, status_code=r.status_code, headers=decision_headers,
                            media_type=r.headers.get("content-type"))
        return JSONResponse(content, status_code=r.status_code, headers=decision_headers)


def load_or_fit(args: RouterServeArgs) -> Router:
    """The router of `args.model`, or one fitted on `args.data` with the default RouteEvalSpec."""
    if args.model:
        return load_router(args.model)
    if not args.data:
        raise InputError("model", "no router: give model=DIR (jobs.route_eval's DIR/router) or data=[FILES]",
                         "model=DIR or data=[Parquet files]")
    spec = RouteEvalSpec()
    if args.embedding_cache_dir:
        spec = spec.model_copy(update={"embedding": spec.embedding.model_copy(
            update={"cache_dir": args.embedding_cache_dir})})
    data = load_routes(args.data)
    prompts = data.routes()["prompt"].tolist()
    prep = prepare(data, prompt_embeddings(prompts, spec.embedding), token_estimate(prompts))
    return fit_all(prep, spec)


def make_fastapi(args: RouterServeArgs | dict | None = None, router: Router | None = None) -> FastAPI:
    """The FastAPI app for the given limits and router (loaded or fitted from `args` when None)."""
    args = args if isinstance(args, RouterServeArgs) else RouterServeArgs.model_validate(args or {})
    state = RouterState(router if router is not None else load_or_fit(args), args)
    for name in args.engines:
        if name not in state.router.names:
            raise UnknownName("engines", name, state.router.names)
    app = new_app("attractor router", "Thermodynamic LLM router: energies, Boltzmann decisions, Beta-posterior "
                  "feedback.", args=args)
    app.state.router = state

    @app.get("/healthz")
    def healthz() -> dict:
        return state.health()

    @app.post("/route", response_model=RouteResponse, openapi_extra=body_schema(RouteRequest))
    async def post_route(request: Request) -> Response:
        # latency-bound (p99 < 1 ms, docs/router.md): the body parsed and validated in one pass, the answer
        # serialised once, and a decision on an embedding (~0.2 ms) made on the event loop (a thread hop costs
        # as much); a prompt's encoder takes milliseconds, so that one runs off the loop
        req = await parse_body(request, RouteRequest)
        answer = state.route(req) if req.embedding is not None else await run_in_threadpool(state.route, req)
        return json_bytes_response(answer)

    @app.post("/route/feedback")
    def post_feedback(req: FeedbackRequest) -> dict:
        return state.feedback(req)

    upstream = PassThrough(state, args)

    @app.get("/v1/models")
    async def v1_models() -> dict:
        return await upstream.models({})

    @app.post("/v1/chat/completions")
    async def v1_chat(request: Request) -> Response:
        return await upstream.forward(request, "/v1/chat/completions", chat=True)

    @app.post("/v1/completions")
    async def v1_completions(request: Request) -> Response:
        return await upstream.forward(request, "/v1/completions", chat=False)

    return app


@serve.deployment(name="RouterServe")
@serve.ingress()
class RouterIngress(AppIngress):
    """Serve replica: validates the args, loads the encoder once, builds the app (router loaded or fitted)."""

    args_cls = RouterServeArgs
    make_fastapi = staticmethod(make_fastapi)

    def warm_up(self) -> None:
        """Load the sentence encoder before the first request (a prompt's first decision is not slower)."""
        model("cpu", field="prompt")


build_app = builder(RouterIngress, RouterServeArgs)

# `serve build serve.router:app -o serve_router.yaml` wants an Application (default args; give model= when run).
app = build_app({})
