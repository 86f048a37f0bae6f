"""HTTP front end for the sweep engine: simulate one point or a small batch and label its attractor.

    serve run serve.sweep:build_app max_batch=64 backend=auto num_gpus=1
    serve build serve.sweep:build_app -o serve_sweep.yaml

Each replica runs the engine in-process (no actors). The FastAPI app is built by `make_fastapi(args)`,
so tests (and a plain uvicorn) can use it without Serve; the Serve ingress builds the same app on the
replica through `__serve_build_asgi_app__`. The request logic itself is `run_simulate(req, args)`.

Errors: an `InputError` (bad model / parameter / state / t_span / save points) is HTTP 422, a request
over a size limit (batch, save points) 413 (`TooLarge`), and a malformed body 422 too, all as
`{"detail": {"field": ..., "message": ..., "allowed": ...}}` (serve.common.new_app).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from fastapi import FastAPI
from pydantic import Field, ValidationError
from ray import serve

from actors.common.config import Strict
from actors.common.errors import InputError, TooLarge, from_validation
from actors.sweep.config import Backend, SolverConfig, make_solver
from actors.sweep.engine import simulate
from actors.sweep.models import get_model, model_names
from serve.common import ServeArgs, builder, new_app


class SweepServeArgs(ServeArgs):
    """Application arguments (`serve run serve.sweep:build_app key=value ...`); num_replicas, num_gpus and
    num_cpus (per replica) come from ServeArgs."""

    max_batch: int = Field(64, gt=0)          # most points in one request's `batch`
    backend: Backend = "torch"                # auto: triton on a GPU replica
    max_points: int = Field(4000, ge=2)       # most save points (save_points / n_save) per request


class PointOverrides(Strict):
    """One batch item; its entries override the request's top-level params / initial_state."""

    params: dict[str, float] = Field(default_factory=dict)
    initial_state: dict[str, float] = Field(default_factory=dict)


class SolverOptions(Strict):
    rtol: float = Field(1e-8, gt=1e-14, le=1e-2)
    atol: float = Field(1e-10, gt=1e-16, le=1e-2)
    lyapunov: bool = True


class SimulateRequest(Strict):
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
            raise TooLarge("n_save", f"{req.n_save} save points exceed the limit", f"2..{max_points}")
        return np.linspace(t0, t1, req.n_save)
    if req.save_points is None:
        return None
    pts = np.asarray(req.save_points, dtype=np.float64)
    if pts.size > max_points:
        raise TooLarge("save_points", f"{pts.size} save points exceed the limit", f"at most {max_points}")
    if pts.size == 0 or not np.isfinite(pts).all() or np.any(np.diff(pts) <= 0) or pts[0] < t0 or pts[-1] > t1:
        raise InputError("save_points", "must be non-empty, finite, strictly increasing and inside t_span",
                         f"[{t0}, {t1}]")
    return pts


def solver_config(req: SimulateRequest, args: SweepServeArgs, t_span: tuple[float, float]) -> SolverConfig:
    """The request's solver settings as the replica's backend block: a GPU replica (num_gpus > 0) lets
    the device default to its GPU; small interactive batches are not worth torch.compile's latency."""
    device = "auto" if args.num_gpus > 0 else "cpu"
    options = {"scipy": {}, "triton": {"device": device}, "torch": {"device": device, "compile": "off"},
               "auto": {"device": device, "compile": "off"}}[args.backend]
    try:
        return make_solver(backend=args.backend, rtol=req.solver.rtol, atol=req.solver.atol,
                           lyapunov=req.solver.lyapunov, t_span=t_span, **options)
    except ValidationError as exc:  # the request schema already bounds these; kept as a safety net
        raise from_validation(exc, "solver.") from None


def run_simulate(req: SimulateRequest | dict, args: SweepServeArgs | dict | None = None) -> dict:
    """Integrate the request's point(s) and return the JSON-ready response (non-finite -> None)."""
    req = req if isinstance(req, SimulateRequest) else SimulateRequest.model_validate(req)
    args = args if isinstance(args, SweepServeArgs) else SweepServeArgs.model_validate(args or {})
    model = get_model(req.model)
    items = req.batch if req.batch is not None else [PointOverrides()]
    if len(items) > args.max_batch:
        raise TooLarge("batch", f"{len(items)} points exceed the limit of {args.max_batch}",
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
    app = new_app("attractor sweep", "Integrate ODE models (GASLIT-AF, Lorenz, ...) and label their attractors.",
                  args=args)

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


build_app = builder(SweepIngress, SweepServeArgs)

# `serve build` wants an Application, not a builder: `serve build serve.sweep:app` writes a config
# (default args) whose import_path may then be switched to serve.sweep:build_app with an `args:` block.
app = build_app({})
