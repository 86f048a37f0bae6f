"""Front end of the validation subsystem: DetectCollapse, LocalizeProblems, GenerateRecommendations,
AnalyzeDiversity, PreScreenRisk, TrainCascade (streamed progress) and GetPredictions, as JSON over HTTP
and as gRPC methods (serve/protos/validation.proto) of the same deployment.

    serve run serve.validation:build_app max_rows=200000
    curl -s localhost:8000/validation/detect -H 'content-type: application/json' \\
         -d '{"real": {"path": "runs/val/real.parquet"}, "synthetic": {"path": "runs/val/synthetic.parquet"}}'

Tables come inline (`{"records": [{col: value, ...}, ...]}`) or by reference (`{"path": ".parquet|.csv"}`
readable by the replica). Errors: bad input (missing columns, type conflicts, empty tables, all-missing
columns, bad settings) is 422 with {"detail": {"field", "message", "allowed"}}; a table over
`max_rows` (or inline over `max_inline_rows`) is 413; an unknown model id is 404. Over gRPC the same
errors are INVALID_ARGUMENT / RESOURCE_EXHAUSTED / NOT_FOUND with the JSON detail as the status details.
The request logic is plain functions (`run_detect`, ...) over the engine (actors/validation: `validate`,
the cascade and its model store) and `make_fastapi(args)` builds the app, so tests use it without
Serve; this module only routes. The gRPC proxy is started with

    serve.start(grpc_options=gRPCOptions(port=9000, grpc_servicer_functions=[GRPC_SERVICER]))
"""
from __future__ import annotations

import io
import json
import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import Field
from ray import serve

from actors.common.config import Strict, validated
from actors.common.errors import InputError, TooLarge
from actors.validation.config import (
    DatasetName,
    DetectorConfig,
    LocalizerConfig,
    PlantedCase,
    RecommenderConfig,
    Severity,
    ValidationSpec,
)
from actors.validation.data import check_label, load_table
from actors.validation.model_store import FrozenEncoder, new_model_id, save_model
from actors.validation.model_store import predict as predict_rows
from serve.common import ServeArgs, builder, new_app

GRPC_SERVICER = "serve.protos.validation_pb2_grpc.add_ValidationServiceServicer_to_server"


class ValidationServeArgs(ServeArgs):
    """Application arguments (`serve run serve.validation:build_app key=value ...`); replicas, CPUs and
    GPUs per replica come from ServeArgs."""

    max_rows: int = Field(200_000, gt=0)          # most rows per table (by path or inline)
    max_inline_rows: int = Field(20_000, gt=0)    # most rows per inline table
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
def load(table: Table, field: str, args: ValidationServeArgs) -> pd.DataFrame:
    """The table from inline records or a path; 413 over the limits, 422 when empty or unreadable."""
    if sum(x is not None for x in (table.records, table.path, table.csv)) != 1:
        raise InputError(field, "give exactly one of records, csv or path",
                         "{records: [...]}, {csv: '...'} or {path: ...}")
    if table.records is not None:
        if len(table.records) > args.max_inline_rows:
            raise TooLarge(f"{field}.records", f"{len(table.records)} rows inline",
                                f"<= {args.max_inline_rows} (send a path for more)")
        df = pd.DataFrame.from_records(table.records)
    elif table.csv is not None:
        if table.csv.count("\n") > args.max_inline_rows + 1:
            raise TooLarge(f"{field}.csv", f"{table.csv.count(chr(10))} lines inline",
                                f"<= {args.max_inline_rows} rows (send a path for more)")
        try:
            df = pd.read_csv(io.StringIO(table.csv)) if table.csv.strip() else pd.DataFrame()
        except (ValueError, pd.errors.ParserError) as exc:
            raise InputError(f"{field}.csv", f"unreadable CSV: {exc}", "CSV text with a header row") from exc
    else:
        df = load_table(table.path, f"{field}.path")
    if len(df) > args.max_rows:
        raise TooLarge(field, f"{len(df)} rows", f"<= {args.max_rows}")
    if len(df) == 0 or df.shape[1] == 0:
        raise InputError(field, "table is empty", ">= 10 rows and >= 1 column")
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
    with _LIBRARY_LOCK:   # sync endpoints run in a thread pool: seed once, not once per concurrent request
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
    report = req.report
    if report is None:
        cfg = validated(DetectorConfig, {**SEED_DETECTOR, **req.detector}, prefix="detector.")
        report = detect(real, synth, cfg)
    elif not isinstance(report.get("dimensions"), dict):
        raise InputError("report.dimensions", "missing", "a /validation/detect document")
    try:
        fp = fingerprint(report, real, synth)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError("report", f"not a detect document ({exc})", "a /validation/detect document") from exc
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


def run_predict(req: PredictRequest, args: ValidationServeArgs) -> dict:
    rows = load(req.rows, "rows", args)
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
        events = run_cascade(req, args)
        return StreamingResponse((json.dumps(ev) + "\n" for ev in events), media_type="application/x-ndjson")

    @app.post("/validation/predict")
    def get_predictions(req: PredictRequest) -> dict:
        return run_predict(req, args)

    return app


