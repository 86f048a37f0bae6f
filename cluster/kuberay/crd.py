"""Offline validation of rendered manifests against the KubeRay CRDs (what KubeRay's own pre-commit does with
openapi2jsonschema + kubeconform, here with `jsonschema`).

A CRD version's `openAPIV3Schema` becomes a JSON Schema: `x-kubernetes-*` extensions are dropped (CEL rules
included: they need an API server), `x-kubernetes-int-or-string` becomes integer-or-string, `nullable` adds
null, and an object that lists its properties (and does not say `x-kubernetes-preserve-unknown-fields`)
refuses others — kubectl's strict field validation, so a misspelled field is an error, not silently pruned.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

__all__ = ["CRD_DIR", "crd_schemas", "errors", "to_json_schema"]

CRD_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "kuberay-crds"
_VALUE_KEYS = {"enum", "default", "example"}   # literal values, not schemas


def to_json_schema(node: Any) -> Any:
    """One openAPIV3Schema node (recursively) as JSON Schema."""
    if isinstance(node, list):
        return [to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key == "nullable":
            continue
        out[key] = value if key in _VALUE_KEYS else (
            {k: to_json_schema(v) for k, v in value.items()} if key == "properties" else to_json_schema(value))
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields") \
            and "additionalProperties" not in node:
        out["additionalProperties"] = False
    return out


def crd_schemas(crd_dir: Path = CRD_DIR) -> dict[tuple[str, str], dict]:
    """{(apiVersion, kind): JSON Schema} for every served version of every CRD in `crd_dir`."""
    return _schemas(Path(crd_dir).resolve())


@functools.cache
def _schemas(crd_dir: Path) -> dict[tuple[str, str], dict]:
    if not crd_dir.is_dir():
        raise FileNotFoundError(f"no KubeRay CRDs at {crd_dir} (../shared/data/kuberay-crds beside the checkout)")
    out = {}
    for path in sorted(crd_dir.glob("*.yaml")):
        crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 (3 MB)
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served", True):
                schema = to_json_schema(version["schema"]["openAPIV3Schema"])
                schema["$schema"] = "http://json-schema.org/draft-07/schema#"
                out[(f"{group}/{version['name']}", kind)] = schema
    return out


def errors(manifest: dict, crd_dir: Path = CRD_DIR) -> list[str]:
    """The schema violations of one ray.io manifest ([] when valid), each as 'path: message'."""
    key = (manifest.get("apiVersion"), manifest.get("kind"))
    schemas = crd_schemas(crd_dir)
    if key not in schemas:
        return [f"no CRD for {key}"]
    validator = _validator(key, Path(crd_dir).resolve())
    return [f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
            for e in sorted(validator.iter_errors(manifest), key=lambda e: list(map(str, e.absolute_path)))]


@functools.cache
def _validator(key: tuple[str, str], crd_dir: Path):
    from jsonschema import Draft7Validator

    return Draft7Validator(crd_schemas(crd_dir)[key])
