"""HTTP front end for the transfer-entropy engine: one TE estimate, TE networks, causal paths.

    serve run serve.te:build_app max_samples=100000 inline_max_vars=6 pool_workers=2
    serve build serve.te:app -o serve_te.yaml

Routes (OpenAPI at /docs):
    POST /te                 TE(source -> target) in nats, p-value when surrogates > 0, n_obs; conditional TE
                             (`conditionals`), Ragwitz auto-embedding (`embedding`), local values (`local`)
    POST /mi                 KSG mutual information I(X; Y) of [T] or [T, d] samples (algorithm 1 or 2, Theiler)
    POST /cmi                KSG conditional mutual information I(X; Y | Z)
    POST /te/network         small N: the network inline; large N (or background=true): 202 + a job id
    GET  /te/network/{id}    a background job's status, and its network when done
    GET  /causal/path        ?from=A&to=B: directed paths in the latest network, by total TE

The request logic (`run_te`, `TEState.network`, `TEState.paths`) needs no HTTP and no Ray; the FastAPI
app is built by `make_fastapi(args)` so tests can drive it in-process, and the Serve ingress builds the
same app on its replica. Background networks run in a thread of the replica through the pool entry the
job uses too (actors.te.pool.compute_network: bivariate on TEEstimator actors, multivariate one Ray
task per target) when Ray is up, otherwise in-process. Jobs and
the latest network live in the replica's memory, so the app runs one replica by default.

Errors: an `InputError` (series too short for the embedding, NaN/inf, constant series, mismatched
lengths, k >= number of points) is HTTP 422, a request over a size limit 413, an unknown job /
variable or a missing network or path 404, a request past its `request_timeout_s` 504, all as
{"detail": {"field", "message", "allowed"}} with the request's own field names; schema errors
(k out of range, unknown keys, `true` or "4" for a number, an element 1e309 or NaN: `source.3`)
are 422 with the same body (serve.common.new_app). Any finite value is valid data: the engine z-scores
each embedded column on a power-of-two rescaled copy, so 1e308-valued series give the TE of the same
series at unit scale.

Bounded work: /te and inline networks run under the request's budget (`request_timeout_s`, checked
by the engine's loops; a disconnected client cancels it); a background network runs under its own
`network_timeout_s` (default 3600 s), on the pool too, and past it the job ends `failed` with the
BudgetExceeded error naming network_timeout_s.
"""
from __future__ import annotations

import itertools
import logging
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Literal

import networkx as nx
import numpy as np
from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from ray import serve

from actors.common.budget import Budget, scope
from actors.common.config import Auto, Strict, WorkerConfig
from actors.common.errors import InputError, NotFound, TooLarge
from actors.te.config import Algorithm, Correction, Mode, NetworkConfig, SurrogateMethod, TENetworkSpec
from actors.te.embedding import as_series
from actors.te.engine import conditional_mutual_information, te_significance, transfer_entropy
from actors.te.network import TENetwork, network_warnings, te_network
from serve.common import AppIngress, ServeArgs, builder, new_app

log = logging.getLogger("attractor.serve")


class TEServeArgs(ServeArgs):
    """Application arguments (`serve run serve.te:build_app key=value ...`); num_replicas, num_gpus and
    num_cpus (per replica) come from ServeArgs."""

    max_samples: int = Field(100_000, ge=10)      # most samples per series
    max_surrogates: int = Field(1_000, ge=1)      # most surrogates per request
    max_vars: int = Field(1_000, ge=2)            # most variables in one /te/network request
    max_conditionals: int = Field(8, ge=1)        # most conditional series in one /te request
    max_dims: int = Field(32, ge=1)               # most columns of one /mi or /cmi variable
    inline_max_vars: int = Field(6, ge=2)         # networks with more variables run as background jobs
    max_jobs: int = Field(32, ge=1)               # finished jobs kept in memory (oldest dropped first)
    path_cutoff: int = Field(6, ge=1, le=20)      # longest path (edges) /causal/path may ask for
    network_timeout_s: float = Field(3600.0, gt=0, le=7 * 86_400)   # compute budget of one background network
    # the background pool's WorkerConfig (same meaning as everywhere): TEEstimators, GPUs and CPUs each
    pool_workers: int | Auto = Field(1, union_mode="left_to_right")
    pool_num_gpus: float | Auto = Field(0.0, union_mode="left_to_right")   # "auto" -> one per GPU when there are GPUs
    pool_num_cpus: float = Field(1.0, gt=0)

    def pool(self) -> WorkerConfig:
        """The WorkerConfig of the TEEstimators that run background networks."""
        return WorkerConfig(num_workers=self.pool_workers, num_gpus=self.pool_num_gpus, num_cpus=self.pool_num_cpus)


