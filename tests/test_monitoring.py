"""cluster/monitoring (issue 16): the committed rules and dashboards are what the generator writes, every
panel and alert queries only metrics the code registers (as Ray exports them) or Ray's built-ins, the
alerts the issue asks for exist; and a live Ray with a metrics export port serves a small sweep's counters
with the right values and labels."""
from __future__ import annotations

import json
import re
import socket
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from cluster.monitoring.catalog import code_metrics, exported_names, known_names, metric_names_in
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
    assert {"sweep", "te", "validation", "router"} <= set(generated)


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
@pytest.mark.parametrize("ray_cluster", [{"num_gpus": 0, "_metrics_export_port": METRICS_PORT}], indirect=True)
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
