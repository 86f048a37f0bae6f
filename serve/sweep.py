"""HTTP front end for the sweep engine: simulate one point or a small batch and label its attractor.

    serve run serve.sweep:build_app max_batch=64 backend=auto num_gpus=1
    serve build serve.sweep:build_app -o serve_sweep.yaml

Each replica runs the engine in-process (no actors). The FastAPI app is built by `make_fastapi(args)`,
so tests (and a plain uvicorn) can use it without Serve; the Serve ingress builds the same app on the
replica through `__serve_build_asgi_app__`. The request logic itself is `run_simulate(req, args)`.

Errors: an `InputError` (bad model / parameter / state / t_span / save points) is HTTP 422 and a
request over a size limit (batch, save points) is 413, both as
`{"detail": {"field": ..., "message": ..., "allowed": ...}}`; schema errors are FastAPI's own 422.
"""
from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray import serve
from ray.serve import Application

from actors.common.errors import InputError
from actors.sweep.config import SolverConfig
from actors.sweep.engine import simulate
from actors.sweep.models import get_model, model_names
from serve.errors import add_input_error_handler


class TooLargeError(InputError):
    """A request over one of the deployment's size limits (HTTP 413)."""

    status_code = 413


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SweepServeArgs(_Strict):
    """Application arguments (`serve run serve.sweep:build_app key=value ...`)."""

    max_batch: int = Field(64, gt=0)          # most points in one request's `batch`
    num_replicas: int = Field(1, gt=0)
    num_gpus: float = Field(0, ge=0)          # per replica; 0 -> the engine runs on CPU
    backend: Literal["torch", "scipy", "triton", "auto"] = "torch"  # auto: triton on a GPU replica
    max_points: int = Field(4000, ge=2)       # most save points (save_points / n_save) per request


class PointOverrides(_Strict):
    """One batch item; its entries override the request's top-level params / initial_state."""

    params: dict[str, float] = Field(default_factory=dict)
    initial_state: dict[str, float] = Field(default_factory=dict)


class SolverOptions(_Strict):
    rtol: float = Field(1e-8, gt=1e-14, le=1e-2)
    atol: float = Field(1e-10, gt=1e-16, le=1e-2)
    lyapunov: bool = True


class SimulateRequest(_Strict):
    model: str = "gaslit_af"
    params: dict[str, float] = Field(default_factory=dict)
    initial_state: dict[str, float] = Field(default_factory=dict)
    t_span: tuple[float, float] | None = None          # None -> the model's own time_span
    save_points: list[float] | None = None             # explicit save times inside t_span
    n_save: int | None = Field(None, ge=2)             # or this many evenly spaced over t_span
    batch: list[PointOverrides] | None = Field(None, min_length=1)
    solver: SolverOptions = Field(default_factory=SolverOptions)


