"""serve.router: /route answers with the energies, probabilities and thermodynamics computed here
independently (sklearn's predict_proba for the predictor, scipy's softmax / logsumexp for Boltzmann),
/route/feedback is the conjugate Beta update (404 for an unknown or used id), bad input is 4xx naming
the field. In-process (TestClient, no Ray) on a router fitted to seeded synthetic embeddings; the slow
test deploys a saved router on a real local Ray + Serve."""
from __future__ import annotations

import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from reliability.openai_standin import Standin, loopback_port, synthetic_router, unit_rows
from scipy.special import logsumexp, softmax

from actors.common.errors import InputError
from actors.router.router import load_router, save_router
from serve.common import parse_cli_args
from serve.router import RouterServeArgs, build_app, load_or_fit, make_fastapi


@pytest.fixture(scope="module")
def router():
    return synthetic_router()


@pytest.fixture()
def client(router):
    import copy

    return TestClient(make_fastapi({"max_prompt_chars": 1000}, router=copy.deepcopy(router)))


def _field(r) -> str:
    return r.json()["detail"]["field"]


def reference_energies(router, e: np.ndarray, n_tokens: float) -> np.ndarray:
    """E = w_c cost - w_q quality + w_l latency + w_u sd + w_ctx mismatch, written out from the pieces."""
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression()
    lr.classes_ = np.array([0, 1])
    lr.coef_ = router.predictor.weights[0].T
    lr.intercept_ = router.predictor.biases[0]
    p = lr.predict_proba(e[None])[0, 1]
    d = int(np.argmin(((router.domains.centroids - e) ** 2).sum(1)))
    a, b = router.posterior.alpha[:, d], router.posterior.beta[:, d]
    mu, sd = a / (a + b), np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    q = mu.copy()
    q[1] += router.energy.rho * (p - router.p_domain_mean[d])
    cost = np.array([0.24, 24.7]) / 24.7
    lat = np.array([1.0, 2.0]) / 2.0
    mism = np.maximum(0, n_tokens / np.array([32_768, 128_000]) - 1)
    w = router.energy
    return w.w_cost * cost - w.w_quality * q + w.w_latency * lat + w.w_uncertainty * sd + w.w_context * mism


def test_route_equals_independent_computation(client, router):
    e = unit_rows(1, 99)[0]
    r = client.post("/route", json={"embedding": e.tolist(), "n_tokens": 50_000})
    assert r.status_code == 200, r.text
    body = r.json()
    E = reference_energies(router, e, 50_000)
    np.testing.assert_allclose(body["energies"], E, rtol=1e-10, atol=1e-12)
    T = 0.5
    np.testing.assert_allclose(body["probabilities"], softmax(-E / T), rtol=1e-10)
    assert body["temperature"] == T and body["models"] == ["weak", "strong"] and body["model"] in ("weak", "strong")
    assert body["log_Z"] == pytest.approx(logsumexp(-E / T), rel=1e-12)
    assert body["free_energy"] == pytest.approx(-T * logsumexp(-E / T), rel=1e-12)
    p = softmax(-E / T)
    assert body["entropy"] == pytest.approx(-(p * np.log(p)).sum(), rel=1e-10)
    assert body["terms"]["context_mismatch"][0] == pytest.approx(50_000 / 32_768 - 1)   # too long for the weak one
    # T = 0: the argmin, one-hot; a one-model candidate list always picks it
    r0 = client.post("/route", json={"embedding": e.tolist(), "temperature": 0}).json()
    assert r0["probabilities"][int(np.argmin(r0["energies"]))] == 1.0 and r0["model"] == r0["models"][
        int(np.argmin(r0["energies"]))]
    # log Z at T = 0 is +inf or -inf (min E < 0 or > 0): JSON has no infinity, so it is null
    assert r0["log_Z"] is None and r0["free_energy"] == pytest.approx(min(r0["energies"]), rel=1e-12)
    r1 = client.post("/route", json={"embedding": e.tolist(), "models": ["strong"]}).json()
    assert r1["models"] == ["strong"] and r1["probabilities"] == [1.0] and r1["model"] == "strong"