class _Estimator(Strict):
    """Settings shared by /te and /te/network (JIDT names in brackets)."""

    k: int = Field(4, ge=1, le=1_000)               # nearest neighbours in the joint space
    history: int = Field(1, ge=1, le=256)           # destination history length (k_hist)
    source_history: int = Field(1, ge=1, le=256)    # source history length (l_hist)
    algorithm: Algorithm = 1                        # KSG algorithm
    noise: float = Field(0.0, ge=0, le=1)           # Gaussian noise in standard deviations (JIDT: 1e-8)
    normalise: bool = True                          # z-score each embedded column
    theiler: int = Field(0, ge=0, le=100_000)       # exclude neighbours with |i - j| <= theiler
    surrogate_method: SurrogateMethod = "permutation"
    seed: int = Field(0, ge=0)                      # seeds the noise and the surrogates

    def params(self, **extra: Any) -> dict:
        return {"k": self.k, "k_hist": self.history, "l_hist": self.source_history, "algorithm": self.algorithm,
                "noise": self.noise, "normalise": self.normalise, "theiler": self.theiler, "seed": self.seed,
                **extra}


class EmbeddingRequest(Strict):
    """Auto-embedding (JIDT AUTO_EMBED_METHOD): the Ragwitz criterion over histories 1..k_max and delays
    1..tau_max, for the target (JIDT RAGWITZ_DEST_ONLY) or, with source = true, each series on its own
    (RAGWITZ). The chosen values replace history / tau (and source_history / source_tau)."""

    method: Literal["ragwitz"] = "ragwitz"
    k_max: int = Field(5, ge=1, le=32)              # longest history searched
    tau_max: int = Field(3, ge=1, le=32)            # longest embedding delay searched
    source: bool = Field(False, strict=True)        # also embed the source by its own search
    neighbours: int | None = Field(None, ge=1, le=1_000)   # K of the forecast; null -> k

    def config(self) -> dict:
        return {"k_range": (1, self.k_max), "tau_range": (1, self.tau_max), "source": self.source,
                "n_neighbours": self.neighbours}


class TERequest(_Estimator):
    source: list[float]
    target: list[float]
    delay: int = Field(1, ge=1, le=10_000)          # source-destination delay u: source[t+1-u] -> target[t+1]
    tau: int = Field(1, ge=1, le=10_000)            # destination embedding delay (k_tau)
    source_tau: int = Field(1, ge=1, le=10_000)     # source embedding delay (l_tau)
    conditionals: list[list[float]] = Field(default_factory=list)   # other series conditioned on: conditional TE
    conditional_history: int = Field(1, ge=1, le=256)   # history length of every conditional series
    conditional_tau: int = Field(1, ge=1, le=10_000)    # its embedding delay
    conditional_delay: int = Field(1, ge=1, le=10_000)  # its delay to the target (as `delay` for the source)
    embedding: EmbeddingRequest | None = None       # auto-embedding; null -> history / tau as given
    surrogates: int = Field(0, ge=0)                # 0 -> no significance test, p_value null
    local: bool = Field(False, strict=True)         # also return the local (pointwise) TE values

    def te_params(self) -> dict:
        return self.params(delay=self.delay, k_tau=self.tau, l_tau=self.source_tau, cond_hist=self.conditional_history,
                           cond_tau=self.conditional_tau, cond_delay=self.conditional_delay)


