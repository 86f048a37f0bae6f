"""Prometheus scrape configs, alerting rules and Grafana dashboards for attractor (docs/deploy.md).

    python -m cluster.monitoring write     # regenerate rules.yml and dashboards/*.json from dashboards.py

`catalog.py` reads the metric names the code defines (BaseWorker's `attractor_<subsystem>_<name>`, direct
`ray.util.metrics` literals) and the Ray built-ins its own Grafana dashboards query; tests check every
panel and alert against it.
"""