def test_feedback_is_the_conjugate_update(client):
    app_router = client.app.state.router.router
    e = unit_rows(1, 7)[0]
    body = client.post("/route", json={"embedding": e.tolist()}).json()
    m, d = app_router.names.index(body["model"]), body["domain"]
    a0, b0 = app_router.posterior.alpha[m, d], app_router.posterior.beta[m, d]
    r = client.post("/route/feedback", json={"request_id": body["request_id"], "quality": 0.75})
    assert r.status_code == 200, r.text
    assert r.json()["posterior"]["alpha"] == a0 + 0.75 and r.json()["posterior"]["beta"] == b0 + 0.25
    again = client.post("/route/feedback", json={"request_id": body["request_id"], "quality": 1.0})
    assert again.status_code == 404 and _field(again) == "request_id"
    nope = client.post("/route/feedback", json={"request_id": "0123456789abcdef", "quality": 1.0})
    assert nope.status_code == 404 and _field(nope) == "request_id"


BAD = [
    ({"prompt": "   "}, 422, "prompt"),
    ({"prompt": "hi", "embedding": [0.1] * 384}, 422, "prompt"),
    ({}, 422, "prompt"),
    ({"embedding": [0.1] * 10}, 422, "embedding"),
    ({"embedding": [0.0] * 384}, 422, "embedding"),
    ({"embedding": [0.1] * 385}, 422, "embedding"),
    ({"embedding": [0.1] * 384, "models": []}, 422, "models"),
    ({"embedding": [0.1] * 384, "models": ["gpt-5"]}, 422, "models"),
    ({"embedding": [0.1] * 384, "models": ["weak", "weak"]}, 422, "models"),
    ({"embedding": [0.1] * 384, "models": ["weak"] * 17}, 422, "models"),
    ({"embedding": [0.1] * 384, "temperature": -1}, 422, "temperature"),
    ({"embedding": [0.1] * 384, "temperature": "1"}, 422, "temperature"),
    ({"embedding": [0.1] * 384, "bogus": 1}, 422, "bogus"),
    ({"prompt": "x" * 1001}, 413, "prompt"),
]


@pytest.mark.parametrize("payload,status,field", BAD)
def test_bad_route_requests_name_the_field(client, payload, status, field):
    r = client.post("/route", json=payload)
    assert r.status_code == status, r.text
    assert _field(r) == field or _field(r).startswith(field + ".")