class TEResponse(BaseModel):
    te: float                     # nats
    p_value: float | None         # (1 + #{surrogate >= te}) / (1 + surrogates); null when surrogates = 0
    n_obs: int                    # embedded observations the estimate averages over
    delay: int
    units: str = "nats"
    conditionals: int = 0         # conditional series the TE is conditioned on
    embedding: dict | None = None   # the auto-embedding chosen: k_hist, k_tau, l_hist, l_tau (JIDT names)
    local: list[float] | None = None  # local TE per observation (local = true); te is their mean
    times: list[int] | None = None    # index of the target sample each local value predicts


class _KSGRequest(Strict):
    """Settings of /mi and /cmi. A variable is a list of series (its columns), each of T samples:
    [[x_1, ..., x_T]] for a univariate one, [[a_1, ..., a_T], [b_1, ..., b_T]] for two columns."""

    x: list[list[float]]
    y: list[list[float]]
    k: int = Field(4, ge=1, le=1_000)               # nearest neighbours in the joint space
    algorithm: Algorithm = 1                        # KSG algorithm (JIDT ...Kraskov1 / ...Kraskov2)
    noise: float = Field(0.0, ge=0, le=1)           # Gaussian noise in standard deviations (JIDT: 1e-8)
    normalise: bool = True                          # z-score each column
    theiler: int = Field(0, ge=0, le=100_000)       # exclude neighbours with |i - j| <= theiler
    seed: int = Field(0, ge=0)                      # seeds the noise
    local: bool = Field(False, strict=True)         # also return the local (pointwise) values

    def params(self) -> dict:
        return {"k": self.k, "algorithm": self.algorithm, "noise": self.noise, "normalise": self.normalise,
                "theiler": self.theiler, "seed": self.seed}


class MIRequest(_KSGRequest):
    pass


class CMIRequest(_KSGRequest):
    z: list[list[float]]                            # the conditioning variable, as x and y


class MIResponse(BaseModel):
    value: float                  # nats
    n_obs: int
    units: str = "nats"
    local: list[float] | None = None


class NetworkRequest(_Estimator):
    data: dict[str, list[float]]                    # variable name -> series; every series the same length
    lags: tuple[int, int] | None = None             # inclusive delay range searched per pair; None -> 1
    surrogates: int = Field(19, ge=1)
    alpha: float = Field(0.05, gt=0, lt=1)
    correction: Correction = "max"                  # bivariate mode only
    mode: Mode = "bivariate"
    background: bool | None = None                  # None -> background when N > inline_max_vars


# ---- request logic (no Ray, no HTTP) ---------------------------------------------------------------
_FIELD_NAMES = {"k_hist": "history", "l_hist": "source_history", "significance.n_surrogates": "surrogates",
                "significance.min_shift": "surrogates", "k_tau": "tau", "l_tau": "source_tau",
                "cond_hist": "conditional_history", "cond_tau": "conditional_tau", "cond_delay": "conditional_delay",
                "embedding.k_range": "embedding.k_max", "embedding.tau_range": "embedding.tau_max",
                "embedding.n_neighbours": "embedding.neighbours"}


_COLUMN = re.compile(r"data\[:, (\d+)\]")
_CONDITIONAL = re.compile(r"conditionals\[(\d+)\]")


def _renamed(exc: InputError, prefix: str = "", names: list[str] | None = None) -> InputError:
    """The engine's error with the request's field name (k_hist -> history, data[:, 2] -> data.<name>, ...)."""
    field = _FIELD_NAMES.get(exc.field, exc.field)
    cond = _CONDITIONAL.fullmatch(field)
    if cond is not None:
        field = f"conditionals.{cond.group(1)}"
    column = _COLUMN.fullmatch(field)
    if names is not None and column is not None and int(column.group(1)) < len(names):
        field = f"data.{names[int(column.group(1))]}"
    elif prefix and field in ("source", "target"):  # network pairs: the engine's names for the columns
        field = prefix
    if field == exc.field:
        return exc
    return InputError(field, exc.message, exc.allowed)


