"""cluster/monitoring (issue 16): the committed rules and dashboards are what the generator writes, every
panel and alert queries only metrics the code registers (as Ray exports them), Ray's built-ins or vLLM's
listed engine metrics, the alerts the issue asks for exist; the queue-depth gauges of run_tasks follow a
run step by step (fake Ray, fake recorder); the router ladder's gauges equal the engine's numbers; and a
live Ray with a metrics export port serves a small sweep's counters with the right values and labels."""
from __future__ import annotations

import json
import re
import socket
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from cluster.monitoring.catalog import (
    VLLM_METRICS,
    code_metrics,
    exported_names,
    known_names,
    metric_names_in,
    ray_builtin_names,
    vllm_metrics,
)
from cluster.monitoring.dashboards import OUT, alert_rules, dashboards

ROOT = Path(__file__).resolve().parents[1]


def committed_queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every alert and every dashboard panel target in the committed files."""
    out = [(f"rules.yml:{r['alert']}", r["expr"]) for g in yaml.safe_load((OUT / "rules.yml").read_text())["groups"]
           for r in g["rules"]]
    for path in sorted((OUT / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            out += [(f"{path.name}:{panel['title']}", t["expr"]) for t in panel["targets"]]
    return out


def test_committed_files_are_the_generated_ones():
    assert yaml.safe_load((OUT / "rules.yml").read_text()) == alert_rules()
    generated = dashboards()
    assert {p.stem for p in (OUT / "dashboards").glob("*.json")} == set(generated)
    for sub, dash in generated.items():
        assert json.loads((OUT / "dashboards" / f"{sub}.json").read_text()) == dash, sub
    assert {"sweep", "te", "validation", "router", "pool", "llm", "trainer"} <= set(generated)


def test_every_query_names_a_defined_metric():
    known = known_names()
    queries = committed_queries()
    assert len(queries) > 30
    for where, expr in queries:
        names = metric_names_in(expr)
        assert names, (where, expr)
        assert names <= known, f"{where}: {sorted(names - known)} is defined by no code and no Ray dashboard"


def test_catalogue_matches_a_plain_grep_of_the_source():
    """The AST catalogue against an independent regex over the same files."""
    grep = set()
    for path in (ROOT / "actors").rglob("*.py"):
        text = path.read_text()
        sub = re.search(r'^\s+subsystem(?:: ClassVar\[str\])? = "(\w+)"', text, re.M)
        if sub and sub.group(1) != "worker":
            grep |= {f"attractor_{sub.group(1)}_{n}" for n in re.findall(r'self\.(?:counter|histogram|gauge)\("(\w+)"', text)}
            grep.add(f"attractor_{sub.group(1)}_worker_gpu_memory_bytes")
        grep |= set(re.findall(r'\.(?:Counter|Histogram|Gauge)\(\s*"(attractor_\w+)"', text))
    assert {m.name for m in code_metrics()} == grep
    assert exported_names(next(m for m in code_metrics() if m.name == "attractor_sweep_chunk_seconds")) == {
        "ray_attractor_sweep_chunk_seconds_bucket", "ray_attractor_sweep_chunk_seconds_sum",
        "ray_attractor_sweep_chunk_seconds_count"}


def test_the_issues_alerts_exist():
    rules = {r["alert"]: r["expr"] for g in alert_rules()["groups"] for r in g["rules"]}
    assert "RESTARTING" in rules["AttractorWorkerRestarting"]
    assert "ray_attractor_sweep_chunk_seconds_bucket" in rules["AttractorSweepChunkSecondsSlow"]
    assert 'status_code=~"5.."' in rules["AttractorServe5xxRate"]
    assert "ray_node_gram_used" in rules["AttractorGpuMemoryNearFull"]
    for name in ("prometheus.yml", "prometheus-local.yml"):
        config = yaml.safe_load((OUT / name).read_text())
        assert config["rule_files"] == ["rules.yml"] and config["scrape_configs"]


def test_the_subsystems_metrics_are_catalogued_and_shown():
    """Queue depth per pool, swap acceptance and R-hat (code), prefix-cache hit rate (vLLM's, listed from its
    source), training tokens/s (a rate of the trainer's counter): each in the catalogue and on a dashboard."""
    metrics = {m.name: m for m in code_metrics()}
    for name in ("attractor_pool_tasks_waiting", "attractor_pool_tasks_in_flight"):
        assert metrics[name].kind == "gauge" and metrics[name].tags == ("subsystem",)
        assert metrics[name].where == "actors/common/scheduler.py"
    for name in ("attractor_router_ladder_swap_acceptance", "attractor_router_ladder_swap_acceptance_min",
                 "attractor_router_ladder_rhat"):
        assert metrics[name].kind == "gauge" and metrics[name].worker_tagged
    known = known_names()
    assert {"ray_vllm_prefix_cache_hits_total", "ray_vllm_prefix_cache_queries_total"} <= known
    # two sources agree: vLLM's definitions (VLLM_METRICS) and Ray 2.60's own Serve LLM Grafana dashboard
    assert set().union(*(exported_names(m) for m in vllm_metrics())) <= ray_builtin_names()
    exprs = {sub: [t["expr"] for p in d["panels"] for t in p["targets"]] for sub, d in dashboards().items()}
    assert ("sum by (model_name) (rate(ray_vllm_prefix_cache_hits_total[5m])) / "
            "sum by (model_name) (rate(ray_vllm_prefix_cache_queries_total[5m]))") in exprs["llm"]
    used = set().union(*(metric_names_in(e) for e in exprs["llm"]))
    assert {n.removeprefix("ray_").removesuffix("_total").removesuffix("_bucket") for n in used
            if n.startswith("ray_vllm_")} == set(VLLM_METRICS)
    assert any('application="llm"' in e for e in exprs["llm"])                       # its Serve requests
    assert "sum by (run) (rate(ray_attractor_trainer_tokens_total[1m]))" in exprs["trainer"]
    assert "sum by (subsystem) (ray_attractor_pool_tasks_waiting)" in exprs["pool"]
    assert "max by (worker) (ray_attractor_router_ladder_rhat)" in exprs["router"]
    assert "max by (worker) (ray_attractor_router_ladder_swap_acceptance)" in exprs["router"]
    rules = {r["alert"]: r["expr"] for g in alert_rules()["groups"] for r in g["rules"]}
    assert "delta(ray_attractor_pool_tasks_waiting[30m])" in rules["AttractorPoolQueueStalled"]
    assert "ray_attractor_router_ladder_swap_acceptance_min) < 0.05" in rules["AttractorRouterSwapAcceptanceCollapse"]


# ---- queue depth: run_tasks in-process (fake Ray futures, fake recorder) --------------------------------
class _Ref:
    def __init__(self, value):
        self.value = value


class _FakeRay:
    """ray.wait / ray.get over already-finished futures, first submitted first done."""

    def __init__(self):
        self.initialized = False

    def wait(self, refs, num_returns=1, timeout=None):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        return ref.value

    def is_initialized(self):
        return self.initialized


class _Recorder:
    def __init__(self):
        self.values: list[tuple[int, int]] = []

    def record(self, waiting: int, in_flight: int) -> None:
        self.values.append((waiting, in_flight))


def _queue_reference(n_todo: int, n_workers: int, inflight: int) -> list[tuple[int, int]]:
    """The expected (waiting, in flight) sequence of a FIFO pull run, counted by hand: all waiting, then the
    first fill, then one step per result (a waiting task is given out while any is left)."""
    fill = min(n_todo, n_workers * inflight)
    seq = [(n_todo, 0), (n_todo - fill, fill)]
    waiting, flying = n_todo - fill, fill
    while flying:
        if waiting:
            waiting -= 1
        else:
            flying -= 1
        seq.append((waiting, flying))
    return [v for k, v in enumerate(seq) if k == 0 or v != seq[k - 1]]


@pytest.mark.parametrize("n_tasks,stored,inflight", [(7, 0, 2), (9, 3, 1), (2, 0, 2)])
def test_queue_depth_gauges_follow_a_run(monkeypatch, tmp_path, n_tasks, stored, inflight):
    from actors.common import scheduler
    from actors.common.storage import json_store

    monkeypatch.setattr(scheduler, "ray", _FakeRay())
    store = json_store(tmp_path, "t-{:03d}.json")
    for i in range(stored):
        store.save(i, {"x": i * i})
    rec = _Recorder()
    workers = ["w0", "w1"]
    run = scheduler.run_tasks(workers, list(range(n_tasks)), lambda w, i, x: _Ref({"x": x * x}), store=store,
                              inflight=inflight, queue_depth=rec)
    assert run.computed == n_tasks - stored and run.skipped == stored
    assert rec.values == _queue_reference(n_tasks - stored, len(workers), inflight)
    assert rec.values[-1] == (0, 0)
    assert all(w >= 0 and 0 <= f <= len(workers) * inflight for w, f in rec.values)
    rec2 = _Recorder()                                    # everything stored: nothing recorded, no pool made
    again = scheduler.run_tasks(lambda: pytest.fail("no pool needed"), list(range(n_tasks)), lambda *a: None,
                                store=store, queue_depth=rec2)
    assert again.skipped == n_tasks and rec2.values == []


def test_queue_depth_returns_to_zero_when_a_task_fails(monkeypatch):
    from actors.common import scheduler

    fake = _FakeRay()

    def get(ref):
        if ref.value == 3:
            raise RuntimeError("task 3 failed")
        return ref.value

    fake.get = get
    monkeypatch.setattr(scheduler, "ray", fake)
    rec = _Recorder()
    with pytest.raises(RuntimeError):
        scheduler.run_tasks(["w"], list(range(6)), lambda w, i, x: _Ref(x), inflight=2, queue_depth=rec)
    assert rec.values[-1] == (0, 0) and (4, 2) in rec.values


def test_queue_gauges_are_tagged_by_the_calling_subsystem_and_off_without_ray(monkeypatch):
    from actors.common import scheduler

    fake = _FakeRay()
    monkeypatch.setattr(scheduler, "ray", fake)
    assert isinstance(scheduler.queue_gauges("sweep"), scheduler._NoQueue)     # Ray not initialized: no-op
    asked = []

    def gauges(sub):
        asked.append(sub)
        return _Recorder()

    monkeypatch.setattr(scheduler, "queue_gauges", gauges)
    code = "run = run_tasks(['w'], [1, 2], lambda w, i, x: Ref(x))"
    for module, expected in (("actors.sweep.pool", "sweep"), ("actors.trainer.eqprop.pool", "trainer"),
                             ("jobs.demo", "jobs")):
        scope = {"__name__": module, "run_tasks": scheduler.run_tasks, "Ref": _Ref}
        exec(code, scope)                                                          # noqa: S102 (a caller module)
        assert scope["run"].computed == 2
        assert asked[-1] == expected
    scheduler.run_tasks(["w"], [1], lambda w, i, x: _Ref(x), subsystem="te")
    assert asked[-1] == "te"


# ---- the router ladder's gauges ----------------------------------------------------------------------------
class _FakeMetric:
    def __init__(self, name, description="", boundaries=None, tag_keys=()):
        self.name, self.tag_keys, self.values = name, tag_keys, []

    def set_default_tags(self, tags):
        self.tags = tags

    def set(self, value, tags=None):
        self.values.append(value)

    def inc(self, value=1.0, tags=None):
        self.values.append(value)

    def observe(self, value, tags=None):
        self.values.append(value)


def test_router_gauges_equal_the_engines_numbers(monkeypatch):
    """ReplicaLadder (in-process, Ray and its metrics faked) sets swap acceptance (mean and smallest pair, in
    [0, 1]) and R-hat to what the ladder engine measured for the same task; gelman_rubin recomputed here
    from the engine's samples by the BDA3 split-R-hat formula."""
    import types

    import numpy as np
    import torch

    from actors.common import worker as worker_mod
    from actors.router.actor import ReplicaLadder, ladder_gauges
    from actors.router.ladder import LadderConfig, run_ladder, solve_assignment
    from actors.router.problems import AssignmentProblem, random_assignment

    created: dict[str, _FakeMetric] = {}

    def factory(name, *a, **kw):
        created[name] = _FakeMetric(name, *a, **kw)
        return created[name]

    monkeypatch.setattr(worker_mod, "metrics", types.SimpleNamespace(Counter=factory, Histogram=factory, Gauge=factory))
    monkeypatch.setattr(worker_mod, "ray", types.SimpleNamespace(
        get_gpu_ids=lambda: [], get_runtime_context=lambda: types.SimpleNamespace(get_assigned_resources=lambda: {"CPU": 1})))
    threads = torch.get_num_threads()
    try:
        actor = ReplicaLadder(0)
        cfg = LadderConfig(n_replicas=5, T_min=0.02, T_max=0.5, n_ladders=4, n_sweeps=240, burn_in=40,
                           adapt_every=20, device="cpu")
        inst = random_assignment(10, 3, 5)
        got = actor.solve_assignment(inst, cfg.model_dump_json(), 7)
        engine = solve_assignment(inst, cfg.model_copy(update={"seed": 7}))
        ladder = run_ladder(AssignmentProblem(inst), cfg.model_copy(update={"seed": 7}))
    finally:
        torch.set_num_threads(threads)
    acc = np.asarray(engine.ladder["swap_acceptance"])
    assert got["ladder"]["swap_acceptance"] == engine.ladder["swap_acceptance"] and acc.size == 4
    mean = created["attractor_router_ladder_swap_acceptance"].values
    low = created["attractor_router_ladder_swap_acceptance_min"].values
    rhat = created["attractor_router_ladder_rhat"].values
    assert mean == [pytest.approx(acc.mean(), abs=1e-15)] and low == [acc.min()]
    assert 0 <= low[0] <= mean[0] <= 1
    # R-hat: the engine's, and the split-R-hat formula recomputed from the same samples
    assert rhat == [max(engine.ladder["rhat"])]
    chains = ladder.samples[:, :, 0, :]                                   # [draws, ladders, observables]
    ref = []
    for j in range(chains.shape[-1]):
        x = chains[:, :, j].T
        h = x.shape[1] // 2
        x = np.concatenate([x[:, :h], x[:, h:2 * h]])
        n, w = x.shape[1], x.var(axis=1, ddof=1).mean()
        b = n * x.mean(axis=1).var(ddof=1)
        ref.append(np.sqrt(((n - 1) / n * w + b / n) / w) if w > 0 else (1.0 if b == 0 else np.inf))
    assert rhat[0] == pytest.approx(max(r for r in ref if np.isfinite(r)), rel=1e-12)
    assert created["attractor_router_ladder_tasks_total"].values == [1]
    # what is not measured leaves its gauge alone
    assert ladder_gauges({"swap_acceptance": [], "rhat": []}) == {}
    assert ladder_gauges({"swap_acceptance": [0.25, 0.75], "rhat": [float("inf"), 1.2]}) == {
        "ladder_swap_acceptance": 0.5, "ladder_swap_acceptance_min": 0.25, "ladder_rhat": 1.2}


def test_promql_name_extraction():
    assert metric_names_in('sum by (le, worker) (rate(ray_a_bucket{application="x",s=~"5.."}[5m])) / '
                           "on() sum(ray_b) > 0.5") == {"ray_a_bucket", "ray_b"}


# ---- live: Ray's metrics export port ------------------------------------------------------------------
def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


METRICS_PORT = _port()
SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)$")