@serve.deployment(name="ValidationServe")
@serve.ingress()
class ValidationIngress:
    """Serve replica: holds the validated args; the FastAPI app is built on the replica."""

    def __init__(self, args: dict | None = None):
        self.args = ValidationServeArgs.model_validate(args or {})

    def __serve_build_asgi_app__(self) -> FastAPI:
        return make_fastapi(self.args)

    # ---- gRPC methods (named after the RPCs of serve/protos/validation.proto) ----
    def DetectCollapse(self, request, grpc_context=None):
        from serve.protos import validation_pb2 as pb

        with _GrpcErrors(grpc_context, pb.DetectReply) as reply:
            doc = run_detect(DetectRequest(real=_table(request.real), synthetic=_table(request.synthetic),
                                           detector=_obj(request.detector_json, "detector_json")), self.args)
            failing = [k for k, d in doc["dimensions"].items() if d.get("flagged")]
            reply.set(pb.DetectReply(collapsed=doc["collapsed"], failing=failing, json=json.dumps(doc)))
        return reply.value

    def LocalizeProblems(self, request, grpc_context=None):
        from serve.protos import validation_pb2 as pb

        with _GrpcErrors(grpc_context, pb.LocalizeReply) as reply:
            doc = run_localize(LocalizeRequest(real=_table(request.real), synthetic=_table(request.synthetic),
                                               label=request.label or None,
                                               localizer=_obj(request.localizer_json, "localizer_json")), self.args)
            reply.set(pb.LocalizeReply(n_flagged=len(doc["flagged_rows"]), json=json.dumps(doc)))
        return reply.value

    def GenerateRecommendations(self, request, grpc_context=None):
        from serve.protos import validation_pb2 as pb

        with _GrpcErrors(grpc_context, pb.RecommendReply) as reply:
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

        with _GrpcErrors(grpc_context, pb.DiversityReply) as reply:
            ref = _table(request.reference) if request.HasField("reference") else None
            doc = run_diversity(DiversityRequest(table=_table(request.table), reference=ref), self.args)
            reply.set(pb.DiversityReply(vendi=doc["vendi"], json=json.dumps(doc)))
        return reply.value

    def PreScreenRisk(self, request, grpc_context=None):
        from serve.protos import validation_pb2 as pb

        with _GrpcErrors(grpc_context, pb.PreScreenReply) as reply:
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

        # a stream ends with the status only when the generator raises (Serve keeps the code set here)
        with _GrpcErrors(grpc_context, pb.CascadeEvent, reraise=True):
            events = run_cascade(CascadeRequest(real=_table(request.real), synthetic=_table(request.synthetic),
                                                label=request.label,
                                                cascade=_obj(request.cascade_json, "cascade_json")), self.args)
        for ev in events:
            yield pb.CascadeEvent(status=ev["status"], rung=ev["rung"], model=ev["model"],
                                  model_id=ev.get("model_id", ""), json=json.dumps(ev))

    def GetPredictions(self, request, grpc_context=None):
        from serve.protos import validation_pb2 as pb

        with _GrpcErrors(grpc_context, pb.PredictReply) as reply:
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


class _GrpcErrors:
    """InputError -> the gRPC status (413: RESOURCE_EXHAUSTED, 404: NOT_FOUND, else INVALID_ARGUMENT)
    with the HTTP JSON detail {field, message, allowed} as the details; the reply stays empty."""

    def __init__(self, grpc_context: Any, reply_type: type, *, reraise: bool = False):
        self.ctx, self.reply, self.reraise = grpc_context, _Reply(reply_type()), reraise

    def __enter__(self) -> _Reply:
        return self.reply

    def __exit__(self, exc_type, exc, tb) -> bool:
        from pydantic import ValidationError

        if exc is None:
            return False
        import grpc

        if isinstance(exc, InputError):
            status = getattr(exc, "status_code", 422)
            code = {413: grpc.StatusCode.RESOURCE_EXHAUSTED, 404: grpc.StatusCode.NOT_FOUND}.get(
                status, grpc.StatusCode.INVALID_ARGUMENT)
            detail = {"field": exc.field, "message": str(exc), "allowed": exc.allowed}
        elif isinstance(exc, ValidationError):
            err = exc.errors()[0]
            code = grpc.StatusCode.INVALID_ARGUMENT
            detail = {"field": ".".join(map(str, err["loc"])), "message": err["msg"], "allowed": None}
        else:
            return False
        if self.ctx is None:
            return False
        self.ctx.set_code(code)
        self.ctx.set_details(json.dumps(detail))
        self.reply.failed = True
        if self.reraise:   # a plain exception: the proxy must unpickle it (InputError's init does not round-trip)
            raise ValueError(json.dumps(detail)) from None
        return True


build_app = builder(ValidationIngress, ValidationServeArgs)


app = build_app({})