def _error_body(exc: InputError) -> dict:
    """{field, message, allowed} of an error, rebuilt so an error that crossed Ray prints cleanly."""
    return InputError(exc.field, exc.message, exc.allowed).to_dict()


def _check_size(name: str, n: int, limit: int, what: str) -> None:
    if n > limit:
        raise TooLarge(name, f"{n} {what} exceed the limit of {limit}", f"at most {limit}")


def run_te(req: TERequest | dict, args: TEServeArgs | dict | None = None) -> dict:
    """TE(source -> target) for one request: the estimate, its p-value (surrogates > 0) and n_obs."""
    req = req if isinstance(req, TERequest) else TERequest.model_validate(req)
    args = args if isinstance(args, TEServeArgs) else TEServeArgs.model_validate(args or {})
    _check_size("source", len(req.source), args.max_samples, "samples")
    _check_size("target", len(req.target), args.max_samples, "samples")
    _check_size("surrogates", req.surrogates, args.max_surrogates, "surrogates")
    _check_size("conditionals", len(req.conditionals), args.max_conditionals, "conditional series")
    for i, c in enumerate(req.conditionals):
        _check_size(f"conditionals.{i}", len(c), args.max_samples, "samples")
    params = req.te_params()
    embedding = req.embedding.config() if req.embedding is not None else None
    local = times = None
    try:
        if req.surrogates == 0 or req.local:
            res = transfer_entropy(req.source, req.target, conditionals=req.conditionals, params=params,
                                   embedding=embedding)
            te, p, n_obs, emb = res.te, None, res.n_obs, res.embedding
            if req.local:
                local, times = res.local.tolist(), res.times.tolist()
        if req.surrogates > 0:
            sig = {"n_surrogates": req.surrogates, "method": req.surrogate_method, "seed": req.seed}
            sres = te_significance(req.source, req.target, conditionals=req.conditionals, params=params,
                                   significance=sig, embedding=embedding)
            te, p, n_obs, emb = sres.te, sres.p_value, sres.n_obs, sres.embedding
    except InputError as exc:
        raise _renamed(exc) from None
    return TEResponse(te=te, p_value=p, n_obs=n_obs, delay=req.delay, conditionals=len(req.conditionals),
                      embedding=emb, local=local, times=times).model_dump()


def _variable(columns: list[list[float]], name: str, args: TEServeArgs) -> np.ndarray:
    """[T, d] samples of one /mi or /cmi variable from its columns; errors name `name` or `name.<i>`."""
    if not columns:
        raise InputError(name, "has no columns", "a list of 1 or more series")
    _check_size(name, len(columns), args.max_dims, "columns")
    for i, col in enumerate(columns):
        _check_size(f"{name}.{i}", len(col), args.max_samples, "samples")
        if len(col) != len(columns[0]):
            raise InputError(f"{name}.{i}", f"has length {len(col)} but {name}.0 has length {len(columns[0])}",
                             f"exactly {len(columns[0])} samples (every column of {name} the same length)")
    return np.asarray(columns, dtype=np.float64).T


def run_cmi(req: CMIRequest | MIRequest | dict, args: TEServeArgs | dict | None = None) -> dict:
    """KSG I(x; y) (an MIRequest) or I(x; y | z) (a CMIRequest) in nats, with local values on request."""
    if isinstance(req, dict):
        req = CMIRequest.model_validate(req) if "z" in req else MIRequest.model_validate(req)
    args = args if isinstance(args, TEServeArgs) else TEServeArgs.model_validate(args or {})
    x, y = _variable(req.x, "x", args), _variable(req.y, "y", args)
    z = _variable(req.z, "z", args) if isinstance(req, CMIRequest) else None
    res = conditional_mutual_information(x, y, z, params=req.params())
    return MIResponse(value=res.value, n_obs=int(res.local.size),
                      local=res.local.tolist() if req.local else None).model_dump()