def samples(text: str, name: str) -> list[tuple[dict, float]]:
    out = []
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m and m.group("name") == name:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group("labels")))
            out.append((labels, float(m.group("value"))))
    return out


@pytest.mark.slow
# metrics reported every second (Ray's default: 10 s), so the scrapes below wait seconds, not tens of seconds
@pytest.mark.parametrize("ray_cluster", [{"num_gpus": 0, "_metrics_export_port": METRICS_PORT,
                                          "_system_config": {"metrics_report_interval_ms": 1000}}], indirect=True)
def test_sweep_counters_on_the_metrics_export_port(ray_cluster, tmp_path):
    from actors.common.config import WorkerConfig
    from actors.sweep.pool import run_sweep
    from configs import preset
    from jobs.sweep import load_spec

    spec = load_spec(preset("sweep", "ci_tiny.yaml"), {"solver.t_span": [0.0, 20.0]})   # 6 x 6 grid, 4 chunks
    spec = spec.model_copy(update={"workers": WorkerConfig(num_workers=2, num_gpus=0, num_cpus=1)})
    summary = run_sweep(spec, tmp_path / "sweep", progress=False)
    assert summary.chunks_computed == 4
    url = f"http://127.0.0.1:{METRICS_PORT}/metrics"
    deadline, text = time.time() + 60, ""
    while time.time() < deadline:   # the agent exports every few seconds
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        counts = samples(text, "ray_attractor_sweep_chunk_seconds_count")
        if sum(v for _, v in samples(text, "ray_attractor_sweep_trajectories_total")) >= 36 and \
                sum(v for _, v in counts) >= 4:
            break
        time.sleep(1)
    trajectories = samples(text, "ray_attractor_sweep_trajectories_total")
    assert sum(v for _, v in trajectories) == 36, trajectories        # every grid point once
    assert {labels["worker"] for labels, _ in trajectories} <= {"0", "1"} and trajectories
    assert all(v % 9 == 0 for _, v in trajectories)                  # whole chunks of 9 per worker
    assert sum(v for _, v in samples(text, "ray_attractor_sweep_chunk_seconds_count")) == 4
    assert all(labels["Component"] == "core_worker" for labels, _ in trajectories)
    assert "# TYPE ray_attractor_sweep_trajectories_total counter" in text
    assert "# TYPE ray_attractor_sweep_chunk_seconds histogram" in text
    # the driver's queue-depth gauges (run_tasks in this process): tagged sweep, back to 0 after the run (the
    # agent exports every few seconds: an earlier scrape may still show the run's first value, 4 waiting)
    names = ("ray_attractor_pool_tasks_waiting", "ray_attractor_pool_tasks_in_flight")
    deadline = time.time() + 60
    while time.time() < deadline and not all(samples(text, n) and all(v == 0 for _, v in samples(text, n))
                                             for n in names):
        time.sleep(1)
        text = urllib.request.urlopen(url, timeout=10).read().decode()
    for name in names:
        series = samples(text, name)
        assert series and {labels["subsystem"] for labels, _ in series} == {"sweep"}, (name, series)
        assert all(v == 0 for _, v in series), series
