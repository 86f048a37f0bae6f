"""HTTP front end for the sweep engine: simulate one point or a small batch and label its attractor.

    serve run serve.sweep:build_app max_batch=64 backend=auto num_gpus=1
    serve build serve.sweep:build_app -o serve_sweep.yaml

Each replica runs the engine in-process (no actors). The FastAPI app is built by `make_fastapi(args)`,
so tests (and a plain uvicorn) can use it without Serve; the Serve ingress builds the same app on the
replica through `__serve_build_asgi_app__`. The request logic itself is `run_simulate(req, args)`.

A request names a shipped model (`"model": "lorenz"`) or gives one inline (`"model": {"states": [...],
"params": {...}, "initial_state": {...}, "equations": {...}}`), within the app's limits
(`max_model_states`, `max_model_params`, `max_model_definitions`, `max_expression_chars`). Inline
equations are parsed by the sweep's safe parser (actors/sweep/modelspec.py: a whitelist of numbers,
the model's names, + - * / ** ^ and the functions exp, log, sin, cos, tan, tanh, sinh, cosh, sqrt,
Abs, Min, Max, Heaviside, constants pi and E; nothing is eval'd), compiled without sp.simplify and
cached by content; they are never added to the registry, so they cannot shadow a shipped model.

Bounded work: each request runs under the app's `request_timeout_s` (serve.common.Admission) and the
engine checks it every step (504 naming request_timeout_s); a trajectory that cannot be advanced
(non-finite right-hand side or step size) stops at once as a blow-up (`blowup_reason: stalled`).

Errors: an `InputError` (bad model / parameter / state / t_span / save points / equation) is HTTP 422,
a request over a size limit (batch, save points, model size) 413 (`TooLarge`), and a malformed body
422 too, all as `{"detail": {"field": ..., "message": ..., "allowed": ...}}` (serve.common.new_app).
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
from actors.sweep.models import CompiledModel, compile_model, get_model, model_names
from actors.sweep.modelspec import CONSTANTS, FUNCTIONS, ModelRef, ModelSpec, check_expression
from serve.common import AppIngress, ServeArgs, builder, new_app


class SweepServeArgs(ServeArgs):
    """Application arguments (`serve run serve.sweep:build_app key=value ...`); num_replicas, num_gpus and
    num_cpus (per replica) come from ServeArgs."""

    max_batch: int = Field(64, gt=0)          # most points in one request's `batch`
    backend: Backend = "torch"                # auto: triton on a GPU replica
    max_points: int = Field(4000, ge=2)       # most save points (save_points / n_save) per request
    # an inline model (`"model": {...}`): its size limits (413 beyond them)
    max_model_states: int = Field(16, ge=1, le=256)
    max_model_params: int = Field(64, ge=0, le=1024)
    max_model_definitions: int = Field(32, ge=0, le=1024)     # definitions, and fixed-point labels apart
    max_expression_chars: int = Field(2000, ge=1, le=100_000)  # per equation / definition / label


class PointOverrides(Strict):
    """One batch item; its entries override the request's top-level params / initial_state."""

    params: dict[str, float] = Field(default_factory=dict)
    initial_state: dict[str, float] = Field(default_factory=dict)


class SolverOptions(Strict):
    rtol: float = Field(1e-8, gt=1e-14, le=1e-2)
    atol: float = Field(1e-10, gt=1e-16, le=1e-2)
    lyapunov: bool = True


class SimulateRequest(Strict):
    model: ModelRef = "gaslit_af"    # a shipped model's name, or a whole model inline (size-limited)
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


def _limit(field: str, count: int, most: int, what: str) -> None:
    if count > most:
        raise TooLarge(field, f"{count} {what} exceed the limit of {most}", f"at most {most}")


def inline_model(spec: ModelSpec, args: SweepServeArgs) -> CompiledModel:
    """A request's inline model, within the app's size limits, compiled by the safe parser (cached by
    content, never registered). Errors name `model.<field>` (413 over a limit, 422 otherwise)."""
    _limit("model.states", len(spec.states), args.max_model_states, "states")
    _limit("model.params", len(spec.params), args.max_model_params, "parameters")
    _limit("model.definitions", len(spec.definitions), args.max_model_definitions, "definitions")
    _limit("model.fixed_point_labels", len(spec.fixed_point_labels), args.max_model_definitions, "labels")
    names = set(spec.states) | set(spec.params) | set(spec.definitions)
    texts = [(f"model.definitions.{k}", v, False) for k, v in spec.definitions.items()]
    texts += [(f"model.equations.{k}", v, False) for k, v in spec.equations.items()]
    texts += [(f"model.fixed_point_labels.{lab.name}", lab.when, True) for lab in spec.fixed_point_labels]
    for field, text, relational in texts:
        if len(text) > args.max_expression_chars:
            raise TooLarge(field, f"the expression has {len(text)} characters",
                           f"at most {args.max_expression_chars}")
        check_expression(text, field, names, relational=relational, max_chars=args.max_expression_chars)
    return compile_model(spec, prefix="model.", simplify=False)


def request_model(req: SimulateRequest, args: SweepServeArgs) -> CompiledModel:
    """The request's model: a shipped one by name, or its inline model (see inline_model)."""
    return inline_model(req.model, args) if isinstance(req.model, ModelSpec) else get_model(req.model)


def run_simulate(req: SimulateRequest | dict, args: SweepServeArgs | dict | None = None) -> dict:
    """Integrate the request's point(s) and return the JSON-ready response (non-finite -> None)."""
    req = req if isinstance(req, SimulateRequest) else SimulateRequest.model_validate(req)
    args = args if isinstance(args, SweepServeArgs) else SweepServeArgs.model_validate(args or {})
    model = request_model(req, args)
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
            # escaped: past the blow-up bound; stalled: the state could not be advanced (a non-finite
            # right-hand side or step size there, or a step size collapsed below the floor)
            "blowup_reason": (None if not r.blowup[i] else
                              "stalled" if r.stalled is not None and r.stalled[i] else "escaped"),
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
            "limits": {"max_batch": args.max_batch, "max_points": args.max_points,
                       "request_timeout_s": args.request_timeout_s,
                       "inline_model": {"max_states": args.max_model_states, "max_params": args.max_model_params,
                                        "max_definitions": args.max_model_definitions,
                                        "max_expression_chars": args.max_expression_chars,
                                        "functions": list(FUNCTIONS), "constants": list(CONSTANTS)}}}


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
class SweepIngress(AppIngress):
    """Serve replica: holds the validated args; the FastAPI app is built on the replica."""

    args_cls = SweepServeArgs
    make_fastapi = staticmethod(make_fastapi)

    def warm_up(self) -> None:
        get_model("gaslit_af")  # compile the default model once, before the first request


build_app = builder(SweepIngress, SweepServeArgs)

# `serve build` wants an Application, not a builder: `serve build serve.sweep:app` writes a config
# (default args) whose import_path may then be switched to serve.sweep:build_app with an `args:` block.
app = build_app({})
