"""Load benchmark of the three Serve apps: 16 concurrent clients for a fixed time against one
representative request per app, with /healthz probed alongside.

    python -m jobs.bench.load                                   # all three apps, 16 clients, 15 s each
    python -m jobs.bench.load --apps te --clients 16 --duration 10
    python -m jobs.bench.load --tree /path/to/other/checkout    # the same client against another tree's apps
                                                                #   (run from this checkout; it moves into the tree)
    python -m jobs.bench.load --url http://127.0.0.1:8000 --apps te   # a server that is already running

Without --url it starts a private Ray (2 CPUs, its own temp dir, no dashboard) and Serve on a free
127.0.0.1 port, deploys each app alone with `serve.<app>.build_app(args)` (the app's defaults; the
validation app gets a temp signature / model directory and a two-case library) and shuts both down
after. `--tree DIR` imports the apps from DIR instead of this checkout (it goes first on sys.path and
on the PYTHONPATH the Ray workers inherit, and the benchmark runs from DIR, since Ray also puts the
driver's working directory on its workers' path), so two versions of the apps meet the same client and
the same requests; each app's module file, as the driver and as a Ray worker import it, must lie in
the tree (else the run stops), and the output names those files and the tree's git commit.

Per app: one untimed warm-up request (compilation, the validation library), then the median of 5
requests sent one at a time, then the load: `--clients` threads, each with its own HTTP connection,
send the app's request back to back for `--duration` seconds (a 429 / 503 answer with Retry-After
makes that client wait that long, as a polite client would; the wait stops at the end of the run),
while one more thread GETs /healthz every 50 ms. Reported: throughput (2xx answers per second), p50 /
p99 latency of the 2xx answers, answers by status (and transport errors), time to the first 429 /
503, how many 429 / 503 lacked Retry-After, /healthz p50 / p99 / max, and the requests in flight when
/healthz was probed (median). Writes a markdown table to stdout and, with --out DIR, load.json.

The client imports nothing from the project (so it runs unchanged against an older tree).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

APPS = ("sweep", "te", "validation")


# ---- the representative requests (seeded; the same bytes for every tree) -----------------------------
def _table(n: int, shift: float, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    cols = rng.normal(size=(n, 4)) + shift
    cols[:, 1] += 0.5 * cols[:, 0]
    return [{"a": float(r[0]), "b": float(r[1]), "c": float(r[2]), "d": float(r[3]),
             "g": ["u", "v", "w"][i % 3], "label": "x" if r[0] + r[1] > 2 * shift else "y"}
            for i, r in enumerate(cols)]


def _te_series(n: int, seed: int) -> tuple[list[float], list[float]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n + 1)
    return x[1:].tolist(), (0.8 * x[:-1] + 0.3 * rng.normal(size=n)).tolist()


def requests_for(app: str) -> tuple[str, dict]:
    """(path, JSON body) of the app's representative request."""
    if app == "sweep":   # one GASLIT-AF trajectory (healthy regime) over t in [0, 50], max Lyapunov exponent included
        return "/sweep/simulate", {"model": "gaslit_af", "params": {"gamma": 0.1}, "initial_state": {"Lambda": 1.0},
                                   "t_span": [0, 50], "solver": {"rtol": 1e-6, "atol": 1e-9}}
    if app == "te":      # TE of a 2,000-sample pair with 19 permutation surrogates
        x, y = _te_series(2000, 0)
        return "/te", {"source": x, "target": y, "surrogates": 19}
    if app == "validation":   # PreScreenRisk of two 150-row tables (a cheap detector run + the library)
        return "/validation/prescreen", {"real": {"records": _table(150, 0.0, 1)},
                                         "synthetic": {"records": _table(150, 0.4, 2)}, "k": 2}
    raise ValueError(app)


