"""Offline validation of the Kubernetes manifests: kustomize build, then every object checked.

- Kubernetes' own kinds: ``kubernetes_validate`` in strict mode (unknown fields are errors)
  against the newest Kubernetes version it bundles.
- Custom resources (KEDA, Strimzi): the ``openAPIV3Schema`` of their CRDs committed under
  ``k8s/crds/``, made to reject unknown fields where the API server's strict field validation
  would (every object schema that neither lists ``additionalProperties`` nor says
  ``x-kubernetes-preserve-unknown-fields``); the metadata as Kubernetes' ObjectMeta.
- winnow's policies over the whole build (:mod:`winnow.ops.deploy.k8s_policy`).

What this cannot see without a cluster: admission webhooks and CEL rules
(``x-kubernetes-validations``), whether images, storage classes, GPUs, KEDA, Strimzi or
Prometheus exist, and whether the pods actually become ready.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import structlog
import yaml

from winnow.ops.deploy.k8s_policy import policy_problems

log = structlog.get_logger(__name__)
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: the Strimzi CRDs are large

KUSTOMIZE_VERSION = "v5.5.0"
KUSTOMIZE_CACHE = Path.home() / ".cache" / "winnow" / "bin"
INSTALL_HINT = (f"install kubectl (it bundles kustomize), or build kustomize into winnow's cache: "
                f"GOBIN={KUSTOMIZE_CACHE} go install sigs.k8s.io/kustomize/kustomize/v5@{KUSTOMIZE_VERSION}")


class KustomizeError(RuntimeError):
    """kustomize is missing or refused a kustomization."""


def kustomize_command() -> list[str]:
    """``kubectl kustomize``, else ``kustomize build`` from PATH or winnow's cache."""
    kubectl = shutil.which("kubectl")
    if kubectl:
        return [kubectl, "kustomize"]
    kustomize = shutil.which("kustomize") or shutil.which("kustomize", path=str(KUSTOMIZE_CACHE))
    if kustomize:
        return [kustomize, "build"]
    raise KustomizeError(f"neither kubectl nor kustomize found on PATH or in {KUSTOMIZE_CACHE}; {INSTALL_HINT}")


