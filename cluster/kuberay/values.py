"""The one values file of the KubeRay manifests, as strict pydantic models (unknown keys and bad values are
errors naming the field, before anything is rendered).

    cluster/kuberay/values.yaml    the defaults (a CPU head, `gpu` and `cpu` worker groups, four Serve apps,
                                   four RayJobs, two volumes, and the LLM app's own RayService: `llm`)
    python -m cluster.kuberay render --values my.yaml --out manifests/
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from actors.common.config import Strict, load_yaml, validated
from actors.common.errors import InputError

__all__ = ["DEFAULT_VALUES", "AppValues", "GroupValues", "JobValues", "LLMValues", "Values", "load_values"]

DEFAULT_VALUES = Path(__file__).with_name("values.yaml")
QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$"   # a Kubernetes resource quantity
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?$"           # room for the suffixes added to names
Effect = Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


class Image(Strict):
    repository: str = Field("ghcr.io/attractor/attractor", min_length=1)
    tag: str = Field("0.1.0", pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")   # never "latest" by default
    pull_policy: Literal["IfNotPresent", "Always", "Never"] = "IfNotPresent"

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}"


class Resources(Strict):
    """Requests = limits (Guaranteed QoS: Ray sizes itself from the limits)."""

    cpu: str = Field(pattern=QUANTITY)
    memory: str = Field(pattern=QUANTITY)


class Toleration(Strict):
    key: str = Field(min_length=1)
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str | None = None
    effect: Effect = "NoSchedule"


class HeadValues(Strict):
    """The head pod: dashboard, GCS, Serve's controller and proxy, job drivers; no GPU."""

    num_cpus: int = Field(0, ge=0, le=256)   # Ray CPUs it advertises (0: no tasks or actors scheduled there)
    resources: Resources = Field(default_factory=lambda: Resources(cpu="4", memory="16Gi"))
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)


class GroupValues(Strict):
    """One autoscaling worker group."""

    min_replicas: int = Field(0, ge=0, le=1000)
    max_replicas: int = Field(4, ge=0, le=1000)
    replicas: int | None = Field(None, ge=0, le=1000)   # initial; default min_replicas
    gpus: int = Field(0, ge=0, le=8)                     # nvidia.com/gpu per pod
    resources: Resources
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)

    @model_validator(mode="after")
    def _bounds(self) -> GroupValues:
        if self.min_replicas > self.max_replicas:
            raise InputError("min_replicas", f"{self.min_replicas} > max_replicas {self.max_replicas}",
                             "min_replicas <= max_replicas")
        if self.replicas is not None and not self.min_replicas <= self.replicas <= self.max_replicas:
            raise InputError("replicas", f"{self.replicas} outside [{self.min_replicas}, {self.max_replicas}]",
                             "min_replicas <= replicas <= max_replicas")
        return self


class VolumeValues(Strict):
    size: str = Field(pattern=QUANTITY)
    mount_path: str = Field(pattern=r"^/[^\s]*$")
    storage_class: str | None = None                     # None: the cluster's default class
    access_mode: Literal["ReadWriteMany", "ReadWriteOnce"] = "ReadWriteMany"   # many pods write outputs


class AppValues(Strict):
    """One Serve application: `module` is a serve/ module with `build_app` (its ServeArgs take `args`)."""

    module: str = Field(pattern=r"^serve\.[a-z_][a-z0-9_]*$")
    route_prefix: str = Field(pattern=r"^/[a-z0-9/_-]*$")
    args: dict[str, Any] = Field(default_factory=dict)


class JobValues(Strict):
    """One RayJob: `python -m jobs.<key> <args>` (the arguments `ray job submit -- python -m ...` takes)."""

    args: list[str] = Field(default_factory=list)
    requires: str | None = None   # a repository file that must exist at render time (else the job is pending)


class ServeAuth(Strict):
    """The Serve apps' bearer token: a Kubernetes Secret created outside these manifests (never in them)."""

    enabled: bool = True
    secret_name: str = Field("attractor-api-token", pattern=DNS_LABEL)
    secret_key: str = Field("token", pattern=r"^[-._a-zA-Z0-9]+$")
    mount_path: str = "/etc/attractor/api-token"


class ServeValues(Strict):
    http_port: int = Field(8000, ge=1, le=65535)
    grpc_port: int = Field(9000, ge=1, le=65535)
    auth: ServeAuth = Field(default_factory=ServeAuth)
    apps: dict[str, AppValues] = Field(default_factory=dict)


class LLMValues(Strict):
    """The LLM app (serve/llm.py: vLLM through Ray Serve LLM) in its own RayService and image (Dockerfile.llm:
    vLLM pins its own torch and FastAPI). `args` are serve.llm's LLMServeArgs (models, model_source, model_id,
    profile, check_sources); the router app's `upstream` points at this service when enabled."""

    enabled: bool = True
    image: Image = Field(default_factory=lambda: Image(repository="ghcr.io/attractor/attractor-llm"))
    route_prefix: str = Field("/llm", pattern=r"^/[a-z0-9/_-]*$")
    args: dict[str, Any] = Field(default_factory=lambda: {"models": ["qwen2.5-0.5b-dummy.yaml"], "profile": "gpu"})
    worker_group: GroupValues = Field(default_factory=lambda: GroupValues(
        min_replicas=1, max_replicas=2, gpus=1, resources=Resources(cpu="8", memory="64Gi")))


class Values(Strict):
    name: str = Field("attractor", pattern=DNS_LABEL)
    namespace: str = Field("attractor", pattern=DNS_LABEL)
    ray_version: str = Field("2.60.0", pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$")
    image: Image = Field(default_factory=Image)
    ray_token_auth: bool = True                          # RayCluster authOptions.mode: token
    metrics_port: int = Field(8080, ge=1, le=65535)      # every node's Prometheus endpoint
    autoscaler_idle_timeout_s: int = Field(60, ge=0, le=86_400)
    head: HeadValues = Field(default_factory=HeadValues)
    worker_groups: dict[str, GroupValues]
    volumes: dict[str, VolumeValues]
    serve: ServeValues = Field(default_factory=ServeValues)
    jobs: dict[str, JobValues] = Field(default_factory=dict)
    jobs_cluster: Literal["shared", "own"] = "shared"    # RayJobs on the RayCluster, or each on its own cluster
    llm: LLMValues = Field(default_factory=lambda: LLMValues(enabled=False))

    @model_validator(mode="after")
    def _names(self) -> Values:
        for kind, names in (("worker_groups", self.worker_groups), ("volumes", self.volumes),
                            ("jobs", self.jobs), ("serve.apps", self.serve.apps)):
            for key in names:
                if not re.match(r"^[a-z][a-z0-9_]{0,30}$", key):
                    raise InputError(f"{kind}.{key}", "not a short lower-case name", "[a-z][a-z0-9_]{0,30}")
        return self


def load_values(path: str | Path | None = None, overrides: dict | None = None) -> Values:
    """Values from `path` (default cluster/kuberay/values.yaml) with dotted overrides; errors name the field."""
    from actors.common.config import apply_overrides

    p = Path(path) if path is not None else DEFAULT_VALUES
    if not p.is_file():
        raise InputError("--values", f"no such file {str(p)!r}", "a readable YAML file")
    raw = load_yaml(p.read_text()) or {}
    if not isinstance(raw, dict):
        raise InputError("--values", f"{p} holds a {type(raw).__name__}, not a mapping", "a YAML mapping")
    return validated(Values, apply_overrides(raw, overrides))
