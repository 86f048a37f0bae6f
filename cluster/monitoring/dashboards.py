"""Grafana dashboards (one per subsystem) and Prometheus alerting rules, generated from the metric catalogue
(catalog.py: what the code registers) so a renamed metric shows up as a stale file in tests.

    python -m cluster.monitoring write    # rules.yml and dashboards/<subsystem>.json beside this file
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from cluster.monitoring.catalog import Metric, code_metrics

__all__ = ["OUT", "SERVE_APPS", "alert_rules", "dashboard", "dashboards", "llm_dashboard", "write"]

OUT = Path(__file__).parent
SERVE_APPS = {"sweep", "te", "validation", "router", "llm"}   # Serve application names (cluster/kuberay/values.yaml)
P95_SLOW_S = 600          # a chunk / task / dimension p95 above 10 minutes is an alert
SERVE_5XX_RATIO = 0.05    # more than 5 % of an app's requests answered 5xx for 5 minutes
GPU_MEMORY_FULL = 0.92    # a GPU more than 92 % full for 10 minutes
QUEUE_STALL = "30m"       # tasks waiting in a pool and their number not falling over this window
SWAP_COLLAPSE = 0.05      # a ladder's smallest neighbour-pair swap acceptance below 5 %
SUMMED_GAUGES = {"attractor_pool_tasks_waiting", "attractor_pool_tasks_in_flight"}   # one series per driver


def _subsystem(m: Metric) -> str:
    return m.name.split("_")[1]


def _panels(m: Metric) -> list[tuple[str, str, str]]:
    """(title, PromQL, legend) panels for one metric."""
    series = f"ray_{m.name}"
    by = ["worker"] if m.worker_tagged else list(m.tags)
    grouping = f" by ({', '.join(by)})" if by else ""
    legend = " ".join(f"{{{{{t}}}}}" for t in by) if by else m.name
    if m.kind == "counter":
        return [(f"{m.name} per second", f"sum{grouping} (rate({series}[5m]))", legend)]
    if m.kind == "histogram":
        return [(f"{m.name} p{q}", f"histogram_quantile(0.{q}, sum by (le) (rate({series}_bucket[5m])))", f"p{q}")
                for q in (50, 95)]
    return [(m.name, f"{'sum' if m.name in SUMMED_GAUGES else 'max'}{grouping} ({series})", legend)]


# panels that combine metrics (beyond one panel per metric), by dashboard
EXTRA_PANELS: dict[str, list[tuple[str, str, str]]] = {
    "trainer": [("training tokens/s by run", "sum by (run) (rate(ray_attractor_trainer_tokens_total[1m]))", "{{run}}")],
    "router": [("ladder swap acceptance: smallest pair, worst worker",
                "min(ray_attractor_router_ladder_swap_acceptance_min)", "min")],
    "pool": [("tasks waiting + in flight by subsystem", "sum by (subsystem) (ray_attractor_pool_tasks_waiting) + "
              "sum by (subsystem) (ray_attractor_pool_tasks_in_flight)", "{{subsystem}}")],
}


def _serve_panels(app: str) -> list[tuple[str, str, str]]:
    sel = f'application="{app}"'
    return [
        (f"Serve {app}: requests per second by status", f"sum by (status_code) (rate(ray_serve_num_http_requests_total{{{sel}}}[5m]))",
         "{{status_code}}"),
        (f"Serve {app}: 5xx ratio", f'sum(rate(ray_serve_num_http_requests_total{{{sel},status_code=~"5.."}}[5m])) / '
         f"sum(rate(ray_serve_num_http_requests_total{{{sel}}}[5m]))", "5xx"),
        (f"Serve {app}: latency p95 (ms)",
         f"histogram_quantile(0.95, sum by (le) (rate(ray_serve_http_request_latency_ms_bucket{{{sel}}}[5m])))", "p95"),
    ]


def _llm_panels() -> list[tuple[str, str, str]]:
    """The LLM app's engines: vLLM's own metrics (catalog.VLLM_METRICS), by model."""
    def quantile(q: str, name: str) -> str:
        return f"histogram_quantile({q}, sum by (le, model_name) (rate(ray_vllm_{name}_bucket[5m])))"

    return [
        ("prefix-cache hit rate (hit tokens / queried tokens)",
         "sum by (model_name) (rate(ray_vllm_prefix_cache_hits_total[5m])) / "
         "sum by (model_name) (rate(ray_vllm_prefix_cache_queries_total[5m]))", "{{model_name}}"),
        ("output tokens/s", "sum by (model_name) (rate(ray_vllm_generation_tokens_total[1m]))", "{{model_name}}"),
        ("prompt tokens/s", "sum by (model_name) (rate(ray_vllm_prompt_tokens_total[1m]))", "{{model_name}}"),
        ("time to first token p50 (s)", quantile("0.5", "time_to_first_token_seconds"), "{{model_name}}"),
        ("time to first token p99 (s)", quantile("0.99", "time_to_first_token_seconds"), "{{model_name}}"),
        ("end-to-end request latency p95 (s)", quantile("0.95", "e2e_request_latency_seconds"), "{{model_name}}"),
        ("KV-cache usage (0..1)", "max by (model_name) (ray_vllm_kv_cache_usage_perc)", "{{model_name}}"),
        ("requests running", "sum by (model_name) (ray_vllm_num_requests_running)", "{{model_name}}"),
        ("requests waiting", "sum by (model_name) (ray_vllm_num_requests_waiting)", "{{model_name}}"),
    ]


def dashboard(subsystem: str, metrics: list[Metric], extra: list[tuple[str, str, str]] | None = None) -> dict:
    specs = [p for m in metrics for p in _panels(m)] + list(extra if extra is not None else
                                                            EXTRA_PANELS.get(subsystem, []))
    if subsystem in SERVE_APPS:
        specs += _serve_panels(subsystem)
    panels = []
    for i, (title, expr, legend) in enumerate(specs):
        panels.append({"id": i + 1, "type": "timeseries", "title": title,
                       "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
                       "datasource": {"type": "prometheus", "uid": "${datasource}"},
                       "targets": [{"refId": "A", "expr": expr, "legendFormat": legend}]})
    return {"title": f"attractor / {subsystem}", "uid": f"attractor-{subsystem}", "schemaVersion": 39,
            "tags": ["attractor", subsystem], "time": {"from": "now-6h", "to": "now"}, "refresh": "30s",
            "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus"}]},
            "panels": panels}


def dashboards() -> dict[str, dict]:
    """{subsystem: dashboard} for every subsystem with metrics."""
    by_sub: dict[str, list[Metric]] = {}
    for m in code_metrics():
        by_sub.setdefault(_subsystem(m), []).append(m)
    out = {sub: dashboard(sub, ms) for sub, ms in sorted(by_sub.items())}
    out["llm"] = llm_dashboard()
    return dict(sorted(out.items()))


def llm_dashboard() -> dict:
    """The LLM app (serve/llm.py): vLLM's engine metrics and the app's Serve requests."""
    return dashboard("llm", [], _llm_panels())


def alert_rules() -> dict:
    """Prometheus rule file: worker restarts, slow chunks / tasks, Serve 5xx, unhealthy replicas, GPU memory."""
    rules = [
        {"alert": "AttractorWorkerRestarting",
         "expr": 'sum by (Name) (ray_actors{State="RESTARTING"}) > 0', "for": "1m",
         "labels": {"severity": "warning"},
         "annotations": {"summary": "Ray actor {{ $labels.Name }} is restarting (a worker or its node died)"}},
    ]
    for m in code_metrics():
        if m.kind == "histogram":
            title = "".join(w.capitalize() for w in m.name.split("_")[1:])
            rules.append({
                "alert": f"Attractor{title}Slow",
                "expr": f"histogram_quantile(0.95, sum by (le) (rate(ray_{m.name}_bucket[15m]))) > {P95_SLOW_S}",
                "for": "15m", "labels": {"severity": "warning"},
                "annotations": {"summary": f"{m.name}: p95 above {P95_SLOW_S} s for 15 minutes"}})
    rules += [
        {"alert": "AttractorPoolQueueStalled",
         "expr": ("sum by (subsystem) (ray_attractor_pool_tasks_waiting) > 0 and on (subsystem) "
                  f"sum by (subsystem) (delta(ray_attractor_pool_tasks_waiting[{QUEUE_STALL}])) >= 0"),
         "for": "15m", "labels": {"severity": "warning"},
         "annotations": {"summary": f"{{{{ $labels.subsystem }}}} pool: tasks waiting and the queue not falling "
                                    f"over {QUEUE_STALL} (growing, or no worker finishing)"}},
        {"alert": "AttractorRouterSwapAcceptanceCollapse",
         "expr": (f"min by (worker) (ray_attractor_router_ladder_swap_acceptance_min) < {SWAP_COLLAPSE} and on (worker) "
                  "sum by (worker) (increase(ray_attractor_router_ladder_tasks_total[30m])) > 0"),
         "for": "10m", "labels": {"severity": "warning"},
         "annotations": {"summary": "router ladder worker {{ $labels.worker }}: a neighbour pair accepts fewer than "
                                    f"{SWAP_COLLAPSE:.0%} of swaps (the ladder no longer exchanges; widen or "
                                    "densify the temperatures)"}},
        {"alert": "AttractorServe5xxRate",
         "expr": ('sum by (application) (rate(ray_serve_num_http_requests_total{status_code=~"5.."}[5m])) / '
                  f"sum by (application) (rate(ray_serve_num_http_requests_total[5m])) > {SERVE_5XX_RATIO}"),
         "for": "5m", "labels": {"severity": "critical"},
         "annotations": {"summary": "Serve app {{ $labels.application }}: more than 5 % of requests answered 5xx"}},
        {"alert": "AttractorServeReplicaUnhealthy",
         "expr": "min by (application, deployment) (ray_serve_deployment_replica_healthy) < 1", "for": "5m",
         "labels": {"severity": "warning"},
         "annotations": {"summary": "Serve {{ $labels.application }}/{{ $labels.deployment }} has an unhealthy replica"}},
        {"alert": "AttractorGpuMemoryNearFull",
         "expr": ("sum by (instance, GpuIndex) (ray_node_gram_used) / (sum by (instance, GpuIndex) (ray_node_gram_used)"
                  f" + sum by (instance, GpuIndex) (ray_node_gram_available)) > {GPU_MEMORY_FULL}"),
         "for": "10m", "labels": {"severity": "warning"},
         "annotations": {"summary": "GPU {{ $labels.GpuIndex }} on {{ $labels.instance }} is more than 92 % full"}},
    ]
    return {"groups": [{"name": "attractor", "rules": rules}]}


def write(out: Path = OUT) -> list[Path]:
    from actors.common.storage import atomic_write_text

    paths = [out / "rules.yml"]
    atomic_write_text(paths[0], "# generated by python -m cluster.monitoring write (cluster/monitoring/dashboards.py)\n"
                      + yaml.safe_dump(alert_rules(), sort_keys=False, width=200))
    for sub, dash in dashboards().items():
        path = out / "dashboards" / f"{sub}.json"
        atomic_write_text(path, json.dumps(dash, indent=2) + "\n")
        paths.append(path)
    return paths
