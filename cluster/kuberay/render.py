"""Render the KubeRay manifests from one values file: a RayCluster, a RayJob per main job, a RayService
whose serveConfigV2 comes from `python -m serve.build`, the LLM app's own RayService (its image holds
vLLM: Dockerfile.llm) and the PersistentVolumeClaims.

Every object is built here from the validated values (cluster/kuberay/values.py); nothing is copied
from a YAML template. `render(values)` returns {file name: object}; `write(objects, out)` writes them.
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from actors.common.storage import atomic_write_text
from cluster.kuberay.values import GroupValues, HeadValues, Image, Resources, Toleration, Values

__all__ = ["LLM_IMPORT_PATH", "ROOT", "cluster_spec", "entrypoint", "llm_serve_config", "llm_service_name",
           "llm_upstream", "pending_jobs", "render", "serve_config", "write"]

ROOT = Path(__file__).resolve().parents[2]   # the repository (the image's working directory)
API = "ray.io/v1"
UID = 1000   # the Dockerfile's non-root user
GRPC_SERVICERS = {"serve.validation": "serve.protos.validation_pb2_grpc.add_ValidationServiceServicer_to_server"}
LLM_IMPORT_PATH = "serve.llm:build_app"


def _labels(v: Values, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "attractor", "app.kubernetes.io/instance": v.name,
            "app.kubernetes.io/component": component}


def _meta(v: Values, name: str, component: str) -> dict:
    return {"name": name, "namespace": v.namespace, "labels": _labels(v, component)}


def _resources(r: Resources, gpus: int = 0) -> dict:
    amounts: dict[str, Any] = {"cpu": r.cpu, "memory": r.memory}
    if gpus:
        amounts["nvidia.com/gpu"] = gpus
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _tolerations(ts: list[Toleration]) -> list[dict]:
    return [t.model_dump(exclude_none=True) for t in ts]


def _volumes(v: Values, token: bool = True) -> tuple[list[dict], list[dict]]:
    """(pod volumes, container mounts): the PVCs, the Serve token Secret (read-only; `token`), Ray's /tmp/ray."""
    vols = [{"name": k, "persistentVolumeClaim": {"claimName": f"{v.name}-{k}"}} for k in v.volumes]
    mounts = [{"name": k, "mountPath": vol.mount_path} for k, vol in v.volumes.items()]
    if token and v.serve.auth.enabled:
        vols.append({"name": "api-token", "secret": {"secretName": v.serve.auth.secret_name, "defaultMode": 0o440}})
        mounts.append({"name": "api-token", "mountPath": v.serve.auth.mount_path, "readOnly": True})
    vols.append({"name": "ray-logs", "emptyDir": {}})
    mounts.append({"name": "ray-logs", "mountPath": "/tmp/ray"})
    return vols, mounts


def _pod(v: Values, container: str, resources: Resources, gpus: int, node_selector: dict, tolerations: list,
         ports: dict[str, int], image: Image, token: bool) -> dict:
    vols, mounts = _volumes(v, token)
    spec: dict[str, Any] = {
        "securityContext": {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": container, "image": image.ref, "imagePullPolicy": image.pull_policy,
            "resources": _resources(resources, gpus),
            "ports": [{"name": n, "containerPort": p} for n, p in ports.items()],
            "volumeMounts": mounts,
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        }],
        "volumes": vols,
    }
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    if tolerations:
        spec["tolerations"] = _tolerations(tolerations)
    return {"spec": spec}


def _head(v: Values, h: HeadValues, image: Image, token: bool) -> dict:
    ports = {"gcs-server": 6379, "dashboard": 8265, "client": 10001, "serve": v.serve.http_port,
             "grpc": v.serve.grpc_port, "metrics": v.metrics_port}
    return {
        "serviceType": "ClusterIP",
        "rayStartParams": {"num-cpus": str(h.num_cpus), "num-gpus": "0", "dashboard-host": "0.0.0.0",
                           "metrics-export-port": str(v.metrics_port)},
        "template": _pod(v, "ray-head", h.resources, 0, h.node_selector, h.tolerations, ports, image, token),
    }


def _group(v: Values, name: str, g: GroupValues, image: Image, token: bool) -> dict:
    start = {"metrics-export-port": str(v.metrics_port)}
    if g.gpus:
        start["num-gpus"] = str(g.gpus)
    return {
        "groupName": name, "minReplicas": g.min_replicas, "maxReplicas": g.max_replicas,
        "replicas": g.min_replicas if g.replicas is None else g.replicas,
        "rayStartParams": start,
        "template": _pod(v, "ray-worker", g.resources, g.gpus, g.node_selector, g.tolerations,
                         {"metrics": v.metrics_port}, image, token),
    }


