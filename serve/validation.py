"""Front end of the validation subsystem: DetectCollapse, LocalizeProblems, GenerateRecommendations,
AnalyzeDiversity, PreScreenRisk, TrainCascade (streamed progress) and GetPredictions, as JSON over HTTP
and as gRPC methods (serve/protos/validation.proto) of the same deployment.

    serve run serve.validation:build_app max_rows=200000
    curl -s 127.0.0.1:8000/validation/detect -H 'content-type: application/json' \\
         -d '{"real": {"csv": "a,b\\n1,2\\n..."}, "synthetic": {"records": [{"a": 1, "b": 2}, ...]}}'

Tables come inline: `{"records": [{col: value, ...}, ...]}` or `{"csv": "text with a header row"}`.
Reading files by path is OFF unless the app is started with `data_root=DIR`: then `{"path": ...}`
(relative to DIR, or absolute) is read only when it resolves inside DIR (`..` and symlinks out of it
are refused), with one error text whether or not the path exists (actors/validation/data.py
`load_table_under`). Numbers in tables must be finite with |x| <= 1e150 (null / empty = missing).

Errors: bad input (missing columns, type conflicts, empty tables, all-missing or non-finite columns,
bad settings, a junk prescreen `report`) is 422 with {"detail": {"field", "message", "allowed"}} -
the one body of every error, 404 / 405 of unknown routes included; a table over `max_rows` (or
inline over `max_inline_rows`) is 413; an unknown model id is 404; a request past `request_timeout_s`
is 504, a full replica 503 (serve/common.py `Admission`); an internal error is 500 with a request id
(the traceback goes to the replica log). Over gRPC the same errors are INVALID_ARGUMENT /
RESOURCE_EXHAUSTED / NOT_FOUND / DEADLINE_EXCEEDED / PERMISSION_DENIED / INTERNAL with that JSON
detail as the status details, never a traceback.

The request logic is plain functions (`run_detect`, ...) over the engine (actors/validation: `validate`,
the cascade and its model store) and `make_fastapi(args)` builds the app, so tests use it without
Serve; this module only routes. Start Serve on the loopback interface with the gRPC proxy:

    serve.start(http_options={"host": "127.0.0.1", "port": 8000},
                grpc_options=gRPCOptions(port=9000, grpc_servicer_functions=[GRPC_SERVICER]))

Ray Serve 2.60 has no gRPC host setting: its gRPC proxy listens on `[::]:<port>` (every interface)
whatever `http_options.host` says (ray/serve/_private/grpc_util.py `start_grpc_server`). So the app
itself answers gRPC calls from loopback peers only (PERMISSION_DENIED otherwise) unless it is started
with `grpc_allow_remote=true`; keep the port firewalled or put an authenticating proxy in front
before allowing remote clients. With a bearer token configured (`auth_token_file` or
$ATTRACTOR_API_TOKEN, serve/common.py) every gRPC call needs the metadata `authorization: Bearer <token>`
(else UNAUTHENTICATED), as every HTTP route but /healthz does.
"""
from __future__ import annotations

import io
import ipaddress
import json
import logging
import math
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import ConfigDict, Field, StrictBool
from ray import serve

from actors.common.budget import Budget, Cancelled, scope
from actors.common.config import Strict, validated
from actors.common.errors import Forbidden, InputError, TooLarge, from_validation
from actors.validation.config import (
    DatasetName,
    DetectorConfig,
    Dimension,
    LocalizerConfig,
    PlantedCase,
    RecommenderConfig,
    Severity,
    ValidationSpec,
)
from actors.validation.data import check_label, check_values, load_table_under
from actors.validation.model_store import FrozenEncoder, new_model_id, save_model
from actors.validation.model_store import predict as predict_rows
from serve.common import AppIngress, ServeArgs, Unauthorized, api_token, builder, new_app, token_matches

GRPC_SERVICER = "serve.protos.validation_pb2_grpc.add_ValidationServiceServicer_to_server"
log = logging.getLogger("attractor.serve.validation")


