"""KubeRay manifests rendered from one values file (cluster/kuberay/values.yaml):

    python -m cluster.kuberay render [--values FILE] [--set key=value ...] --out DIR

writes DIR/raycluster.yaml (CPU head, autoscaling `gpu` and `cpu` worker groups, Ray token auth),
DIR/rayjob-<job>.yaml (one per main job: `python -m jobs.<job> <args>`), DIR/rayservice.yaml (serveConfigV2
from `python -m serve.build`), DIR/rayservice-llm.yaml (the LLM app on its own image and GPU group; the
router app's upstream) and DIR/pvc-<volume>.yaml. Deployment guide: docs/deploy.md.
"""
from cluster.kuberay.render import render, write
from cluster.kuberay.values import Values, load_values

__all__ = ["Values", "load_values", "render", "write"]
