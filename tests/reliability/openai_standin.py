"""The router app's test doubles: a router fitted on seeded synthetic embeddings, and an OpenAI-shaped
server on a loopback port standing in for serve.llm (the real LLM app is tested with vLLM in tests/llm).

Used by tests/test_serve_router.py and by the reliability suite (routes.py), which fuzzes the router's
pass-through against it. The stand-in answers with the model and the routed text it received, streams two
SSE events, and refuses an unknown model or a malformed body in OpenAI's envelope (never a 5xx of its own,
so a 5xx the fuzz sees is the router's)."""
from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from actors.router.config import DomainConfig, EnergyConfig, ModelCard, PredictorConfig

MODELS = ("tiny-a", "tiny-b")
CARDS = [ModelCard(name="weak", cost=0.24, latency_s=1.0, context_tokens=32_768),
         ModelCard(name="strong", cost=24.7, latency_s=2.0, context_tokens=128_000)]


def unit_rows(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, 384))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def synthetic_router(seed: int = 0) -> Any:
    """A router fitted on 400 seeded routes whose strong-better label depends on one direction."""
    from actors.router.router import fit_router

    E = unit_rows(400, seed)
    rng = np.random.default_rng(seed + 1)
    better = (E[:, 0] + rng.normal(0, 0.02, 400)) > 0.02
    weak_r = np.where(better, 0.0, (rng.random(400) > 0.3).astype(float))
    strong_r = np.where(better, 1.0, weak_r)
    return fit_router(E, strong_r - weak_r, np.stack([weak_r, strong_r], 1), CARDS, 1,
                      predictor=PredictorConfig(C=10.0), domains=DomainConfig(n_domains=4),
                      energy=EnergyConfig(temperature=0.5))


def loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _error(message: str, param: str, status: int) -> Any:
    return JSONResponse({"error": {"message": message, "type": "BadRequestError" if status == 400 else "NotFoundError",
                                   "param": param, "code": status}}, status_code=status)


def _refuse(name: str) -> Any:
    raise ValueError(f"non-finite literal {name}")


def standin_app(seen: list[dict]) -> FastAPI:
    """The OpenAI-shaped FastAPI app under /llm; `seen` collects the bodies it was sent."""
    app = FastAPI()

    @app.get("/llm/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": m, "object": "model"} for m in MODELS]}

    @app.post("/llm/v1/{kind:path}")
    async def generate(kind: str, request: Request) -> Any:
        try:   # strict JSON, as a real OpenAI server reads it: no NaN / Infinity literals
            body = json.loads(await request.body(), parse_constant=_refuse)
        except ValueError:
            return _error("body is not (strict) JSON", "body", 400)
        if not isinstance(body, dict):
            return _error("body is not an object", "body", 400)
        seen.append({"path": kind, **body})
        model = body.get("model")
        if model not in MODELS:
            return _error(f"model {str(model)[:100]} does not exist", "model", 404)
        if body.get("stream") is True:
            async def events():
                yield f"data: {{\"model\": \"{model}\", \"n\": 1}}\n\n".encode()
                yield b"data: [DONE]\n\n"
            return StreamingResponse(events(), media_type="text/event-stream")
        echo = body.get("messages") if kind.startswith("chat") else body.get("prompt")
        return {"object": kind, "model": model, "echo": echo}

    return app


class Standin:
    """The stand-in served by uvicorn in a daemon thread: `url` (…/llm) and `seen`; `close()` stops it."""

    def __init__(self) -> None:
        import uvicorn

        self.seen: list[dict] = []
        port = loopback_port()
        self.server = uvicorn.Server(uvicorn.Config(standin_app(self.seen), host="127.0.0.1", port=port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started and time.time() < deadline:
            time.sleep(0.05)
        if not self.server.started:
            raise RuntimeError("the OpenAI stand-in did not start in 30 s")
        self.url = f"http://127.0.0.1:{port}/llm"

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


_shared: Standin | None = None


def shared_standin() -> Standin:
    """One stand-in per test process (started on first use; a daemon thread, gone with the process)."""
    global _shared
    if _shared is None:
        _shared = Standin()
    return _shared