class ValidationServeArgs(ServeArgs):
    """Application arguments (`serve run serve.validation:build_app key=value ...`); replicas, CPUs and
    GPUs per replica come from ServeArgs.

    Bounded work, the ServeArgs defaults: `max_concurrent` = 2 requests computing at once per replica,
    `max_waiting` = 8 more waiting (then 503 with Retry-After), `max_queued_requests` = 32 in Serve's
    router queue, and `request_timeout_s` = 120 s of compute per request: the engines' loops
    (permutation nulls, memorisation and classifier nulls, localizer searches, recommender re-checks,
    cascade rungs and epochs, diversity) check that budget and stop with 504 naming
    `request_timeout_s`, or at once when the client disconnects. Raise it for large tables by path.
    gRPC calls get the same time budget.

    Files: `data_root` None (default) = no table is read by path; a directory = paths must resolve
    inside it. `grpc_allow_remote` False (default) = gRPC calls from non-loopback peers are refused.
    """

    max_rows: int = Field(200_000, gt=0)          # most rows per table (by path or inline)
    max_inline_rows: int = Field(20_000, gt=0)    # most rows per inline table
    data_root: str | None = None                  # tables by path only from inside this directory
    grpc_allow_remote: bool = False               # answer gRPC peers other than loopback
    max_flagged_rows: int = Field(1_000, gt=0)
    signature_dir: str = "runs/validation/signatures"   # the signature library (seeded here when empty)
    seed_severities: tuple[Severity, ...] = ("medium", "high")
    seed_datasets: tuple[DatasetName, ...] = ("wine",)
    seed_cases: tuple[PlantedCase, ...] | None = None   # None = every planted case and clean controls
    model_dir: str = "runs/validation/models"            # trained cascades, one directory per model id
    max_k: int = Field(20, gt=0)


class Table(Strict):
    records: list[dict[str, Any]] | None = None
    path: str | None = None
    csv: str | None = None      # inline CSV text with a header row


class DetectRequest(Strict):
    real: Table
    synthetic: Table
    detector: dict[str, Any] = Field(default_factory=dict)    # DetectorConfig fields


class LocalizeRequest(Strict):
    real: Table
    synthetic: Table
    label: str | None = None
    localizer: dict[str, Any] = Field(default_factory=dict)   # LocalizerConfig fields


class RecommendRequest(Strict):
    real: Table
    synthetic: Table
    label: str | None = None
    detector: dict[str, Any] = Field(default_factory=dict)
    localizer: dict[str, Any] = Field(default_factory=dict)
    recommender: dict[str, Any] = Field(default_factory=dict)


class DiversityRequest(Strict):
    table: Table
    reference: Table | None = None
    text_columns: list[str] | None = None    # free-text columns (sentence embeddings); None = detected
    text_rows: int = Field(1_000, ge=2, le=20_000)   # rows embedded per text column (seeded sample)


class DimensionSummary(Strict):
    """One dimension of a /validation/detect document."""

    score: float | None = None      # null: a non-finite score (counts as 0, as in the fingerprint)
    p_value: float = Field(ge=0, le=1)
    flagged: StrictBool
    columns: list[str] = Field(default_factory=list)


class DetectDocument(Strict):
    """What PreScreenRisk accepts as `report`: a /validation/detect document (or the engine's
    CollapseReport.to_json()); other top-level keys (e.g. a job report's) are ignored, the ones read
    are checked."""

    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)

    collapsed: StrictBool
    alpha: float | None = Field(None, gt=0, lt=1)
    n_real: int | None = Field(None, ge=0)
    n_synth: int | None = Field(None, ge=0)
    dimensions: dict[Dimension, DimensionSummary] = Field(min_length=1)


class PreScreenRequest(Strict):
    real: Table
    synthetic: Table
    report: dict[str, Any] | None = None    # a /validation/detect document; None = run a cheap detector
    detector: dict[str, Any] = Field(default_factory=dict)
    k: int = Field(5, ge=1)


class CascadeRequest(Strict):
    real: Table
    synthetic: Table
    label: str
    cascade: dict[str, Any] = Field(default_factory=dict)     # CascadeConfig fields


class PredictRequest(Strict):
    model_id: str
    rows: Table