def cluster_spec(v: Values, *, image: Image | None = None, groups: dict[str, GroupValues] | None = None,
                 token: bool = True) -> dict:
    """The RayCluster spec (also the RayService's rayClusterConfig and an own-cluster RayJob's); the LLM
    RayService's has its own image and worker groups, and no Serve token mounted (serve.llm reads none)."""
    image = image or v.image
    groups = v.worker_groups if groups is None else groups
    spec: dict[str, Any] = {
        "rayVersion": v.ray_version,
        "enableInTreeAutoscaling": True,
        "autoscalerOptions": {"upscalingMode": "Default", "idleTimeoutSeconds": v.autoscaler_idle_timeout_s,
                              "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
                                                  "capabilities": {"drop": ["ALL"]}}},
        "headGroupSpec": _head(v, v.head, image, token),
        "workerGroupSpecs": [_group(v, n, g, image, token) for n, g in groups.items()],
    }
    if v.ray_token_auth:
        spec["authOptions"] = {"mode": "token"}   # KubeRay creates the token Secret and sets RAY_AUTH_* in every pod
    return spec


def _app_args(v: Values, app: str) -> dict:
    """The app's args (auth_token_file added), checked by its own builder: a typo is an error now, not a
    failed deployment later."""
    import importlib

    from actors.common.errors import from_validation

    a = v.serve.apps[app]
    args = dict(a.args)
    if a.module == "serve.router" and v.llm.enabled and "upstream" not in args:
        args["upstream"] = llm_upstream(v)   # the pass-through's LLM app: the LLM RayService's Serve Service
    if v.serve.auth.enabled:
        args["auth_token_file"] = f"{v.serve.auth.mount_path}/{v.serve.auth.secret_key}"
    try:
        importlib.import_module(a.module).build_app(args)
    except ValidationError as exc:
        raise from_validation(exc, f"serve.apps.{app}.args.") from None
    return args


def serve_config(v: Values) -> dict:
    """The Serve config of the RayService: `python -m serve.build` of every app (proxy on 0.0.0.0 inside the
    pod: the Kubernetes Service is the way in, and the apps require the bearer token), each app then named,
    given its route prefix and switched to its `build_app` with the values' args. The deployments' options
    come from those args through the builder (so serve build's default-argument block is not kept: it
    would override them)."""
    from serve.build import build_config

    apps = v.serve.apps
    args = {name: _app_args(v, name) for name in apps}   # checked before the (slower) serve build
    servicers = [GRPC_SERVICERS[a.module] for a in apps.values() if a.module in GRPC_SERVICERS]
    config = build_config([f"{a.module}:app" for a in apps.values()], host="0.0.0.0", grpc_servicers=servicers)
    config["http_options"]["port"] = v.serve.http_port
    config.setdefault("grpc_options", {})["port"] = v.serve.grpc_port
    for (name, a), entry in zip(apps.items(), config["applications"], strict=True):
        assert entry["import_path"] == f"{a.module}:app", entry
        entry.pop("deployments", None)
        entry.update(name=name, route_prefix=a.route_prefix, import_path=f"{a.module}:build_app",
                     args=args[name])
    return config


def llm_service_name(v: Values) -> str:
    """The LLM RayService's name; KubeRay names its Serve Service `<name>-serve-svc`."""
    return f"{v.name}-llm"


def llm_upstream(v: Values) -> str:
    """The LLM app's in-cluster base URL: KubeRay's Serve Service of the LLM RayService (`<rayservice>-serve-svc`,
    kuberay ray-operator/controllers/ray/utils/util.go GenerateServeServiceName), port `serve`, the route prefix."""
    prefix = "" if v.llm.route_prefix == "/" else v.llm.route_prefix.rstrip("/")
    return f"http://{llm_service_name(v)}-serve-svc.{v.namespace}.svc:{v.serve.http_port}{prefix}"


def _llm_args(v: Values) -> dict:
    """The LLM app's args, checked as its builder would check them (LLMServeArgs, then every model's
    EngineSpec, profile and accelerator) but without building the Ray Serve LLM app (that starts Ray) and
    without the model directories (they live on the cluster's volume: the pod checks them when it starts)."""
    from actors.common.config import validated
    from actors.common.errors import InputError
    from serve.common import parse_cli_args
    from serve.llm import LLMServeArgs, engine_specs

    args = dict(v.llm.args)
    cfg = validated(LLMServeArgs, parse_cli_args(args), prefix="llm.args.")
    try:
        engine_specs(cfg.model_copy(update={"check_sources": False}))
    except InputError as exc:
        raise InputError(f"llm.args.{exc.field}", exc.message, exc.allowed) from None
    return args