def test_non_finite_embedding_and_bad_feedback(client):
    raw = '{"embedding": [' + ", ".join(["0.1"] * 383 + ["NaN"]) + "]}"
    r = client.post("/route", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422 and _field(r).startswith("embedding")
    for payload, field in (({"request_id": "x", "quality": 1.5}, "quality"), ({"request_id": "", "quality": 1}, "request_id"),
                           ({"quality": 1}, "request_id"), ({"request_id": "x", "quality": -0.1}, "quality")):
        r = client.post("/route/feedback", json=payload)
        assert r.status_code == 422 and _field(r) == field, (payload, r.text)


def test_prompt_is_embedded(client):
    r = client.post("/route", json={"prompt": "What is the derivative of x squared?"})
    assert r.status_code == 200, r.text
    from actors.common.embeddings import embed

    e = embed(["What is the derivative of x squared?"])[0]
    ref = client.post("/route", json={"embedding": e.tolist(), "n_tokens": 9}).json()
    np.testing.assert_allclose(r.json()["energies"], ref["energies"], atol=1e-6)   # encoder batch rounding
    assert r.json()["timing_us"]["encode"] > 0


def test_openapi_health_and_args(router, tmp_path):
    app = make_fastapi({}, router=router)
    c = TestClient(app)
    assert {"/route", "/route/feedback", "/healthz"} <= set(c.get("/openapi.json").json()["paths"])
    h = c.get("/healthz").json()
    assert h["models"] == ["weak", "strong"] and h["strong"] == "strong" and h["n_domains"] == 4
    assert RouterServeArgs.model_validate(parse_cli_args({"max_pending": "20", "model": "runs/x"})).max_pending == 20
    with pytest.raises(ValueError):
        RouterServeArgs.model_validate({"max_pending": "20"})
    with pytest.raises(InputError) as e:
        load_or_fit(RouterServeArgs())
    assert e.value.field == "model"
    with pytest.raises(InputError) as e:
        load_router(tmp_path)
    assert e.value.field == "model"


def test_saved_router_decides_identically(router, tmp_path):
    save_router(router, tmp_path / "r")
    loaded = load_router(tmp_path / "r")
    E = unit_rows(50, 3)
    nt = np.full(50, 100.0)
    for method in ("energy", "energy_t0", "predictor"):
        np.testing.assert_array_equal(loaded.score(E, nt, method), router.score(E, nt, method))
    np.testing.assert_array_equal(loaded.posterior.alpha, router.posterior.alpha)


# ---- Ray Serve end to end ---------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_serve_end_to_end(serve_instance, router, tmp_path_factory):
    import httpx
    from ray import serve

    model_dir = save_router(router, tmp_path_factory.mktemp("router") / "router")
    serve.run(build_app({"model": str(model_dir)}), name="router", route_prefix="/")
    with httpx.Client(base_url=serve_instance.url, timeout=60) as http:
        deadline = time.time() + 30
        while (r := http.get("/healthz")).status_code != 200 and time.time() < deadline:
            time.sleep(0.5)
        assert r.status_code == 200 and r.json()["models"] == ["weak", "strong"]
        e = unit_rows(1, 99)[0]
        body = http.post("/route", json={"embedding": e.tolist(), "n_tokens": 50_000}).json()
        np.testing.assert_allclose(body["energies"], reference_energies(router, e, 50_000), rtol=1e-10, atol=1e-12)
        fb = http.post("/route/feedback", json={"request_id": body["request_id"], "quality": 1.0})
        assert fb.status_code == 200 and fb.json()["model"] == body["model"]
        assert http.post("/route/feedback", json={"request_id": body["request_id"], "quality": 1.0}).status_code == 404
        for payload, status, field in BAD[:8]:
            r = http.post("/route", json=payload)
            assert r.status_code == status and _field(r).split(".")[0] == field, (payload, r.text)


# ---- the OpenAI-compatible pass-through ----------------------------------------------------------------


@pytest.fixture(scope="module")
def upstream():
    """An OpenAI-shaped server on a free loopback port standing in for serve.llm (reliability.openai_standin).
    Yields (base URL, received bodies)."""
    standin = Standin()
    yield standin.url, standin.seen
    standin.close()


def _passthrough(router, upstream_url, **args):
    import copy

    r = copy.deepcopy(router)
    r.energy = r.energy.model_copy(update={"temperature": 0.0})      # argmin: a decision the test can recompute
    return TestClient(make_fastapi({"upstream": upstream_url, "engines": {"weak": "tiny-a", "strong": "tiny-b"},
                                    **args}, router=r))


@pytest.mark.parametrize("chat", [True, False])
def test_auto_is_routed_to_the_argmin_engine_and_passed_through(router, upstream, chat):
    from actors.common.embeddings import embed
    from actors.router.features import token_estimate

    url, seen = upstream
    client = _passthrough(router, url)
    texts = ["What is the derivative of x squared?", "Name the capital of France.", "Prove that sqrt 2 is irrational."]
    for text in texts:
        body = ({"model": "auto", "messages": [{"role": "system", "content": "be brief"},
                                               {"role": "user", "content": text}], "max_tokens": 4}
                if chat else {"model": "auto", "prompt": text, "max_tokens": 4})
        r = client.post("/v1/chat/completions" if chat else "/v1/completions", json=body)
        assert r.status_code == 200, r.text
        e = embed([text])[0]
        want = ["weak", "strong"][int(np.argmin(reference_energies(router, e, float(token_estimate([text])[0]))))]
        assert r.headers["x-attractor-model"] == want
        assert r.headers["x-attractor-engine"] == {"weak": "tiny-a", "strong": "tiny-b"}[want]
        assert seen[-1]["model"] == r.json()["model"] == r.headers["x-attractor-engine"]
        assert seen[-1]["max_tokens"] == 4 and seen[-1]["path"] == ("chat/completions" if chat else "completions")
        fb = client.post("/route/feedback", json={"request_id": r.headers["x-attractor-request-id"], "quality": 1.0})
        assert fb.status_code == 200 and fb.json()["model"] == want


def test_named_models_pass_untouched_streams_and_upstream_errors_come_back(router, upstream):
    url, seen = upstream
    client = _passthrough(router, url)
    r = client.post("/v1/chat/completions", json={"model": "tiny-a", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200 and r.json()["model"] == "tiny-a" and "x-attractor-model" not in r.headers, r.text
    with client.stream("POST", "/v1/chat/completions", json={"model": "auto", "stream": True,
                                                            "messages": [{"role": "user", "content": "hi"}]}) as s:
        assert s.status_code == 200 and s.headers["content-type"].startswith("text/event-stream")
        text = "".join(s.iter_text())
    assert text.endswith("data: [DONE]\n\n") and f'"model": "{s.headers["x-attractor-engine"]}"' in text
    r = client.post("/v1/completions", json={"model": "no-such-model", "prompt": "x"})
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"        # the upstream's own answer
    models = client.get("/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["auto", "tiny-a", "tiny-b"]


@pytest.mark.parametrize("path,content,status,field", [
    ("/v1/chat/completions", b"{not json", 422, "body"),
    ("/v1/chat/completions", b"[1, 2]", 422, "body"),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "hi"}]}', 422, "model"),
    ("/v1/chat/completions", b'{"model": "auto", "messages": [{"role": "system", "content": "x"}]}', 422, "messages"),
    ("/v1/chat/completions", b'{"model": "auto", "messages": []}', 422, "messages"),
    ("/v1/completions", b'{"model": "auto", "prompt": [1, 2, 3]}', 422, "prompt"),
    ("/v1/completions", b'{"model": "auto", "prompt": "   "}', 422, "prompt"),
    # found by the reliability fuzz: each was a 500 (httpx cannot send non-finite numbers; json's RecursionError)
    ("/v1/completions", b'{"model": "tiny-a", "prompt": "hi", "temperature": NaN}', 422, "body"),
    ("/v1/completions", b'{"model": "tiny-a", "prompt": "hi", "max_tokens": 1e400}', 422, "body"),
    ("/v1/chat/completions", b"[" * 100_000 + b"]" * 100_000, 422, "body"),
])
def test_bad_pass_through_requests_name_the_field(router, upstream, path, content, status, field):
    client = _passthrough(router, upstream[0])
    r = client.post(path, content=content, headers={"content-type": "application/json"})
    assert r.status_code == status and _field(r) == field, r.text


def test_missing_or_unreachable_upstream_is_503_and_engines_are_checked(router):
    import copy

    client = TestClient(make_fastapi({}, router=copy.deepcopy(router)))
    r = client.post("/v1/completions", json={"model": "auto", "prompt": "hi"})
    assert r.status_code == 503 and _field(r) == "upstream"
    client = _passthrough(router, f"http://127.0.0.1:{loopback_port()}/llm")      # nothing listens there
    r = client.post("/v1/completions", json={"model": "tiny-a", "prompt": "hi"})
    assert r.status_code == 503 and _field(r) == "upstream"
    with pytest.raises(InputError) as e:
        make_fastapi({"upstream": "http://127.0.0.1:1/llm", "engines": {"gpt-5": "x"}}, router=copy.deepcopy(router))
    assert e.value.field == "engines"


def test_router_with_prompt_stats_reads_them_from_the_text():
    from actors.common.embeddings import embed
    from actors.router.config import PredictorConfig
    from actors.router.features import prompt_stats
    from actors.router.router import fit_router

    base = synthetic_router()
    E = unit_rows(400, 0)
    rng = np.random.default_rng(5)
    X = np.hstack([E, rng.normal(size=(400, 11))])
    y = (X[:, 0] + X[:, -1] > 0).astype(float)
    r = fit_router(X, y, np.stack([1 - y, y], 1), base.cards, 1, predictor=PredictorConfig(prompt_stats=True))
    client = TestClient(make_fastapi({"max_prompt_chars": 1000}, router=r))
    text = "Tom has 3 apples and 12 pears. How many fruits?"
    got = client.post("/route", json={"prompt": text})
    assert got.status_code == 200, got.text
    want = r.decide(np.hstack([embed([text]), prompt_stats([text])]), np.array([12.0]))[3][0]
    assert got.json()["p_strong_better"] == pytest.approx(want, abs=1e-6)
    bad = client.post("/route", json={"embedding": E[0].tolist()})
    assert bad.status_code == 422 and _field(bad) == "embedding"
