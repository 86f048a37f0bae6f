"""HTTP front end of the validation subsystem: DetectCollapse, LocalizeProblems,
GenerateRecommendations and AnalyzeDiversity as JSON endpoints.

    serve run serve.validation:build_app max_rows=200000
    curl -s localhost:8000/validation/detect -H 'content-type: application/json' \\
         -d '{"real": {"path": "runs/val/real.parquet"}, "synthetic": {"path": "runs/val/synthetic.parquet"}}'

Tables come inline (`{"records": [{col: value, ...}, ...]}`) or by reference (`{"path": ".parquet|.csv"}`
readable by the replica). Errors: bad input (missing columns, type conflicts, empty tables, all-missing
columns, bad settings) is 422 with {"detail": {"field", "message", "allowed"}}; a table over
`max_rows` (or inline over `max_inline_rows`) is 413. The request logic is plain functions
(`run_detect`, ...) and `make_fastapi(args)` builds the app, so tests use it without Serve.
"""
from __future__ import annotations

import math
from typing import Any

import pandas as pd
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application

from actors.validation.config import DetectorConfig, LocalizerConfig, RecommenderConfig, validated
from actors.validation.errors import InputError


class TooLargeError(InputError):
    """A table over the deployment's row limit (HTTP 413)."""

    status_code = 413


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ValidationServeArgs(_Strict):
    """Application arguments (`serve run serve.validation:build_app key=value ...`)."""

    max_rows: int = Field(200_000, gt=0)          # most rows per table (by path or inline)
    max_inline_rows: int = Field(20_000, gt=0)    # most rows per inline table
    num_replicas: int = Field(1, gt=0)
    num_cpus: float = Field(1, gt=0)
    max_flagged_rows: int = Field(1_000, gt=0)


class Table(_Strict):
    records: list[dict[str, Any]] | None = None
    path: str | None = None


class DetectRequest(_Strict):
    real: Table
    synthetic: Table
    detector: dict[str, Any] = Field(default_factory=dict)    # DetectorConfig fields


class LocalizeRequest(_Strict):
    real: Table
    synthetic: Table
    label: str | None = None
    localizer: dict[str, Any] = Field(default_factory=dict)   # LocalizerConfig fields


class RecommendRequest(_Strict):
    real: Table
    synthetic: Table
    label: str | None = None
    detector: dict[str, Any] = Field(default_factory=dict)
    localizer: dict[str, Any] = Field(default_factory=dict)
    recommender: dict[str, Any] = Field(default_factory=dict)


class DiversityRequest(_Strict):
    table: Table
    reference: Table | None = None


# ---- request logic (no Ray, no HTTP) ---------------------------------------------------------------
def load(table: Table, field: str, args: ValidationServeArgs) -> pd.DataFrame:
    """The table from inline records or a path; 413 over the limits, 422 when empty or unreadable."""
    if (table.records is None) == (table.path is None):
        raise InputError(field, "give exactly one of records or path", "{records: [...]} or {path: ...}")
    if table.records is not None:
        if len(table.records) > args.max_inline_rows:
            raise TooLargeError(f"{field}.records", f"{len(table.records)} rows inline",
                                f"<= {args.max_inline_rows} (send a path for more)")
        df = pd.DataFrame.from_records(table.records)
    else:
        from jobs.validate import load_table

        df = load_table(table.path, f"{field}.path")
    if len(df) > args.max_rows:
        raise TooLargeError(field, f"{len(df)} rows", f"<= {args.max_rows}")
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
    _check_label(req.label, real, synth)
    cfg = validated(LocalizerConfig, req.localizer, prefix="localizer.")
    loc = localize(real, synth, cfg, label=req.label)
    return _clean({"flagged_rows": loc.to_json(args.max_flagged_rows),
                   "counts": {k: int(len(v)) for k, v in loc.flagged.items()}})


def run_recommend(req: RecommendRequest, args: ValidationServeArgs) -> dict:
    from actors.validation.detector import detect
    from actors.validation.localize import localize
    from actors.validation.recommend import recommend

    real, synth = load(req.real, "real", args), load(req.synthetic, "synthetic", args)
    _check_label(req.label, real, synth)
    det = validated(DetectorConfig, req.detector, prefix="detector.")
    loc_cfg = validated(LocalizerConfig, req.localizer, prefix="localizer.")
    rec_cfg = validated(RecommenderConfig, req.recommender, prefix="recommender.")
    rep = detect(real, synth, det)
    loc = localize(real, synth, loc_cfg, label=req.label, categorical=det.categorical)
    recs = recommend(real, synth, rep, loc, detector=det, config=rec_cfg, label=req.label)
    return _clean({"collapsed": rep.collapsed, "failing": rep.flagged(),
                   "recommendations": [r.to_json() for r in recs]})


def run_diversity(req: DiversityRequest, args: ValidationServeArgs) -> dict:
    from actors.validation.diversity import analyze

    table = load(req.table, "table", args)
    ref = load(req.reference, "reference", args) if req.reference is not None else None
    return _clean(analyze(table, ref))


def _check_label(label: str | None, real: pd.DataFrame, synth: pd.DataFrame) -> None:
    if label is not None and (label not in real.columns or label not in synth.columns):
        raise InputError("label", f"{label!r} is not a column of both tables", ", ".join(map(str, real.columns)))


# ---- HTTP -----------------------------------------------------------------------------------------
def make_fastapi(args: ValidationServeArgs | dict | None = None) -> FastAPI:
    """The FastAPI app (routes, error mapping, OpenAPI at /docs) for the given limits."""
    args = args if isinstance(args, ValidationServeArgs) else ValidationServeArgs.model_validate(args or {})
    app = FastAPI(title="attractor validation", version="0.1.0",
                  description="Calibrated collapse detection, row localization and fixes for tabular data.")

    @app.exception_handler(InputError)
    async def _input_error(_: Request, exc: InputError) -> JSONResponse:
        return JSONResponse(status_code=getattr(exc, "status_code", 422),
                            content={"detail": {"field": exc.field, "message": str(exc), "allowed": exc.allowed}})

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

    return app


@serve.deployment(name="ValidationServe")
@serve.ingress()
class ValidationIngress:
    """Serve replica: holds the validated args; the FastAPI app is built on the replica."""

    def __init__(self, args: dict | None = None):
        self.args = ValidationServeArgs.model_validate(args or {})

    def __serve_build_asgi_app__(self) -> FastAPI:
        return make_fastapi(self.args)


def build_app(args: dict | None = None) -> Application:
    """Application builder for `serve run` / `serve build` (args are ValidationServeArgs fields)."""
    cfg = ValidationServeArgs.model_validate(args or {})
    return ValidationIngress.options(num_replicas=cfg.num_replicas,
                                     ray_actor_options={"num_cpus": cfg.num_cpus}).bind(cfg.model_dump())


app = build_app({})