def network_config(req: NetworkRequest) -> NetworkConfig:
    """The engine's NetworkConfig for a /te/network request."""
    try:
        return NetworkConfig.model_validate({
            "params": req.params(), "lags": req.lags, "correction": req.correction, "mode": req.mode,
            "significance": {"n_surrogates": req.surrogates, "method": req.surrogate_method, "seed": req.seed,
                             "alpha": req.alpha}})
    except ValueError:  # the only check the request schema leaves to NetworkConfig: the lags range
        raise InputError("lags", f"{list(req.lags or [])} is not an inclusive delay range",
                         "[lo, hi] with 1 <= lo <= hi <= 10000") from None


def network_matrix(req: NetworkRequest, args: TEServeArgs) -> tuple[np.ndarray, list[str]]:
    """[T, N] data and names, every column checked on its own so errors name data.<variable>."""
    names = list(req.data)
    if len(names) < 2:
        raise InputError("data", f"has {len(names)} variable(s)", "at least 2 variables")
    _check_size("data", len(names), args.max_vars, "variables")
    length = len(req.data[names[0]])
    for name in names:
        _check_size(f"data.{name}", len(req.data[name]), args.max_samples, "samples")
    cols = [as_series(req.data[names[0]], f"data.{names[0]}")]
    cols += [as_series(req.data[n], f"data.{n}", length=length) for n in names[1:]]
    return np.column_stack(cols), names


def edge_list(graph: nx.DiGraph) -> list[dict]:
    """Edges as JSON rows, strongest first."""
    rows = [{"source": s, "target": t, "te": float(d["te"]), "p_value": float(d["p_value"]), "lag": int(d["lag"])}
            for s, t, d in graph.edges(data=True)]
    return sorted(rows, key=lambda r: -r["te"])


def network_body(net_id: str, network: TENetwork, mode: str, seconds: float) -> dict:
    g = network.graph
    n_obs = int(network.table["n_obs"].min()) if len(network.table) else None
    return {"id": net_id, "status": "done", "mode": mode, "nodes": list(g.nodes), "edges": edge_list(g),
            "n_edges": g.number_of_edges(), "n_obs": n_obs, "alpha": g.graph.get("alpha"),
            "correction": g.graph.get("correction"), "seconds": round(seconds, 3)}


Runner = Callable[[np.ndarray, list[str], NetworkConfig], tuple[TENetwork, dict]]


def local_runner(data: np.ndarray, names: list[str], cfg: NetworkConfig) -> tuple[TENetwork, dict]:
    """The network computed in this process, and where it ran."""
    return te_network(data, names, cfg), {"engine": "local"}


def pool_runner(args: TEServeArgs) -> Runner:
    """With Ray up (a Serve replica): the network through actors.te.pool.compute_network (bivariate on the
    TEEstimator pool, multivariate as one Ray task per target); otherwise local_runner. Either way the
    network equals the in-process one."""
    def run(data: np.ndarray, names: list[str], cfg: NetworkConfig) -> tuple[TENetwork, dict]:
        import ray

        if not ray.is_initialized():
            return local_runner(data, names, cfg)
        from actors.te.pool import compute_network

        spec = TENetworkSpec(name="serve", network=cfg, workers=args.pool())
        network, stats = compute_network(data, names, spec, None, progress=False)
        if cfg.mode == "multivariate":
            return network, {"engine": stats["engine"]}
        return network, {"engine": "pool", "workers": stats["workers"], "n_tasks": stats["n_tasks"]}

    return run