def app_args(app: str, tmp: Path, extra: dict | None = None) -> dict:
    """The app's defaults, except where a benchmark must not write into the checkout, plus `extra`
    (--arg KEY=VALUE: e.g. max_concurrent=5)."""
    args = dict(extra or {})
    if app == "validation":
        args.update({"signature_dir": str(tmp / "signatures"), "model_dir": str(tmp / "models"),
                     "seed_cases": ["label_noise", "clean"], "seed_severities": ["high"]})
    return args


# ---- the client -------------------------------------------------------------------------------------
@dataclass
class LoadResult:
    app: str
    path: str
    clients: int
    duration_s: float
    single_latency_s: float | None = None          # median of requests sent one at a time
    answers: list[tuple[float, float, int, bool]] = field(default_factory=list)   # (t_end, latency, status, retry-after)
    transport_errors: list[str] = field(default_factory=list)
    health: list[tuple[float, float, int, int]] = field(default_factory=list)      # (t, latency, status, in flight)

    def summary(self) -> dict[str, Any]:
        """Throughput counts the 2xx answers that arrived within the run; latencies cover every answer
        (those in flight at the end included)."""
        ok = sorted(lat for _, lat, s, _ in self.answers if 200 <= s < 300)
        ok_in_time = sum(1 for t, _, s, _ in self.answers if 200 <= s < 300 and t <= self.duration_s)
        statuses: dict[str, int] = {}
        for _, _, s, _ in self.answers:
            statuses[str(s)] = statuses.get(str(s), 0) + 1
        if self.transport_errors:
            statuses["transport"] = len(self.transport_errors)
        rejected = [(t, ra) for t, _, s, ra in self.answers if s in (429, 503)]
        hl = sorted(lat for _, lat, _, _ in self.health)
        return {
            "app": self.app, "path": self.path, "clients": self.clients, "duration_s": self.duration_s,
            "single_latency_s": self.single_latency_s,
            "throughput_rps": round(ok_in_time / self.duration_s, 2),
            "p50_s": _q(ok, 0.5), "p99_s": _q(ok, 0.99), "max_s": _q(ok, 1.0),
            "statuses": statuses,
            "first_reject_s": round(min(t for t, _ in rejected), 3) if rejected else None,
            "rejects_without_retry_after": sum(1 for _, ra in rejected if not ra),
            "health_n": len(hl), "health_errors": sum(1 for _, _, s, _ in self.health if s != 200),
            "health_p50_s": _q(hl, 0.5), "health_p99_s": _q(hl, 0.99), "health_max_s": _q(hl, 1.0),
            "in_flight_at_probe_median": statistics.median([f for *_, f in self.health]) if self.health else None,
        }


def _q(xs: list[float], q: float) -> float | None:
    """The q-quantile of sorted xs (nearest rank), rounded to the millisecond."""
    if not xs:
        return None
    return round(xs[min(len(xs) - 1, max(0, int(np.ceil(q * len(xs))) - 1))], 3)


def run_load(url: str, path: str, body: dict, *, clients: int = 16, duration: float = 10.0,
             health_interval: float = 0.05, honor_retry_after: bool = True, timeout: float = 120.0,
             app: str = "") -> LoadResult:
    """`clients` threads POST `body` to url+path back to back for `duration` seconds while one thread
    GETs url/healthz every `health_interval` s (module docstring). Every request's answer is recorded."""
    import httpx

    raw = json.dumps(body).encode()
    res = LoadResult(app=app, path=path, clients=clients, duration_s=duration)
    lock = threading.Lock()
    in_flight = [0]
    start = time.perf_counter()
    stop_at = start + duration

    def client() -> None:
        with httpx.Client(base_url=url, timeout=timeout) as http:
            while time.perf_counter() < stop_at:
                with lock:
                    in_flight[0] += 1
                t = time.perf_counter()
                try:
                    r = http.post(path, content=raw, headers={"content-type": "application/json"})
                except httpx.HTTPError as exc:
                    with lock:
                        in_flight[0] -= 1
                        res.transport_errors.append(f"{type(exc).__name__}: {exc}")
                    time.sleep(0.05)
                    continue
                end = time.perf_counter()
                retry_after = r.headers.get("retry-after")
                with lock:
                    in_flight[0] -= 1
                    res.answers.append((end - start, end - t, r.status_code, retry_after is not None))
                if r.status_code in (429, 503) and honor_retry_after:
                    wait = float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else 0.1
                    time.sleep(max(0.0, min(wait, stop_at - time.perf_counter())))

    def prober() -> None:
        with httpx.Client(base_url=url, timeout=timeout) as http:
            while time.perf_counter() < stop_at:
                t = time.perf_counter()
                with lock:
                    flying = in_flight[0]
                try:
                    status = http.get("/healthz").status_code
                except httpx.HTTPError:
                    status = -1
                res.health.append((t - start, time.perf_counter() - t, status, flying))
                time.sleep(max(0.0, health_interval - (time.perf_counter() - t)))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    threads.append(threading.Thread(target=prober, daemon=True))
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return res