# ---- request logic (no Ray, no HTTP) ---------------------------------------------------------------
def _num(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _named(names: list[str], values: np.ndarray) -> dict[str, float | None]:
    return {n: _num(v) for n, v in zip(names, values, strict=True)}


def _t_span(req: SimulateRequest, default: tuple[float, float]) -> tuple[float, float]:
    if req.t_span is None:
        return float(default[0]), float(default[1])
    t0, t1 = req.t_span
    if not (math.isfinite(t0) and math.isfinite(t1)) or t1 <= t0:
        raise InputError("t_span", f"must be finite and increasing, got [{t0}, {t1}]", "[t0, t1] with t0 < t1")
    return t0, t1


def _save_times(req: SimulateRequest, t0: float, t1: float, max_points: int) -> np.ndarray | None:
    if req.save_points is not None and req.n_save is not None:
        raise InputError("save_points", "give either save_points or n_save, not both")
    if req.n_save is not None:
        if req.n_save > max_points:
            raise TooLargeError("n_save", f"{req.n_save} save points exceed the limit", f"2..{max_points}")
        return np.linspace(t0, t1, req.n_save)
    if req.save_points is None:
        return None
    pts = np.asarray(req.save_points, dtype=np.float64)
    if pts.size > max_points:
        raise TooLargeError("save_points", f"{pts.size} save points exceed the limit", f"at most {max_points}")
    if pts.size == 0 or not np.isfinite(pts).all() or np.any(np.diff(pts) <= 0) or pts[0] < t0 or pts[-1] > t1:
        raise InputError("save_points", "must be non-empty, finite, strictly increasing and inside t_span",
                         f"[{t0}, {t1}]")
    return pts


def solver_config(req: SimulateRequest, args: SweepServeArgs, t_span: tuple[float, float]) -> SolverConfig:
    try:
        return SolverConfig(backend=args.backend, rtol=req.solver.rtol, atol=req.solver.atol,
                            lyapunov=req.solver.lyapunov, t_span=t_span,
                            device="auto" if args.num_gpus > 0 else "cpu",
                            compile="off")  # small interactive batches: no compile latency
    except ValidationError as exc:  # the request schema already bounds these; kept as a safety net
        raise InputError("solver", str(exc)) from exc


def run_simulate(req: SimulateRequest | dict, args: SweepServeArgs | dict | None = None) -> dict:
    """Integrate the request's point(s) and return the JSON-ready response (non-finite -> None)."""
    req = req if isinstance(req, SimulateRequest) else SimulateRequest.model_validate(req)
    args = args if isinstance(args, SweepServeArgs) else SweepServeArgs.model_validate(args or {})
    model = get_model(req.model)
    items = req.batch if req.batch is not None else [PointOverrides()]
    if len(items) > args.max_batch:
        raise TooLargeError("batch", f"{len(items)} points exceed the limit of {args.max_batch}",
                            f"at most {args.max_batch} items")
    t0, t1 = _t_span(req, model.spec.time_span)
    t_eval = _save_times(req, t0, t1, args.max_points)
    # top-level overrides first, so a bad name there is reported as params.<name>, not batch[i]...
    model.param_vector(req.params, "params")
    model.state_vector(req.initial_state, "initial_state")
    rows_p, rows_u, used = [], [], []
    for i, item in enumerate(items):
        where = f"batch[{i}]." if req.batch is not None else ""
        p = {**req.params, **item.params}
        s = {**req.initial_state, **item.initial_state}
        rows_p.append(model.param_vector(p, f"{where}params"))
        rows_u.append(model.state_vector(s, f"{where}initial_state"))
        used.append((p, s))
    res = simulate(model, np.stack(rows_p), np.stack(rows_u), solver_config(req, args, (t0, t1)), t_eval=t_eval)
    r, names = res.raw, res.state_names
    trajectories = []
    for i in range(len(items)):
        y = None
        if t_eval is not None and r.ys is not None:
            y = {s: [_num(v) for v in r.ys[i, :, k]] for k, s in enumerate(names)}
        trajectories.append({
            "params": _named(res.param_names, res.params[i]),
            "initial_state": _named(names, res.u0[i]),
            "y": y,
            "final_state": _named(names, r.u_final[i]),
            "t_final": _num(r.t_final[i]),
            "lyapunov_max": _num(r.lyapunov_max[i]),
            "blowup": bool(r.blowup[i]),
            "t_blowup": _num(r.t_blowup[i]),
            "regime": str(res.regime[i]),
            "attractor": str(res.attractor[i]),
            "window_min": _named(names, r.u_min[i]),
            "window_max": _named(names, r.u_max[i]),
            "n_steps": int(r.n_steps[i]),
        })
    return {"model": model.name, "state_names": names, "t_span": [t0, t1], "backend": res.meta["backend"],
            "t": None if t_eval is None else [float(t) for t in t_eval], "trajectories": trajectories}


def health(args: SweepServeArgs | None = None) -> dict:
    args = args or SweepServeArgs()
    return {"status": "ok", "models": model_names(), "backend": args.backend,
            "limits": {"max_batch": args.max_batch, "max_points": args.max_points}}


# ---- HTTP -----------------------------------------------------------------------------------------
def make_fastapi(args: SweepServeArgs | dict | None = None) -> FastAPI:
    """The FastAPI app (routes, error mapping, OpenAPI at /docs) for the given limits and backend."""
    args = args if isinstance(args, SweepServeArgs) else SweepServeArgs.model_validate(args or {})
    app = FastAPI(title="attractor sweep", version="0.1.0",
                  description="Integrate ODE models (GASLIT-AF, Lorenz, ...) and label their attractors.")

    add_input_error_handler(app, InputError)

    @app.get("/healthz")
    def healthz() -> dict:
        return health(args)

    @app.post("/sweep/simulate")
    def post_simulate(req: SimulateRequest) -> dict:  # sync: FastAPI runs it in its threadpool
        return run_simulate(req, args)

    return app


@serve.deployment(name="SweepServe")
@serve.ingress()
class SweepIngress:
    """Serve replica: holds the validated args; the FastAPI app is built on the replica."""

    def __init__(self, args: dict | None = None):
        self.args = SweepServeArgs.model_validate(args or {})
        get_model("gaslit_af")  # compile the default model once, before the first request

    def __serve_build_asgi_app__(self) -> FastAPI:
        return make_fastapi(self.args)


def build_app(args: dict | None = None) -> Application:
    """Application builder for `serve run` / `serve build` (args are SweepServeArgs fields)."""
    cfg = SweepServeArgs.model_validate(args or {})
    return SweepIngress.options(num_replicas=cfg.num_replicas,
                                ray_actor_options={"num_gpus": cfg.num_gpus}).bind(cfg.model_dump())


# `serve build` wants an Application, not a builder: `serve build serve.sweep:app` writes a config
# (default args) whose import_path may then be switched to serve.sweep:build_app with an `args:` block.
app = build_app({})