class TEState:
    """Background jobs and the latest finished network of one replica (thread-safe)."""

    def __init__(self, args: TEServeArgs, runner: Runner | None = None):
        self.args = args
        self.runner = runner or pool_runner(args)
        self.jobs: OrderedDict[str, dict] = OrderedDict()
        self.latest: tuple[str, nx.DiGraph] | None = None
        self.lock = threading.Lock()

    def network(self, req: NetworkRequest) -> tuple[int, dict]:
        """(HTTP status, body): 200 and the network inline, or 202 and a job id for a background run."""
        data, names = network_matrix(req, self.args)
        _check_size("surrogates", req.surrogates, self.args.max_surrogates, "surrogates")
        cfg = network_config(req)
        net_id = uuid.uuid4().hex[:12]
        background = req.background if req.background is not None else len(names) > self.args.inline_max_vars
        if not background:
            t0 = time.perf_counter()
            try:
                network, info = local_runner(data, names, cfg)
            except InputError as exc:
                raise _renamed(exc, "data", names) from None
            body = network_body(net_id, network, cfg.mode, time.perf_counter() - t0) | info | {
                "warnings": network_warnings(cfg, len(names))}
            with self.lock:  # GET /te/network/{id} serves inline results too
                self.jobs[net_id] = {**body, "n_vars": len(names), "n_samples": len(data), "submitted": time.time()}
                self._trim()
            self._finish(net_id, body, network.graph)
            return 200, body
        job = {"id": net_id, "status": "running", "mode": cfg.mode, "n_vars": len(names), "n_samples": len(data),
               "submitted": time.time()}
        with self.lock:
            self.jobs[net_id] = job
            self._trim()
        threading.Thread(target=self._background, args=(net_id, data, names, cfg), daemon=True,
                         name=f"te-network-{net_id}").start()
        return 202, {"id": net_id, "status": "running", "href": f"/te/network/{net_id}"}

    def _background(self, net_id: str, data: np.ndarray, names: list[str], cfg: NetworkConfig) -> None:
        """Compute a network in this thread under its own budget (network_timeout_s; the request's
        budget ended with the 202), recording the result or the error in the job."""
        t0 = time.perf_counter()
        try:
            with scope(Budget(self.args.network_timeout_s, setting="network_timeout_s")):
                network, info = self.runner(data, names, cfg)
        except InputError as exc:   # BudgetExceeded included: the job failed, its message says why
            with self.lock:
                self.jobs[net_id].update(status="failed", error=_error_body(_renamed(exc, "data", names)),
                                         seconds=round(time.perf_counter() - t0, 3))
            return
        except Exception:  # reported through GET as the job id, the traceback goes to the log
            log.exception("internal error in background network %s", net_id)
            with self.lock:
                self.jobs[net_id].update(status="failed", error={
                    "field": None, "message": f"internal error (job id {net_id}; details are in the server log)",
                    "allowed": None})
            return
        body = network_body(net_id, network, cfg.mode, time.perf_counter() - t0) | info | {
            "warnings": network_warnings(cfg, len(names))}
        self._finish(net_id, body, network.graph)

    def _finish(self, net_id: str, body: dict, graph: nx.DiGraph) -> None:
        with self.lock:
            if net_id in self.jobs:
                self.jobs[net_id].update(body)
            self.latest = (net_id, graph)

    def _trim(self) -> None:
        done = [k for k, j in self.jobs.items() if j["status"] != "running"]
        for k in done[: max(0, len(self.jobs) - self.args.max_jobs)]:
            del self.jobs[k]

    def job(self, net_id: str) -> dict:
        with self.lock:
            if net_id not in self.jobs:
                raise NotFound("id", f"no network job {net_id!r} on this replica",
                                    "an id returned by POST /te/network (the newest jobs are kept)")
            return dict(self.jobs[net_id])

    def paths(self, source: str, target: str, cutoff: int, max_paths: int) -> dict:
        """Directed simple paths source -> ... -> target in the latest network, largest total TE first."""
        with self.lock:
            latest = self.latest
        if latest is None:
            raise NotFound("network", "no network has been computed yet", "POST /te/network first")
        net_id, graph = latest
        for field, node in (("from", source), ("to", target)):
            if node not in graph:
                raise NotFound(field, f"{node!r} is not a variable of the latest network ({net_id})",
                                    ", ".join(map(str, graph.nodes)))
        if source == target:
            raise InputError("to", "equals 'from'", "a variable other than 'from'")
        if cutoff > self.args.path_cutoff:
            raise InputError("cutoff", f"{cutoff} exceeds the limit", f"1..{self.args.path_cutoff}")
        # enumeration is bounded: dense graphs have exponentially many simple paths
        found = itertools.islice(nx.all_simple_paths(graph, source, target, cutoff=cutoff), 100 * max_paths)
        paths = []
        for nodes in found:
            edges = [{"source": a, "target": b, "te": float(graph.edges[a, b]["te"]),
                      "p_value": float(graph.edges[a, b]["p_value"]), "lag": int(graph.edges[a, b]["lag"])}
                     for a, b in itertools.pairwise(nodes)]
            paths.append({"nodes": list(nodes), "edges": edges, "total_te": sum(e["te"] for e in edges),
                          "length": len(edges)})
        if not paths:
            raise NotFound("to", f"no directed path from {source!r} to {target!r} with at most {cutoff} edges "
                                f"in the latest network ({net_id})", "a variable reachable from 'from'")
        paths.sort(key=lambda p: (-p["total_te"], p["length"]))
        return {"from": source, "to": target, "network_id": net_id, "cutoff": cutoff, "paths": paths[:max_paths]}


