"""cluster/kuberay: the manifests rendered from the default values (issue 16), checked offline.

- what the values say ends up where KubeRay reads it (head without GPUs, autoscaling GPU group with
  nvidia.com/gpu, tolerations, node selectors, PVCs mounted, Ray token auth, the image tag);
- every manifest validates against the KubeRay v1.7 CRD schemas (../shared/data/kuberay-crds, their
  openAPIV3Schema converted to JSON Schema) and core objects against basic checks;
- every RayService import_path resolves to a real module and builder that takes its args (the LLM app's
  args through serve.llm's LLMServeArgs and engine_specs, without building the Ray Serve LLM app);
- the router app's upstream is the LLM RayService's Serve Service (KubeRay's `<rayservice>-serve-svc`);
- every RayJob entrypoint parses with that job's own argument parser.
"""
from __future__ import annotations

import argparse
import importlib
import re
import shlex
from pathlib import Path
from unittest import mock

import pytest
import yaml

from actors.common.errors import InputError
from cluster.kuberay import load_values, render
from cluster.kuberay.__main__ import main as render_main
from cluster.kuberay.render import pending_jobs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rendered_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("manifests")
    assert render_main(["render", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def manifests(rendered_dir) -> dict[str, dict]:
    """What `python -m cluster.kuberay render` wrote, by file name."""
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(rendered_dir.iterdir())}


@pytest.fixture(scope="module")
def own_cluster_jobs() -> dict[str, dict]:
    return render(load_values(overrides={"jobs_cluster": "own"}), with_service=False)


def test_cluster_follows_the_values(manifests):
    v = load_values()
    rc = manifests["raycluster.yaml"]
    spec = rc["spec"]
    assert rc["kind"] == "RayCluster" and spec["authOptions"] == {"mode": "token"}
    assert spec["rayVersion"] == v.ray_version and spec["enableInTreeAutoscaling"] is True
    import ray

    assert ray.__version__ == v.ray_version   # the image's Ray (pyproject pin) is the cluster's
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == str(v.head.num_cpus) and head["rayStartParams"]["num-gpus"] == "0"
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    (hc,) = head["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in hc["resources"]["limits"]
    assert hc["image"] == f"{v.image.repository}:{v.image.tag}"
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"gpu", "cpu"}
    gpu = groups["gpu"]
    (gc,) = gpu["template"]["spec"]["containers"]
    assert gc["resources"]["limits"]["nvidia.com/gpu"] == 1 and gpu["rayStartParams"]["num-gpus"] == "1"
    assert (gpu["minReplicas"], gpu["maxReplicas"]) == (v.worker_groups["gpu"].min_replicas,
                                                        v.worker_groups["gpu"].max_replicas)
    assert gpu["template"]["spec"]["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists",
                                                       "effect": "NoSchedule"}]
    assert gpu["template"]["spec"]["nodeSelector"] == {"attractor.io/pool": "gpu"}
    assert "nvidia.com/gpu" not in groups["cpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    for pod in (head["template"], gpu["template"], groups["cpu"]["template"]):
        mounts = {m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
        assert {"/data/outputs", "/data/checkpoints", v.serve.auth.mount_path} <= mounts
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    for key in v.volumes:
        pvc = manifests[f"pvc-{key}.yaml"]
        assert pvc["kind"] == "PersistentVolumeClaim" and pvc["metadata"]["name"] == f"attractor-{key}"


def test_jobs_and_pending(manifests, own_cluster_jobs):
    v = load_values()
    expected = {"sweep", "te_network", "validate"} | ({"train"} if (ROOT / "jobs" / "train.py").exists() else set())
    rendered = {k[len("rayjob-"):-len(".yaml")].replace("-", "_") for k in manifests if k.startswith("rayjob-")}
    assert rendered == expected
    assert set(pending_jobs(v)) == set(v.jobs) - expected
    for name in rendered:
        job = manifests[f"rayjob-{name.replace('_', '-')}.yaml"]
        assert job["spec"]["clusterSelector"] == {"ray.io/cluster": v.name}
        assert shlex.split(job["spec"]["entrypoint"])[:3] == ["python", "-m", f"jobs.{name}"]
        own = own_cluster_jobs[f"rayjob-{name.replace('_', '-')}.yaml"]["spec"]
        assert own["rayClusterSpec"] == manifests["raycluster.yaml"]["spec"] and own["shutdownAfterJobFinishes"]


def test_bad_values_name_the_field(tmp_path):
    for overrides, field in (({"worker_groups.gpu.min_replicas": 9}, "worker_groups.gpu.min_replicas"),
                             ({"image.tag": "a b"}, "image.tag"), ({"head.resources.cpu": "lots"}, "head.resources.cpu"),
                             ({"workers": 1}, "workers")):
        with pytest.raises(InputError) as err:
            load_values(overrides=overrides)
        assert err.value.field == field, err.value
    assert render_main(["render", "--out", str(tmp_path), "--set", "serve.apps.te.args.bogus=1"]) == 2


def test_cli_writes_what_render_returns(rendered_dir, own_cluster_jobs):
    expected = render(load_values(), with_service=False)
    for name, obj in expected.items():
        path = rendered_dir / name
        assert yaml.safe_load(path.read_text()) == obj and path.stat().st_mode & 0o777 == 0o644
    assert {p.name for p in rendered_dir.iterdir()} == {*expected, "rayservice.yaml", "rayservice-llm.yaml"}


# ---- the RayService's apps and the RayJobs' entrypoints -------------------------------------------------
def serve_apps(manifests) -> list[dict]:
    return yaml.safe_load(manifests["rayservice.yaml"]["spec"]["serveConfigV2"])["applications"]


def test_serve_config_comes_from_serve_build(manifests):
    config = yaml.safe_load(manifests["rayservice.yaml"]["spec"]["serveConfigV2"])
    v = load_values()
    assert config["http_options"] == {"host": "0.0.0.0", "port": v.serve.http_port}
    assert config["grpc_options"]["port"] == v.serve.grpc_port
    assert [a["name"] for a in config["applications"]] == list(v.serve.apps)
    assert len({a["route_prefix"] for a in config["applications"]}) == len(v.serve.apps)


def test_every_import_path_is_a_builder_taking_its_args(manifests):
    from ray.serve import Application

    for app in serve_apps(manifests):
        module, _, attr = app["import_path"].partition(":")
        builder = getattr(importlib.import_module(module), attr)
        assert isinstance(builder(app["args"]), Application), app["name"]
        assert app["args"]["auth_token_file"] == "/etc/attractor/api-token/token"


class _Parsed(Exception):
    pass


def parse_with_job_parser(job: str, argv: list[str]) -> argparse.Namespace:
    """The Namespace the job's own parser (built in its main()) makes of argv; argparse errors raise
    SystemExit as they would in the pod. Nothing past parsing runs."""
    real = argparse.ArgumentParser.parse_args

    def capture(self, args=None, namespace=None):
        raise _Parsed(real(self, args, namespace))

    with mock.patch.object(argparse.ArgumentParser, "parse_args", capture):
        try:
            importlib.import_module(f"jobs.{job}").main(argv)
        except _Parsed as parsed:
            return parsed.args[0]
    raise AssertionError(f"jobs.{job}.main returned without parsing its arguments")


def test_every_entrypoint_parses_with_its_jobs_parser(manifests):
    jobs = [m for k, m in manifests.items() if k.startswith("rayjob-")]
    assert jobs
    for job in jobs:
        python, dash_m, module, *argv = shlex.split(job["spec"]["entrypoint"])
        assert (python, dash_m) == ("python", "-m") and module.startswith("jobs.")
        ns = parse_with_job_parser(module.removeprefix("jobs."), argv)
        assert ns.out.startswith("/data/")
        if getattr(ns, "config", None):
            assert (ROOT / ns.config).is_file(), ns.config   # a preset shipped in the image
    with pytest.raises(SystemExit):
        parse_with_job_parser("sweep", ["--config", "x.yaml"])   # the check is real: --out is required


# ---- the KubeRay v1.7 CRD schemas and core objects ------------------------------------------------------
DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$")


@pytest.fixture(scope="module")
def crds():
    from cluster.kuberay.crd import CRD_DIR, crd_schemas

    if not CRD_DIR.is_dir():
        pytest.fail(f"the KubeRay CRDs are missing: {CRD_DIR} (../shared/data/kuberay-crds beside the checkout)")
    schemas = crd_schemas()
    assert {("ray.io/v1", k) for k in ("RayCluster", "RayJob", "RayService")} <= set(schemas)
    return schemas


def core_errors(obj: dict) -> list[str]:
    """Basic checks of a core object (a PersistentVolumeClaim): what the API server would refuse first."""
    errs = []
    if obj.get("apiVersion") != "v1" or obj.get("kind") != "PersistentVolumeClaim":
        return [f"unexpected core object {obj.get('apiVersion')}/{obj.get('kind')}"]
    if set(obj) - {"apiVersion", "kind", "metadata", "spec"}:
        errs.append(f"unknown top-level keys {set(obj) - {'apiVersion', 'kind', 'metadata', 'spec'}}")
    spec = obj.get("spec", {})
    if set(spec) - {"accessModes", "resources", "storageClassName", "volumeMode", "selector", "dataSource"}:
        errs.append(f"unknown spec keys {set(spec)}")
    modes = spec.get("accessModes") or []
    if not modes or not set(modes) <= {"ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"}:
        errs.append(f"accessModes {modes}")
    if not QUANTITY.match(str(spec.get("resources", {}).get("requests", {}).get("storage", ""))):
        errs.append("resources.requests.storage is not a quantity")
    return errs


def all_errors(obj: dict) -> list[str]:
    from cluster.kuberay.crd import errors

    meta = obj.get("metadata", {})
    errs = [] if DNS_1123.match(meta.get("name", "")) and len(meta["name"]) <= 63 else [f"metadata.name {meta}"]
    if not DNS_1123.match(meta.get("namespace", "")):
        errs.append(f"metadata.namespace {meta}")
    return errs + (errors(obj) if obj["apiVersion"].startswith("ray.io/") else core_errors(obj))


def test_every_manifest_validates(crds, manifests, own_cluster_jobs):
    objects = {**manifests, **{f"own/{k}": v for k, v in own_cluster_jobs.items()}}
    kinds = {o["kind"] for o in objects.values()}
    assert kinds == {"RayCluster", "RayJob", "RayService", "PersistentVolumeClaim"}
    assert {"rayservice.yaml", "rayservice-llm.yaml"} <= set(objects)
    for name, obj in objects.items():
        assert all_errors(obj) == [], name


def test_schema_violations_are_caught(crds, manifests):
    """The validation is real: a typo, a wrong type, a bad enum, a missing required field all fail."""
    import copy

    for mutate, expected in (
            (lambda c: c["spec"]["workerGroupSpecs"][0].__setitem__("maxReplicas", "four"), "not of type 'integer'"),
            (lambda c: c["spec"]["headGroupSpec"].__setitem__("rayStartParam", {}), "rayStartParam"),
            (lambda c: c["spec"]["authOptions"].__setitem__("mode", "tokens"), "is not one of"),
            (lambda c: c["spec"]["workerGroupSpecs"][0].pop("template"), "'template' is a required property"),
            (lambda c: c["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
             .__setitem__("cpu", [1]), "is not valid under any of the given schemas"),
            (lambda c: c["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0].__setitem__("imagePullPolcy", "x"),
             "imagePullPolcy")):
        broken = copy.deepcopy(manifests["raycluster.yaml"])
        mutate(broken)
        errs = all_errors(broken)
        assert any(expected in e for e in errs), (expected, errs)
    pvc = copy.deepcopy(manifests["pvc-outputs.yaml"])
    pvc["spec"]["resources"]["requests"]["storage"] = "lots"
    assert all_errors(pvc)


def test_serve_config_v2_is_a_valid_serve_deploy_config(manifests):
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(yaml.safe_load(manifests["rayservice.yaml"]["spec"]["serveConfigV2"]))
    assert {a.name for a in config.applications} == set(load_values().serve.apps)
    llm = ServeDeploySchema.model_validate(yaml.safe_load(manifests["rayservice-llm.yaml"]["spec"]["serveConfigV2"]))
    assert [a.name for a in llm.applications] == ["llm"]


# ---- the LLM app's own RayService ---------------------------------------------------------------------------
def test_llm_rayservice_follows_the_values(manifests):
    """Its own cluster on the LLM image (Dockerfile.llm) with the GPU worker group of `llm.worker_group`, the
    same non-root uid, Ray token auth; no Serve token mounted (serve.llm reads none)."""
    v = load_values()
    svc = manifests["rayservice-llm.yaml"]
    assert svc["kind"] == "RayService" and svc["metadata"]["name"] == f"{v.name}-llm"
    spec = svc["spec"]["rayClusterConfig"]
    assert spec["rayVersion"] == v.ray_version and spec["authOptions"] == {"mode": "token"}
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0"
    (group,) = spec["workerGroupSpecs"]
    g = v.llm.worker_group
    assert (group["minReplicas"], group["maxReplicas"]) == (g.min_replicas, g.max_replicas)
    assert group["rayStartParams"]["num-gpus"] == str(g.gpus) == "1"
    for pod in (head["template"], group["template"]):
        (c,) = pod["spec"]["containers"]
        assert c["image"] == f"{v.llm.image.repository}:{v.llm.image.tag}" != f"{v.image.repository}:{v.image.tag}"
        assert pod["spec"]["securityContext"]["runAsUser"] == 1000 and pod["spec"]["securityContext"]["runAsNonRoot"]
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert "/data/checkpoints" in mounts and v.serve.auth.mount_path not in mounts
    (gc,) = group["template"]["spec"]["containers"]
    assert gc["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert group["template"]["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_llm_app_args_are_what_serve_llm_accepts(manifests):
    """import_path serve.llm:build_app resolves to the builder; its args pass LLMServeArgs and engine_specs
    (the models' EngineSpecs, the gpu profile) without starting Ray."""
    from serve.llm import LLMServeArgs, build_app, engine_specs

    config = yaml.safe_load(manifests["rayservice-llm.yaml"]["spec"]["serveConfigV2"])
    (app,) = config["applications"]
    module, _, attr = app["import_path"].partition(":")
    assert getattr(importlib.import_module(module), attr) is build_app
    assert app["route_prefix"] == load_values().llm.route_prefix and config["http_options"]["host"] == "0.0.0.0"
    assert "auth_token_file" not in app["args"]
    args = LLMServeArgs.model_validate(app["args"])
    specs = engine_specs(args.model_copy(update={"check_sources": False}))
    assert specs and all(not s.on_cpu for s in specs)
    import ray

    assert not ray.is_initialized()   # nothing above (nor rendering) started Ray


def test_router_upstream_is_the_llm_services_url(manifests):
    """KubeRay names a RayService's Serve Service `<rayservice name>-serve-svc` (ray-operator utils
    GenerateServeServiceName); it serves the head's `serve` port; the LLM app lives under its route prefix."""
    v = load_values()
    svc = manifests["rayservice-llm.yaml"]
    name, namespace = svc["metadata"]["name"], svc["metadata"]["namespace"]
    ports = {p["name"]: p["containerPort"] for p in
             svc["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]}
    config = yaml.safe_load(svc["spec"]["serveConfigV2"])
    prefix = config["applications"][0]["route_prefix"]
    (router,) = [a for a in serve_apps(manifests) if a["import_path"] == "serve.router:build_app"]
    assert router["args"]["upstream"] == f"http://{name}-serve-svc.{namespace}.svc:{ports['serve']}{prefix}"
    assert router["args"]["upstream"] == "http://attractor-llm-serve-svc.attractor.svc:8000/llm"
    assert config["http_options"]["port"] == ports["serve"] == v.serve.http_port


def test_llm_values_errors_and_switch():
    from cluster.kuberay.render import _app_args, llm_serve_config

    for overrides, field in (({"llm.args.profile": "tpu"}, "llm.args.profile"),
                             ({"llm.args.bogus": 1}, "llm.args.bogus"),
                             ({"llm.args.models": ["tiny.yaml"]}, "llm.args.profile"),   # a CPU preset on gpu
                             ({"llm.args.models": ["nope.yaml"]}, "llm.args.models"),
                             ({"llm.worker_group.min_replicas": 3}, "llm.worker_group.min_replicas")):
        with pytest.raises(InputError) as err:
            llm_serve_config(load_values(overrides=overrides))
        assert err.value.field == field, (overrides, err.value)
    off = load_values(overrides={"llm.enabled": False})
    assert "upstream" not in _app_args(off, "router")
    assert "rayservice-llm.yaml" not in render(off, with_service=False)
    mine = load_values(overrides={"serve.apps.router.args.upstream": "http://my-llm:8000"})
    assert _app_args(mine, "router")["upstream"] == "http://my-llm:8000"   # an explicit upstream is kept
