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

The OpenAI-compatible pass-through (`model: auto` routed to the LLM app's engines) waits for that app.

The router comes from `model=DIR` (a directory written by jobs.route_eval: DIR/router) or, without
one, is fitted at start-up on `data=[FILES]` (Parquet in the shared routing schema). Its posteriors
learn from feedback in the replica's memory, so the app runs one replica by default (more replicas
learn separately). `timing_us` in each answer splits the encoder's time from the decision's; the
decision overhead is measured by jobs/bench/router.py (docs/router.md).

Errors ({"detail": {field, message, allowed}}, serve.common): an empty prompt, neither or both of
prompt / embedding, an embedding of the wrong length or with non-finite values, an unknown model
name, an empty candidate list (K = 0), a negative or non-finite temperature, a quality outside
[0, 1] are 422 naming the field; a prompt over `max_prompt_chars` is 413; feedback for an unknown
request id is 404.
"""
from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from pathlib import Path

import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel, Field
from ray import serve

from actors.common.config import Strict
from actors.common.embeddings import DIM, EmbeddingCache, embed, model
from actors.common.errors import InputError, NotFound, TooLarge, UnknownName
from actors.router.boltzmann import sample
from actors.router.config import RouteEvalSpec
from actors.router.data import load_routes
from actors.router.evaluate import fit_all, prepare
from actors.router.features import prompt_embeddings, token_estimate
from actors.router.router import Router, load_router
from serve.common import AppIngress, ServeArgs, builder, new_app


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
    app = new_app("attractor router", "Thermodynamic LLM router: energies, Boltzmann decisions, Beta-posterior "
                  "feedback.", args=args)
    app.state.router = state

    @app.get("/healthz")
    def healthz() -> dict:
        return state.health()

    @app.post("/route", response_model=RouteResponse)
    def post_route(req: RouteRequest) -> dict:
        return state.route(req)

    @app.post("/route/feedback")
    def post_feedback(req: FeedbackRequest) -> dict:
        return state.feedback(req)

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