# ---- request logic (no Ray, no HTTP) ---------------------------------------------------------------
def load(table: Table, field: str, args: ValidationServeArgs, *, min_rows: int = 10) -> pd.DataFrame:
    """The table from inline records / CSV, or by path inside `data_root`; 413 over the limits, 422 when
    under `min_rows` (10 for a table to compare, 1 for rows to predict), unreadable, with non-finite /
    huge numbers or nested cells, or by path without data_root."""
    if sum(x is not None for x in (table.records, table.path, table.csv)) != 1:
        raise InputError(field, "give exactly one of records, csv or path",
                         "{records: [...]}, {csv: '...'} or {path: ...}")
    more = "a path inside data_root for more" if args.data_root else "this server reads no files"
    if table.records is not None:
        if len(table.records) > args.max_inline_rows:
            raise TooLarge(f"{field}.records", f"{len(table.records)} rows inline",
                           f"<= {args.max_inline_rows} ({more})")
        df = pd.DataFrame.from_records(table.records)
    elif table.csv is not None:
        if table.csv.count("\n") > args.max_inline_rows + 1:
            raise TooLarge(f"{field}.csv", f"{table.csv.count(chr(10))} lines inline",
                           f"<= {args.max_inline_rows} rows ({more})")
        try:
            df = pd.read_csv(io.StringIO(table.csv)) if table.csv.strip() else pd.DataFrame()
        except (ValueError, pd.errors.ParserError) as exc:
            raise InputError(f"{field}.csv", f"unreadable CSV: {exc}", "CSV text with a header row") from exc
    elif args.data_root is None:
        raise InputError(f"{field}.path", "this server reads no tables by path",
                         "inline {records: [...]} or {csv: '...'} (paths need the app argument data_root)")
    else:
        df = load_table_under(args.data_root, table.path, f"{field}.path")
    if len(df) > args.max_rows:
        raise TooLarge(field, f"{len(df)} rows", f"<= {args.max_rows}")
    if len(df) < min_rows or df.shape[1] == 0:
        raise InputError(field, "table is empty" if len(df) == 0 or df.shape[1] == 0 else f"{len(df)} rows",
                         f">= {min_rows} rows and >= 1 column")
    check_values(df, field)
    return df