def single_latency(url: str, path: str, body: dict, n: int = 5) -> float:
    """Median seconds of n requests sent one at a time (after the caller's warm-up)."""
    import httpx

    times = []
    with httpx.Client(base_url=url, timeout=600) as http:
        for _ in range(n):
            t = time.perf_counter()
            r = http.post(path, json=body)
            r.raise_for_status()
            times.append(time.perf_counter() - t)
    return round(statistics.median(times), 3)


# ---- a private Ray + Serve --------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_serve(tree: Path, num_cpus: int = 2):
    """A private Ray (temp dir, no dashboard) + Serve on a free 127.0.0.1 port; yields the URL."""
    import ray
    from ray import serve

    tmp = tempfile.mkdtemp(prefix="ray_load_", dir="/tmp")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(tree), os.environ.get("PYTHONPATH")) if p)
    port = _free_port()
    ray.init(num_cpus=num_cpus, include_dashboard=False, _temp_dir=tmp, log_to_driver=False,
             namespace="attractor-load")
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield f"http://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def _wait_healthy(url: str, timeout: float = 300) -> dict:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            r = httpx.get(f"{url}/healthz", timeout=10)
            if r.status_code == 200:
                return r.json()
        time.sleep(0.5)
    raise TimeoutError(f"{url}/healthz did not answer in {timeout} s")


def _where_imported(app: str) -> dict[str, str]:
    """The file serve.<app> comes from, in this process and in a Ray worker (as a replica imports it)."""
    import ray

    @ray.remote(num_cpus=0)
    def in_worker(name: str) -> str:
        return importlib.import_module(name).__file__

    return {"driver": importlib.import_module(f"serve.{app}").__file__,
            "ray_worker": ray.get(in_worker.remote(f"serve.{app}"))}


def bench_app(url: str, app: str, clients: int, duration: float) -> LoadResult:
    path, body = requests_for(app)
    import httpx

    httpx.post(url + path, json=body, timeout=900).raise_for_status()   # warm-up, untimed
    single = single_latency(url, path, body)
    res = run_load(url, path, body, clients=clients, duration=duration, app=app)
    res.single_latency_s = single
    return res


def deploy_and_bench(app: str, tree: Path, clients: int, duration: float, tmp: Path,
                     extra: dict | None = None) -> tuple[LoadResult, dict]:
    """Deploy serve.<app> (imported from `tree`) alone on a private Serve, benchmark it, tear down."""
    from ray import serve

    with local_serve(tree) as url:
        module = importlib.import_module(f"serve.{app}")
        serve.run(module.build_app(app_args(app, tmp / app, extra)), name=app, route_prefix="/")
        health = _wait_healthy(url)
        info = {"imported_from": _where_imported(app), "healthz": health}
        for where, file in info["imported_from"].items():   # the apps measured are the tree's
            if not Path(file).resolve().is_relative_to(tree):
                raise RuntimeError(f"serve.{app} was imported from {file} by the {where}, not from {tree}")
        return bench_app(url, app, clients, duration), info


