"""Bearer-token authentication of the Serve apps (serve/common.py BearerAuth, issue 16): off by default,
on when a token is configured (the app argument `auth_token_file` or $ATTRACTOR_API_TOKEN); every route
but /healthz answers 401 with WWW-Authenticate without the right token; validation's gRPC methods check
the `authorization` metadata. In-process (FastAPI TestClient, a stand-in gRPC context) plus one real
Serve deployment."""
from __future__ import annotations

import json
from functools import partial
from types import SimpleNamespace

import httpx
import pytest
from fastapi.testclient import TestClient

from actors.common.errors import InputError
from serve.common import TOKEN_ENV, api_token, token_matches
from serve.te import TEServeArgs
from serve.te import make_fastapi as te_app
from serve.validation import ValidationIngress, ValidationServeArgs

TOKEN = "s3cret-token-0123456789"
TE_BODY = {"source": [0.1, 0.5, -0.3, 0.8, 0.2, -0.9, 0.4, 0.0, -0.2, 0.7, 0.3, -0.5],
           "target": [0.0, 0.1, 0.5, -0.3, 0.8, 0.2, -0.9, 0.4, 0.0, -0.2, 0.7, 0.3], "k": 2, "surrogates": 0}


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")   # a mounted Secret may end with a newline
    return str(path)


@pytest.fixture(autouse=True)
def no_env_token(monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)


def bearer(token: str) -> dict:
    return {"authorization": f"Bearer {token}"}


def test_token_compare():
    assert token_matches(f"Bearer {TOKEN}", TOKEN) and token_matches(f"bearer  {TOKEN} ", TOKEN)
    for sent in (None, "", "Bearer", "Bearer ", f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}"):
        assert not token_matches(sent, TOKEN), sent


def test_off_by_default_and_token_sources(token_file, tmp_path, monkeypatch):
    assert api_token(TEServeArgs()) is None and api_token(None) is None
    assert api_token(TEServeArgs(auth_token_file=token_file)) == TOKEN
    r = TestClient(te_app(TEServeArgs())).post("/te", json=TE_BODY)
    assert r.status_code == 200, r.text    # no token configured: open (local development)
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    assert api_token(TEServeArgs()) == "from-env"
    assert api_token(TEServeArgs(auth_token_file=token_file)) == TOKEN   # the file wins
    (tmp_path / "empty").write_text("\n")
    for path, what in ((tmp_path / "missing", "cannot read"), (tmp_path / "empty", "empty")):
        with pytest.raises(InputError, match=what) as err:   # fail closed, never an open app
            te_app(TEServeArgs(auth_token_file=str(path)))
        assert err.value.field == "auth_token_file"


@pytest.mark.parametrize("source", ["file", "env"])
def test_http_routes_need_the_token_healthz_does_not(source, token_file, monkeypatch):
    if source == "env":
        monkeypatch.setenv(TOKEN_ENV, TOKEN)
        client = TestClient(te_app(TEServeArgs()))
    else:
        client = TestClient(te_app(TEServeArgs(auth_token_file=token_file)))
    for headers, error in (({}, False), (bearer("wrong"), True), ({"authorization": TOKEN}, True)):
        r = client.post("/te", json=TE_BODY, headers=headers)
        assert r.status_code == 401, r.text
        assert r.headers["www-authenticate"].startswith("Bearer realm=")
        assert ('error="invalid_token"' in r.headers["www-authenticate"]) == error
        assert r.json()["detail"]["field"] == "authorization"
        assert client.get("/openapi.json", headers=headers).status_code == 401   # the docs too
        assert client.get("/nowhere", headers=headers).status_code == 401        # no route probing
    r = client.post("/te", json=TE_BODY, headers=bearer(TOKEN))
    assert r.status_code == 200 and r.json()["n_obs"] == 11, r.text
    assert client.get("/openapi.json", headers=bearer(TOKEN)).status_code == 200
    assert client.get("/healthz").status_code == 200


class Ctx:
    """Stands in for Serve's RayServegRPCContext: peer(), invocation_metadata(), set_code(), set_details()."""

    def __init__(self, metadata=()):
        self.metadata, self.code, self.details = list(metadata), None, None

    def peer(self) -> str:
        return "ipv4:127.0.0.1:50000"

    def invocation_metadata(self):
        return self.metadata

    def set_code(self, code):
        self.code = code

    def set_details(self, details):
        self.details = details


def test_validation_grpc_checks_authorization_metadata(token_file):
    import grpc

    from serve.protos import validation_pb2 as pb

    rows = [{"a": float(i % 7), "b": float((3 * i) % 11)} for i in range(40)]
    request = pb.DiversityRequest(table=pb.Table(records_json=json.dumps(rows).encode()))

    def call(args, metadata):
        state = SimpleNamespace(args=args)
        ctx = Ctx(metadata)
        reply = partial(ValidationIngress.func_or_class.AnalyzeDiversity, state)(request, grpc_context=ctx)
        return ctx, reply

    args = ValidationServeArgs(auth_token_file=token_file)
    for metadata in ((), [("authorization", "Bearer nope")], [("x-other", TOKEN)]):
        with pytest.raises(RuntimeError):
            call(args, metadata)
    ctx = Ctx()
    with pytest.raises(RuntimeError):
        ValidationIngress.func_or_class.AnalyzeDiversity(SimpleNamespace(args=args), request, grpc_context=ctx)
    assert ctx.code == grpc.StatusCode.UNAUTHENTICATED and json.loads(ctx.details)["field"] == "authorization"
    ctx, reply = call(args, [("authorization", f"Bearer {TOKEN}")])
    assert ctx.code is None and reply.vendi > 1.0
    ctx, reply = call(ValidationServeArgs(), [])   # no token configured: no check
    assert ctx.code is None and reply.vendi > 1.0


@pytest.mark.slow
def test_real_serve_deployment_enforces_the_token(serve_instance, token_file):
    from ray import serve

    from serve.te import build_app

    serve.run(build_app({"auth_token_file": token_file}), name="te_auth", route_prefix="/")
    try:
        url = serve_instance.url
        assert httpx.get(f"{url}/healthz", timeout=30).status_code == 200
        r = httpx.get(f"{url}/openapi.json", timeout=30)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert httpx.get(f"{url}/openapi.json", headers=bearer("wrong"), timeout=30).status_code == 401
        r = httpx.post(f"{url}/te", json=TE_BODY, headers=bearer(TOKEN), timeout=60)
        assert r.status_code == 200 and r.json()["n_obs"] == 11, r.text
    finally:
        serve.delete("te_auth")


def test_exempt_paths_under_a_route_prefix():
    """Serve mounts an app under its route_prefix (a RayService: /sweep, /te, ...): /sweep/healthz with
    root_path /sweep is the app's /healthz and stays open; other paths still need the token."""
    import asyncio

    from serve.common import BearerAuth, app_path

    assert app_path({"path": "/sweep/healthz", "root_path": "/sweep"}) == "/healthz"
    assert app_path({"path": "/healthz", "root_path": ""}) == "/healthz"
    assert app_path({"path": "/sweep", "root_path": "/sweep"}) == "/"

    async def inner(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    def status(path: str) -> int:
        sent = []

        async def send(msg):
            sent.append(msg)

        scope = {"type": "http", "path": path, "root_path": "/sweep", "headers": []}
        asyncio.run(BearerAuth(inner, TOKEN)(scope, None, send))
        return sent[0]["status"]

    assert status("/sweep/healthz") == 200 and status("/sweep/sweep/simulate") == 401
    assert status("/sweep/docs") == 401