def _clean(obj: Any) -> Any:
    """JSON-safe: non-finite floats become null (a score can be +inf for an all-missing column)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def run_detect(req: DetectRequest, args: ValidationServeArgs) -> dict:
    from actors.validation.detector import detect

    real, synth = load(req.real, "real", args), load(req.synthetic, "synthetic", args)
    cfg = validated(DetectorConfig, req.detector, prefix="detector.")
    rep = detect(real, synth, cfg).to_json()
    return _clean({k: rep[k] for k in ("collapsed", "alpha", "n_real", "n_synth", "dimensions")})


def run_localize(req: LocalizeRequest, args: ValidationServeArgs) -> dict:
    from actors.validation.localize import localize

    real, synth = load(req.real, "real", args), load(req.synthetic, "synthetic", args)
    check_label(req.label, real, synth)
    cfg = validated(LocalizerConfig, req.localizer, prefix="localizer.")
    loc = localize(real, synth, cfg, label=req.label)
    return _clean({"flagged_rows": loc.to_json(args.max_flagged_rows),
                   "counts": {k: int(len(v)) for k, v in loc.flagged.items()}})


def run_recommend(req: RecommendRequest, args: ValidationServeArgs) -> dict:
    """The validation pipeline (`validate`: detect -> localize -> recommend), the same one the job runs."""
    from actors.validation.pipeline import validate

    real, synth = load(req.real, "real", args), load(req.synthetic, "synthetic", args)
    spec = ValidationSpec(detector=validated(DetectorConfig, req.detector, prefix="detector."),
                          localizer=validated(LocalizerConfig, req.localizer, prefix="localizer."),
                          recommender=validated(RecommenderConfig, req.recommender, prefix="recommender."))
    res = validate(real, synth, spec, label=req.label)
    return _clean({"collapsed": res.report.collapsed, "failing": res.report.flagged(),
                   "recommendations": [r.to_json() for r in res.recommendations]})


def run_diversity(req: DiversityRequest, args: ValidationServeArgs) -> dict:
    from actors.validation.diversity import analyze

    table = load(req.table, "table", args)
    ref = load(req.reference, "reference", args) if req.reference is not None else None
    return _clean(analyze(table, ref, text_columns=req.text_columns, text_rows=req.text_rows))


def signature_library(args: ValidationServeArgs):
    """The library at `signature_dir`; seeded from the planted generator (cheap detector) when absent."""
    from actors.validation.planted import CASES
    from actors.validation.signatures import SignatureLibrary, seed_library

    path = Path(args.signature_dir)
    # sync endpoints run in a thread pool: seed once, not once per concurrent request; seeding is the
    # server's own start-up work, not bounded by the budget of the request that happens to trigger it
    with _LIBRARY_LOCK, scope(None):
        if str(path) in _LIBRARIES:
            return _LIBRARIES[str(path)]
        if (path / "labels.json").exists():
            lib = SignatureLibrary.load(path)
        else:
            cases = args.seed_cases if args.seed_cases is not None else (*CASES, "clean")
            lib = seed_library(cases, severities=args.seed_severities, datasets=args.seed_datasets, path=path)
        _LIBRARIES[str(path)] = lib
        return lib


_LIBRARIES: dict[str, Any] = {}   # per signature_dir, loaded or seeded once per process
_LIBRARY_LOCK = threading.Lock()


def run_prescreen(req: PreScreenRequest, args: ValidationServeArgs, library: Any = None) -> dict:
    """Fingerprint of the pair (of the given report, else of a cheap detector run) -> nearest patterns."""
    from actors.validation.detector import detect
    from actors.validation.signatures import SEED_DETECTOR, fingerprint

    if req.k > args.max_k:
        raise InputError("k", f"{req.k}", f"1 .. {args.max_k}")
    real, synth = load(req.real, "real", args), load(req.synthetic, "synthetic", args)
    if req.report is None:
        cfg = validated(DetectorConfig, {**SEED_DETECTOR, **req.detector}, prefix="detector.")
        report: Any = detect(real, synth, cfg)
    else:   # every field the fingerprint reads is checked: a junk report is a 422 naming it
        doc = validated(DetectDocument, req.report, prefix="report.")
        report = {"dimensions": {k: {"score": 0.0 if d.score is None else d.score, "p_value": d.p_value}
                                 for k, d in doc.dimensions.items()}}
    fp = fingerprint(report, real, synth)
    lib = library if library is not None else signature_library(args)
    matches = lib.prescreen_risk(fp, req.k)
    return _clean({"library_size": len(lib), "fingerprint": fp.tolist(),
                   "matches": [{"label": m.label, "similarity": m.similarity, "meta": m.meta} for m in matches]})


def run_cascade(req: CascadeRequest, args: ValidationServeArgs) -> Iterator[dict]:
    """Progress events of the climb; input errors are raised before the first event (so they are 4xx),
    the last event carries the result and the model id GetPredictions takes. On a Serve replica (Ray is
    up) the rungs run as Ray tasks; in a plain process (tests) in the process."""
    import ray

    from actors.validation.cascade import climb
    from actors.validation.cascade_config import CascadeConfig

    real, synth = load(req.real, "real", args), load(req.synthetic, "synthetic", args)
    cfg = validated(CascadeConfig, req.cascade, prefix="cascade.")
    model_id = new_model_id()
    out = Path(args.model_dir) / model_id
    climber = climb
    if ray.is_initialized():
        from actors.validation.pool import climb_on_cluster as climber
    events = climber(real, synth, req.label, cfg, out_dir=out)
    first = next(events)          # data checks run here

    def stream() -> Iterator[dict]:
        yield _clean(first)
        for ev in events:
            if ev["status"] != "finished":
                yield _clean(ev)
                continue
            result = ev.pop("result")
            save_model(out, label=req.label, result=result, config=cfg,
                       encoder=FrozenEncoder.fit(real, synth, req.label))
            yield _clean({**ev, "model_id": model_id, "result": result.to_json()})
    return stream()


def error_events(events: Iterator[dict]) -> Iterator[dict]:
    """An HTTP event stream that ends with {"status": "error", "detail": {field, message, allowed}} when
    the climb fails after its first event (the 200 status is already sent; e.g. 504 request_timeout_s)."""
    try:
        yield from events
    except InputError as exc:
        yield {"status": "error", "status_code": exc.status_code, "detail": exc.to_dict()}


def run_predict(req: PredictRequest, args: ValidationServeArgs) -> dict:
    rows = load(req.rows, "rows", args, min_rows=1)
    return _clean(predict_rows(args.model_dir, req.model_id, rows))


# ---- HTTP -----------------------------------------------------------------------------------------
def make_fastapi(args: ValidationServeArgs | dict | None = None) -> FastAPI:
    """The FastAPI app (routes, error mapping, OpenAPI at /docs) for the given limits."""
    args = args if isinstance(args, ValidationServeArgs) else ValidationServeArgs.model_validate(args or {})
    app = new_app("attractor validation",
                  "Calibrated collapse detection, row localization and fixes for tabular data.", args=args)

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok", "limits": {"max_rows": args.max_rows, "max_inline_rows": args.max_inline_rows}}

    @app.post("/validation/detect")
    def detect_collapse(req: DetectRequest) -> dict:
        return run_detect(req, args)

    @app.post("/validation/localize")
    def localize_problems(req: LocalizeRequest) -> dict:
        return run_localize(req, args)

    @app.post("/validation/recommend")
    def generate_recommendations(req: RecommendRequest) -> dict:
        return run_recommend(req, args)

    @app.post("/validation/diversity")
    def analyze_diversity(req: DiversityRequest) -> dict:
        return run_diversity(req, args)

    @app.post("/validation/prescreen")
    def prescreen_risk(req: PreScreenRequest) -> dict:
        return run_prescreen(req, args)

    @app.post("/validation/cascade")
    def train_cascade(req: CascadeRequest) -> StreamingResponse:
        events = error_events(run_cascade(req, args))
        return StreamingResponse((json.dumps(ev) + "\n" for ev in events), media_type="application/x-ndjson")

    @app.post("/validation/predict")
    def get_predictions(req: PredictRequest) -> dict:
        return run_predict(req, args)

    return app


@serve.deployment(name="ValidationServe")
@serve.ingress()
class ValidationIngress(AppIngress):
    """Serve replica: holds the validated args; the FastAPI app is built on the replica."""

    args_cls = ValidationServeArgs
    make_fastapi = staticmethod(make_fastapi)

    # ---- gRPC methods (named after the RPCs of serve/protos/validation.proto) ----
    def DetectCollapse(self, request, grpc_context=None):
        from serve.protos import validation_pb2 as pb

        with _GrpcErrors(grpc_context, pb.DetectReply, self.args, method="DetectCollapse") as reply:
            doc = run_detect(DetectRequest(real=_table(request.real), synthetic=_table(request.synthetic),
                                           detector=_obj(request.detector_json, "detector_json")), self.args)
            failing = [k for k, d in doc["dimensions"].items() if d.get("flagged")]
            reply.set(pb.DetectReply(collapsed=doc["collapsed"], failing=failing, json=json.dumps(doc)))
        return reply.value

    def LocalizeProblems(self, request, grpc_context=None):
        from serve.protos import validation_pb2 as pb

        with _GrpcErrors(grpc_context, pb.LocalizeReply, self.args, method="LocalizeProblems") as reply:
            doc = run_localize(LocalizeRequest(real=_table(request.real), synthetic=_table(request.synthetic),
                                               label=request.label or None,
                                               localizer=_obj(request.localizer_json, "localizer_json")), self.args)
            reply.set(pb.LocalizeReply(n_flagged=len(doc["flagged_rows"]), json=json.dumps(doc)))
        return reply.value

    def GenerateRecommendations(self, request, grpc_context=None):
        from serve.protos import validation_pb2 as pb

        with _GrpcErrors(grpc_context, pb.RecommendReply, self.args, method="GenerateRecommendations") as reply:
            doc = run_recommend(RecommendRequest(
                real=_table(request.real), synthetic=_table(request.synthetic), label=request.label or None,
                detector=_obj(request.detector_json, "detector_json"),
                localizer=_obj(request.localizer_json, "localizer_json"),
                recommender=_obj(request.recommender_json, "recommender_json")), self.args)
            top = doc["recommendations"][0]["fix"] if doc["recommendations"] else ""
            reply.set(pb.RecommendReply(collapsed=doc["collapsed"], top_fix=top, json=json.dumps(doc)))
        return reply.value

    def AnalyzeDiversity(self, request, grpc_context=None):
        from serve.protos import validation_pb2 as pb

        with _GrpcErrors(grpc_context, pb.DiversityReply, self.args, method="AnalyzeDiversity") as reply:
            ref = _table(request.reference) if request.HasField("reference") else None
            doc = run_diversity(DiversityRequest(table=_table(request.table), reference=ref), self.args)
            reply.set(pb.DiversityReply(vendi=doc["vendi"], json=json.dumps(doc)))
        return reply.value

    def PreScreenRisk(self, request, grpc_context=None):
        from serve.protos import validation_pb2 as pb

        with _GrpcErrors(grpc_context, pb.PreScreenReply, self.args, method="PreScreenRisk") as reply:
            req = PreScreenRequest(real=_table(request.real), synthetic=_table(request.synthetic),
                                   report=_obj(request.report_json, "report_json") or None,
                                   detector=_obj(request.detector_json, "detector_json"), k=request.k or 5)
            doc = run_prescreen(req, self.args)
            top = doc["matches"][0] if doc["matches"] else {"label": "", "similarity": 0.0}
            reply.set(pb.PreScreenReply(top_label=top["label"], top_similarity=top["similarity"],
                                        json=json.dumps(doc)))
        return reply.value

    def TrainCascade(self, request, grpc_context=None):
        from serve.protos import validation_pb2 as pb

        # a stream ends with the status only when the generator raises (Serve keeps the code set here);
        # the guard is entered once per event: the budget's context is set and reset within one step
        guard = _GrpcErrors(grpc_context, pb.CascadeEvent, self.args, reraise=True, method="TrainCascade")
        with guard:
            events = run_cascade(CascadeRequest(real=_table(request.real), synthetic=_table(request.synthetic),
                                                label=request.label,
                                                cascade=_obj(request.cascade_json, "cascade_json")), self.args)
        while True:
            with guard:
                ev = next(events, None)
            if ev is None:
                return
            yield pb.CascadeEvent(status=ev["status"], rung=ev["rung"], model=ev["model"],
                                  model_id=ev.get("model_id", ""), json=json.dumps(ev))

    def GetPredictions(self, request, grpc_context=None):
        from serve.protos import validation_pb2 as pb

        with _GrpcErrors(grpc_context, pb.PredictReply, self.args, method="GetPredictions") as reply:
            doc = run_predict(PredictRequest(model_id=request.model_id, rows=_table(request.rows)), self.args)
            reply.set(pb.PredictReply(predictions=[str(v) for v in doc["predictions"]], json=json.dumps(doc)))
        return reply.value


# ---- gRPC glue ------------------------------------------------------------------------------------
def _table(msg: Any) -> Table:
    """A proto Table as the HTTP Table (path, inline JSON records or inline CSV)."""
    which = msg.WhichOneof("source")
    if which == "path":
        return Table(path=msg.path)
    if which == "records_json":
        records = _obj(msg.records_json, "records_json", list)
        return Table(records=records)
    if which == "csv":
        return Table(csv=msg.csv.decode("utf-8", errors="replace"))
    return Table()   # neither: load() names the field


def _obj(raw: str | bytes, field: str, kind: type = dict) -> Any:
    """A JSON object (or list) from a proto string field; "" is empty."""
    if not raw:
        return kind()
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise InputError(field, f"not JSON ({exc})", f"a JSON {kind.__name__}") from exc
    if not isinstance(value, kind):
        raise InputError(field, f"a JSON {type(value).__name__}", f"a JSON {kind.__name__}")
    return value


class _Reply:
    def __init__(self, empty: Any):
        self.value, self.failed = empty, False

    def set(self, value: Any) -> None:
        self.value = value


class PeerRefused(Forbidden):
    """A gRPC call from a peer the app does not serve (HTTP 403 / PERMISSION_DENIED)."""


def _grpc_codes() -> dict[int, Any]:
    import grpc

    return {413: grpc.StatusCode.RESOURCE_EXHAUSTED, 404: grpc.StatusCode.NOT_FOUND, 403: grpc.StatusCode.PERMISSION_DENIED,
            504: grpc.StatusCode.DEADLINE_EXCEEDED, 503: grpc.StatusCode.UNAVAILABLE, 401: grpc.StatusCode.UNAUTHENTICATED}


def loopback_peer(peer: str) -> bool:
    """Whether a gRPC peer string ("ipv4:127.0.0.1:5000", "ipv6:[::1]:5000", "unix:...") is this host."""
    kind, _, rest = peer.partition(":")
    if kind == "unix":
        return True
    if kind not in ("ipv4", "ipv6"):
        return False
    host = rest.rsplit(":", 1)[0].strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _GrpcErrors:
    """One gRPC call's guard: the peer check (loopback only unless `grpc_allow_remote`), the bearer
    token in the `authorization` metadata when the app has one (serve.common.api_token; else
    UNAUTHENTICATED), the request's time budget (`request_timeout_s`, checked by the engines' loops), and errors as statuses.

    InputError -> its status (INVALID_ARGUMENT; 413 RESOURCE_EXHAUSTED, 404 NOT_FOUND, 403
    PERMISSION_DENIED, 504 DEADLINE_EXCEEDED) with the HTTP JSON detail {field, message, allowed} as the
    details; a pydantic error the same way (field named as over HTTP); anything else INTERNAL with a
    generic message and a request id, the traceback to the replica log (never paths, PIDs or
    addresses to the client). The reply stays empty. `reraise` (streams): raise a plain error after
    setting the status, so the stream ends with it (Serve keeps the code and details set here).
    """

    def __init__(self, grpc_context: Any, reply_type: type, args: ValidationServeArgs, *, reraise: bool = False,
                 method: str = ""):
        self.ctx, self.reply, self.reraise, self.args, self.method = (grpc_context, _Reply(reply_type()), reraise,
                                                                      args, method)
        self.budget = Budget(args.request_timeout_s)   # one budget per call, also when entered once per event
        self._scope: Any = None
        self._admitted = False

    def __enter__(self) -> _Reply:
        if not self._admitted and self.ctx is not None and not self.args.grpc_allow_remote:
            peer = str(self.ctx.peer() or "") if hasattr(self.ctx, "peer") else ""
            if not loopback_peer(peer):
                detail = self._answer(PeerRefused(
                    "peer", "gRPC calls are answered for clients on this host only",
                    "a loopback client (the app argument grpc_allow_remote=true allows others)"))
                raise RuntimeError(detail["message"])   # Serve keeps the code and details set on the context
        token = api_token(self.args) if not self._admitted and self.ctx is not None else None
        if token is not None:
            sent = next((v for k, v in (self.ctx.invocation_metadata() or ()) if k.lower() == "authorization"), None)
            if not token_matches(sent, token):
                detail = self._answer(Unauthorized("authorization", "a valid bearer token is required",
                                                   "metadata authorization: Bearer <token>"))
                raise RuntimeError(detail["message"])
        self._admitted = True
        self._scope = scope(self.budget)
        self._scope.__enter__()
        return self.reply

    def _answer(self, exc: BaseException) -> dict:
        """Set the status for `exc` on the context; the detail sent."""
        import grpc

        if isinstance(exc, InputError):
            code = _grpc_codes().get(exc.status_code, grpc.StatusCode.INVALID_ARGUMENT)
            detail = exc.to_dict()
        elif isinstance(exc, Cancelled):
            code, detail = grpc.StatusCode.CANCELLED, {"field": "request", "message": "cancelled", "allowed": None}
        else:
            request_id = uuid.uuid4().hex[:16]
            log.error("internal error %s in gRPC %s", request_id, self.method, exc_info=exc)
            code = grpc.StatusCode.INTERNAL
            detail = {"field": None, "allowed": None,
                      "message": f"internal error (request id {request_id}; details are in the server log)"}
        self.ctx.set_code(code)
        self.ctx.set_details(json.dumps(detail))
        self.reply.failed = True
        return detail

    def __exit__(self, exc_type, exc, tb) -> bool:
        from pydantic import ValidationError

        self._scope.__exit__(exc_type, exc, tb)
        if exc is None or not isinstance(exc, Exception):   # GeneratorExit, KeyboardInterrupt: not ours
            return False
        if isinstance(exc, ValidationError):
            exc = from_validation(exc)
        if self.ctx is None:   # called outside Serve (tests): the error itself, not a status
            if isinstance(exc, InputError):
                raise exc from None
            return False
        detail = self._answer(exc)
        if self.reraise:   # a plain exception: the proxy must unpickle it; its text is the generic detail
            raise RuntimeError(detail["message"]) from None
        return True


build_app = builder(ValidationIngress, ValidationServeArgs)


app = build_app({})