def health(args: TEServeArgs) -> dict:
    return {"status": "ok", "limits": {"max_samples": args.max_samples, "max_surrogates": args.max_surrogates,
                                       "max_vars": args.max_vars, "inline_max_vars": args.inline_max_vars,
                                       "max_conditionals": args.max_conditionals, "max_dims": args.max_dims}}


# ---- HTTP -----------------------------------------------------------------------------------------
def make_fastapi(args: TEServeArgs | dict | None = None, runner: Runner | None = None) -> FastAPI:
    """The FastAPI app (routes, error mapping, OpenAPI at /docs) for the given limits."""
    args = args if isinstance(args, TEServeArgs) else TEServeArgs.model_validate(args or {})
    state = TEState(args, runner)
    app = new_app("attractor transfer entropy", "KSG transfer entropy (JIDT semantics), TE networks and causal paths.",
                  args=args)
    app.state.te = state

    @app.get("/healthz")
    def healthz() -> dict:
        return health(args)

    @app.post("/te", response_model=TEResponse)
    def post_te(req: TERequest) -> dict:  # sync: FastAPI runs it in its threadpool
        return run_te(req, args)

    @app.post("/mi", response_model=MIResponse)
    def post_mi(req: MIRequest) -> dict:
        return run_cmi(req, args)

    @app.post("/cmi", response_model=MIResponse)
    def post_cmi(req: CMIRequest) -> dict:
        return run_cmi(req, args)

    @app.post("/te/network", responses={202: {"description": "background job started: poll href"}})
    def post_network(req: NetworkRequest) -> JSONResponse:
        status, body = state.network(req)
        return JSONResponse(status_code=status, content=body)

    @app.get("/te/network/{net_id}")
    def get_network(net_id: str) -> dict:
        return state.job(net_id)

    @app.get("/causal/path")
    def causal_path(source: str = Query(..., alias="from"), target: str = Query(..., alias="to"),
                    cutoff: int = Query(4, ge=1, le=20), max_paths: int = Query(20, ge=1, le=1_000)) -> dict:
        return state.paths(source, target, cutoff, max_paths)

    return app


@serve.deployment(name="TEServe")
@serve.ingress()
class TEIngress(AppIngress):
    """Serve replica: holds the validated args; the FastAPI app (and its job state) is built on the replica."""

    args_cls = TEServeArgs
    make_fastapi = staticmethod(make_fastapi)


build_app = builder(TEIngress, TEServeArgs)

# `serve build serve.te:app -o serve_te.yaml` wants an Application (default args).
app = build_app({})