# ---- report -----------------------------------------------------------------------------------------
def environment(tree: Path) -> dict[str, Any]:
    def version(mod: str) -> str | None:
        try:
            return importlib.import_module(mod).__version__
        except Exception:
            return None

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True,
                                  check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "host_cpus": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "ray": version("ray"), "fastapi": version("fastapi"), "torch": version("torch"),
            "httpx": version("httpx"), "tree": str(tree), "commit": git("rev-parse", "--short", "HEAD"),
            "tree_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
            "command": " ".join([Path(sys.executable).name, "-m", "jobs.bench.load", *sys.argv[1:]])}


def md_table(rows: list[dict]) -> str:
    head = ["app", "request", "1-at-a-time s", "throughput req/s", "p50 s", "p99 s", "answers by status",
            "first 429/503 s", "429/503 w/o Retry-After", "/healthz p50 / p99 / max s", "in flight at probe"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in rows:
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(s["statuses"].items()))
        lines.append("| " + " | ".join(str(x) for x in [
            s["app"], f"POST {s['path']}", s["single_latency_s"], s["throughput_rps"], s["p50_s"], s["p99_s"],
            statuses, s["first_reject_s"] if s["first_reject_s"] is not None else "never",
            s["rejects_without_retry_after"], f"{s['health_p50_s']} / {s['health_p99_s']} / {s['health_max_s']}"
            + (f" ({s['health_errors']} failed)" if s["health_errors"] else ""),
            s["in_flight_at_probe_median"]]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--apps", default=",".join(APPS), help="comma-separated: sweep,te,validation")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--duration", type=float, default=15.0, help="seconds of load per app")
    ap.add_argument("--tree", type=Path, default=None, help="import serve.<app> from this checkout")
    ap.add_argument("--url", default=None, help="benchmark a running server (one app) instead of deploying")
    ap.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE",
                    help="an app argument (JSON value, else a string), e.g. max_concurrent=5; repeatable")
    ap.add_argument("--out", type=Path, default=None, help="write DIR/load.json")
    args = ap.parse_args(argv)
    extra = {}
    for item in args.arg:
        key, sep, value = item.partition("=")
        if not sep or not key:
            ap.error(f"--arg {item!r}: expected KEY=VALUE")
        try:
            extra[key] = json.loads(value)
        except ValueError:
            extra[key] = value
    apps = [a for a in args.apps.split(",") if a]
    if unknown := set(apps) - set(APPS):
        ap.error(f"unknown apps {sorted(unknown)}; choose from {', '.join(APPS)}")
    if args.url and len(apps) != 1:
        ap.error("--url benchmarks one app: give --apps with one name")
    tree = (args.tree or Path(__file__).resolve().parents[2]).resolve()
    if args.tree is not None:
        if "serve" in sys.modules:
            ap.error("serve is already imported: run --tree in a fresh process")
        sys.path.insert(0, str(tree))
        # Ray puts the driver's working directory on its workers' sys.path ahead of PYTHONPATH: work
        # from the tree, so the replicas import its serve/ too (checked after each deploy)
        os.chdir(tree)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env = environment(tree)
    env["loadavg_start"] = os.getloadavg()
    env["app_args"] = extra
    rows, infos = [], {}
    with tempfile.TemporaryDirectory(prefix="load_bench_") as tmp:
        for app in apps:
            if args.url:
                res, info = bench_app(args.url, app, args.clients, args.duration), {"url": args.url}
            else:
                res, info = deploy_and_bench(app, tree, args.clients, args.duration, Path(tmp), extra)
            rows.append(res.summary())
            infos[app] = info
            print(f"[load] {app}: {json.dumps(rows[-1])}", flush=True)
            print(f"[load] {app} imported from {info.get('imported_from')}", flush=True)
    env["loadavg_end"] = os.getloadavg()
    print(json.dumps(env, indent=1))
    print(md_table(rows))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "load.json").write_text(json.dumps({"environment": env, "apps": infos, "rows": rows},
                                                       indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