def llm_serve_config(v: Values) -> dict:
    """The LLM RayService's Serve config: one application `llm` (`serve.llm:build_app` with the values' args),
    the proxy on 0.0.0.0 inside the pod. Written directly, not by `serve build`: building a Ray Serve LLM
    app needs a Ray runtime. No bearer token: serve.llm has no token check (docs/deploy.md)."""
    return {"proxy_location": "EveryNode", "http_options": {"host": "0.0.0.0", "port": v.serve.http_port},
            "applications": [{"name": "llm", "route_prefix": v.llm.route_prefix, "import_path": LLM_IMPORT_PATH,
                              "args": _llm_args(v)}]}


def pending_jobs(v: Values) -> list[str]:
    """Jobs of the values whose `requires` file is missing (not rendered)."""
    return [k for k, j in v.jobs.items() if j.requires is not None and not (ROOT / j.requires).is_file()]


def entrypoint(job: str, args: list[str]) -> str:
    """`python -m jobs.<job> <args>`: what `ray job submit -- ...` runs."""
    return shlex.join(["python", "-m", f"jobs.{job}", *args])


def _rayjob(v: Values, job: str) -> dict:
    spec: dict[str, Any] = {"entrypoint": entrypoint(job, v.jobs[job].args), "submissionMode": "K8sJobMode"}
    if v.jobs_cluster == "shared":
        spec["clusterSelector"] = {"ray.io/cluster": v.name}
    else:
        spec.update(rayClusterSpec=cluster_spec(v), shutdownAfterJobFinishes=True, ttlSecondsAfterFinished=3600)
    return {"apiVersion": API, "kind": "RayJob", "metadata": _meta(v, f"{v.name}-{job.replace('_', '-')}", "job"),
            "spec": spec}


def _pvc(v: Values, key: str) -> dict:
    vol = v.volumes[key]
    spec: dict[str, Any] = {"accessModes": [vol.access_mode], "resources": {"requests": {"storage": vol.size}}}
    if vol.storage_class:
        spec["storageClassName"] = vol.storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": _meta(v, f"{v.name}-{key}", "storage"),
            "spec": spec}


def render(v: Values, *, with_service: bool = True) -> dict[str, dict]:
    """{file name: manifest}; `with_service=False` skips the RayServices (no `serve build` subprocess)."""
    out = {f"pvc-{k}.yaml": _pvc(v, k) for k in v.volumes}
    out["raycluster.yaml"] = {"apiVersion": API, "kind": "RayCluster", "metadata": _meta(v, v.name, "cluster"),
                              "spec": cluster_spec(v)}
    pending = set(pending_jobs(v))
    for job in v.jobs:
        if job not in pending:
            out[f"rayjob-{job.replace('_', '-')}.yaml"] = _rayjob(v, job)
    if with_service and v.serve.apps:
        out["rayservice.yaml"] = {
            "apiVersion": API, "kind": "RayService", "metadata": _meta(v, f"{v.name}-serve", "serve"),
            "spec": {"serveConfigV2": yaml.safe_dump(serve_config(v), sort_keys=False),
                     "upgradeStrategy": {"type": "NewCluster"},   # zero-downtime: the new cluster takes over when ready
                     "rayClusterConfig": cluster_spec(v)}}
    if with_service and v.llm.enabled:
        out["rayservice-llm.yaml"] = {
            "apiVersion": API, "kind": "RayService", "metadata": _meta(v, llm_service_name(v), "llm"),
            "spec": {"serveConfigV2": yaml.safe_dump(llm_serve_config(v), sort_keys=False),
                     "upgradeStrategy": {"type": "NewCluster"},
                     "rayClusterConfig": cluster_spec(v, image=v.llm.image, groups={"gpu": v.llm.worker_group},
                                                      token=False)}}
    return out


def write(objects: dict[str, dict], out: Path) -> list[Path]:
    """Each manifest as DIR/<file> (atomic, 0644); the paths written."""
    paths = []
    for name, obj in sorted(objects.items()):
        path = Path(out) / name
        atomic_write_text(path, "# generated by python -m cluster.kuberay render; edit values.yaml, not this file\n"
                          + yaml.safe_dump(obj, sort_keys=False))
        paths.append(path)
    return paths