def kustomize_build(directory: Path) -> list[dict[str, Any]]:
    """The objects ``kubectl apply -k directory`` would send."""
    command = [*kustomize_command(), str(directory)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as exc:
        raise KustomizeError(f"{' '.join(command)} took over {exc.timeout}s") from exc
    if result.returncode != 0:
        raise KustomizeError(f"{' '.join(command)} failed: {result.stderr.strip()}")
    return [doc for doc in yaml.load_all(result.stdout, Loader=YAML_LOADER) if doc]


def object_name(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind', '?')}/{(obj.get('metadata') or {}).get('name', '?')}"


def _path(parts) -> str:
    return ".".join(str(part) for part in parts) or "(root)"


# ---------------------------------------------------------------------------------------------
# Kubernetes' own kinds


@cache
def kubernetes_version() -> str:
    """The newest Kubernetes version whose schemas kubernetes_validate bundles."""
    from kubernetes_validate.utils import latest_version

    return latest_version()


@cache
def _builtin_validator(api_version: str, kind: str) -> jsonschema.Validator | None:
    """kubernetes_validate's strict schema for a kind, as its ``validate`` finds it, built once
    (its ``validate`` reads the multi-megabyte definitions file on every call)."""
    import referencing
    from kubernetes_validate.utils import schema_contents

    version = kubernetes_version()
    directory = f"kubernetes-json-schema/v{version}-local-strict"
    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)  # rbac.authorization.k8s.io/v1 -> rbac-v1
    try:
        schema = schema_contents(f"{directory}/{kind.lower()}-{group}.json", version)
    except FileNotFoundError:
        return None
    definitions = _definitions(directory)
    registry = referencing.Resource.from_contents(schema) @ (definitions @ referencing.Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


@cache
def _definitions(directory: str):
    import referencing
    from kubernetes_validate.utils import schema_contents

    return referencing.Resource.from_contents(schema_contents(f"{directory}/_definitions.json", kubernetes_version()))


def builtin_problems(obj: dict[str, Any]) -> list[str]:
    """Kubernetes' strict schema errors of one object (unknown fields included)."""
    validator = _builtin_validator(str(obj.get("apiVersion", "")), str(obj.get("kind", "")))
    if validator is None:
        return [f"unknown kind: Kubernetes {kubernetes_version()} has no {obj.get('kind')} in {obj.get('apiVersion')}"]
    return [f"{_path(error.absolute_path)}: {error.message} (Kubernetes {kubernetes_version()})"
            for error in _sorted(validator.iter_errors(obj))]


def _sorted(errors) -> list[jsonschema.ValidationError]:
    return sorted(errors, key=lambda error: [str(part) for part in error.absolute_path])


# ---------------------------------------------------------------------------------------------
# Custom resources


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI v3 CRD schema as JSON Schema that rejects the fields the API server would."""
    out = copy.deepcopy(schema)
    _tighten(out)
    return out


def _tighten(node: Any) -> None:
    if not isinstance(node, dict):
        return
    if node.pop("nullable", False) and "type" in node:
        node["type"] = [node["type"], "null"]
    preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
    is_object = node.get("type") in ("object", ["object", "null"])
    if is_object and "properties" in node and "additionalProperties" not in node and not preserve:
        node["additionalProperties"] = False
    for child in (node.get("properties") or {}).values():
        _tighten(child)
    for key in ("items", "additionalProperties", "not"):
        _tighten(node.get(key))
    for key in ("anyOf", "oneOf", "allOf"):
        for child in node.get(key) or ():
            _tighten(child)


@dataclass(frozen=True)
class CustomResourceSchemas:
    """The committed CRDs' schemas, by (apiVersion, kind)."""

    validators: dict[tuple[str, str], jsonschema.Draft4Validator]
    groups: frozenset[str]

    @classmethod
    def load(cls, directory: Path) -> CustomResourceSchemas:
        validators, groups = {}, set()
        for path in sorted(directory.glob("*.yaml")):
            for crd in yaml.load_all(path.read_text(), Loader=YAML_LOADER):
                if not crd or crd.get("kind") != "CustomResourceDefinition":
                    continue
                spec = crd["spec"]
                groups.add(spec["group"])
                for version in spec["versions"]:
                    schema = strict_schema(version["schema"]["openAPIV3Schema"])
                    schema.setdefault("properties", {}).pop("metadata", None)  # checked as ObjectMeta
                    validators[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = \
                        jsonschema.Draft4Validator(schema)
        return cls(validators, frozenset(groups))

    def covers(self, obj: dict[str, Any]) -> bool:
        return str(obj.get("apiVersion", "")).split("/")[0] in self.groups

    def problems(self, obj: dict[str, Any]) -> list[str]:
        key = (obj.get("apiVersion", ""), obj.get("kind", ""))
        validator = self.validators.get(key)
        if validator is None:
            known = ", ".join(f"{kind} {api}" for api, kind in sorted(self.validators))
            return [f"no CRD in k8s/crds serves {key[1]} {key[0]} (known: {known})"]
        body = {k: v for k, v in obj.items() if k != "metadata"}
        problems = [f"{_path(error.absolute_path)}: {error.message}" for error in _sorted(validator.iter_errors(body))]
        # metadata is ObjectMeta whatever the CRD says: validate it as the API server does
        problems += [f"metadata.{p}" for p in builtin_problems(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj.get("metadata") or {}})]
        return problems


# ---------------------------------------------------------------------------------------------
# Everything


def validate_objects(objects: list[dict[str, Any]], crds: CustomResourceSchemas,
                     external: frozenset[tuple[str, str]]) -> list[str]:
    problems = []
    for obj in objects:
        found = crds.problems(obj) if crds.covers(obj) else builtin_problems(obj)
        problems += [f"{object_name(obj)}: {problem}" for problem in found]
    return problems + policy_problems(objects, external)


#: Objects a kustomization may refer to without containing them: the credentials the operator
#: creates, and for the training Job the volume the main deployment made.
EXTERNAL = {"*": {("Secret", "winnow-credentials")},
            "overlays/gpu/training": {("PersistentVolumeClaim", "winnow-state"), ("ConfigMap", "winnow-platform")}}


def validate_kustomizations(k8s: Path, names: tuple[str, ...]) -> list[str]:
    """Build each kustomization under ``k8s`` and validate everything it yields."""
    crd_dir = k8s / "crds"
    if not crd_dir.is_dir():
        return [f"{crd_dir}: missing: the CRD schemas of KEDA and Strimzi (see k8s/crds/README.md)"]
    crds = CustomResourceSchemas.load(crd_dir)
    try:
        kustomize_command()
    except KustomizeError as exc:
        return [str(exc)]
    with ThreadPoolExecutor(max_workers=len(names) or 1) as pool:  # kustomize runs are independent processes
        builds = dict(zip(names, pool.map(_try_build, [k8s / name for name in names])))
    problems = []
    for name, objects in builds.items():
        if isinstance(objects, KustomizeError):
            problems.append(f"{name}: {objects}")
            continue
        external = frozenset(EXTERNAL["*"] | EXTERNAL.get(name, set()))
        found = validate_objects(objects, crds, external)
        log.debug("kustomization_validated", kustomization=name, objects=len(objects), problems=len(found))
        problems += [f"{name}: {problem}" for problem in found]
    return problems


def _try_build(directory: Path) -> list[dict[str, Any]] | KustomizeError:
    try:
        return kustomize_build(directory)
    except KustomizeError as exc:
        return exc
