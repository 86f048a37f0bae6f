"""The router in front of the live LLM app: serve.router's OpenAI pass-through forwarding to serve.llm (vLLM,
the tiny model on CPU), both apps in one Ray Serve on 127.0.0.1, as a deployment runs them (the router's
`upstream` is the LLM app's URL).

What must hold end to end: `model: auto` is decided by the router (its choice in x-attractor-* headers, the
engine it maps to answering), and the routed answer is the engine's own (greedy: the same text as asking the
LLM app directly); streams pass through as server-sent events; the LLM app's own 4xx come back untouched;
the decision's id takes feedback. The router is fitted on seeded synthetic routes
(reliability.openai_standin.synthetic_router); its two models map to the one tiny engine.
"""
from __future__ import annotations

import json
import re

import httpx
import pytest

# the suite's one Ray + Serve has 4 logical CPUs (tests/llm/conftest.py): the LLM app alone takes 2 (its
# engine's placement group and its ingress replica, 1 CPU each), so with the default 2 a router replica would
# never be scheduled and serve.run would wait forever
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CHAT = {"messages": [{"role": "user", "content": "The state of a"}], "max_tokens": 12, "temperature": 0.0}


@pytest.fixture(scope="module")
def apps(serve_instance, llm_url, tmp_path_factory):
    """(httpx client, tiny model id): serve.llm at /llm (the suite's, tests/llm/conftest.py), serve.router at
    /router forwarding to it."""
    from ray import serve
    from reliability.openai_standin import synthetic_router

    from actors.llm.config import load_engine_spec
    from actors.router.router import save_router
    from serve.router import build_app as router_app

    model_id = load_engine_spec("tiny.yaml").model_id
    router_dir = tmp_path_factory.mktemp("router") / "router"
    save_router(synthetic_router(), router_dir)
    serve.run(router_app({"model": str(router_dir), "upstream": llm_url,
                          "engines": {"weak": model_id, "strong": model_id}, "num_cpus": 0.1}),
              name="router", route_prefix="/router")
    with httpx.Client(base_url=serve_instance.url, timeout=300) as client:
        yield client, model_id
    serve.delete("router")


def test_models_list_auto_beside_the_engines(apps):
    client, model_id = apps
    r = client.get("/router/v1/models")
    assert r.status_code == 200, r.text
    assert [m["id"] for m in r.json()["data"]] == ["auto", model_id]


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", CHAT),
    ("/v1/completions", {"prompt": "A sweep runs", "max_tokens": 12, "temperature": 0.0}),
])
def test_auto_is_decided_by_the_router_and_answered_by_the_engine(apps, path, body):
    client, model_id = apps
    routed = client.post("/router" + path, json={"model": "auto", **body})
    assert routed.status_code == 200, routed.text
    assert routed.headers["x-attractor-model"] in ("weak", "strong")
    assert routed.headers["x-attractor-engine"] == model_id and routed.json()["model"] == model_id
    direct = client.post("/llm" + path, json={"model": model_id, **body})
    assert direct.status_code == 200, direct.text
    pick = (lambda c: c["message"]["content"]) if "chat" in path else (lambda c: c["text"])
    text = pick(routed.json()["choices"][0])
    assert text and text == pick(direct.json()["choices"][0])    # greedy: the engine's own answer
    assert routed.json()["usage"]["completion_tokens"] == direct.json()["usage"]["completion_tokens"]
    # the decision takes feedback once
    fb = client.post("/router/route/feedback", json={"request_id": routed.headers["x-attractor-request-id"],
                                                     "quality": 1.0})
    assert fb.status_code == 200 and fb.json()["model"] == routed.headers["x-attractor-model"], fb.text


def test_a_stream_passes_through_as_server_sent_events(apps):
    client, model_id = apps
    whole = client.post("/router/v1/chat/completions", json={"model": "auto", **CHAT}).json()
    with client.stream("POST", "/router/v1/chat/completions", json={"model": "auto", "stream": True, **CHAT}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line[len("data: "):] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["model"] for c in chunks} == {model_id}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == whole["choices"][0]["message"]["content"]


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", {"model": "no-such-model", **CHAT}),          # Ray Serve LLM: 404 {"detail": ...}
    ("/v1/completions", {"model": "auto", "prompt": "hi", "max_tokens": -1}),   # vLLM: 400 in OpenAI's envelope
])
def test_the_llm_apps_own_errors_come_back_untouched(apps, path, body):
    """The router forwards what it cannot judge; the LLM app's answer (status and body) comes back as is."""
    client, model_id = apps
    routed = client.post("/router" + path, json=body)
    direct = client.post("/llm" + path, json={**body, "model": model_id if body["model"] == "auto" else body["model"]})
    assert 400 <= direct.status_code < 500, direct.text
    same = lambda r: (r.status_code, re.sub(r"Request ID: [0-9a-f-]+", "Request ID: -", r.text))  # noqa: E731
    assert same(routed) == same(direct)
