"""winnow's deployment policies, checked over everything one kustomization builds.

Schemas say an object is well formed; these say the deployment is sound: every long-running
container has probes, every container has requests and limits and runs non-root under the
restricted profile, images are pinned, KEDA never scales a stage past its partitions or its
topology limit, every selector finds a pod, every reference resolves (or is declared as created
by the operator), every pod is fenced by a NetworkPolicy, each service gets the environment the
topology gives it, and the training Job's torchrun matches its pods.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from winnow.ops.deploy.k8s_common import PLATFORM_KEYS
from winnow.ops.topology import SERVICES, TOPIC_PARTITIONS, Service

LONG_RUNNING = ("Deployment", "StatefulSet", "DaemonSet")
WORKLOADS = (*LONG_RUNNING, "Job")
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
TOPOLOGY = {svc.name: svc for svc in SERVICES}


def _name(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def pod_template(obj: dict[str, Any]) -> dict[str, Any] | None:
    if obj.get("kind") in WORKLOADS:
        return obj.get("spec", {}).get("template") or {}
    return None


def _containers(pod: dict[str, Any], init: bool = True) -> Iterator[tuple[str, dict[str, Any]]]:
    for key in ("initContainers", "containers") if init else ("containers",):
        for container in pod.get(key) or ():
            yield f"{key[:-1]} {container.get('name')}", container


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


class Build:
    """The objects of one build, indexed for lookups."""

    def __init__(self, objects: list[dict[str, Any]], external: frozenset[tuple[str, str]]) -> None:
        self.objects = objects
        self.external = external
        self.by_kind: dict[tuple[str, str], dict[str, Any]] = {
            (obj.get("kind"), obj.get("metadata", {}).get("name")): obj for obj in objects}
        self.pods = [(obj, pod_template(obj)) for obj in objects if pod_template(obj) is not None]

    def has(self, kind: str, name: str) -> bool:
        return (kind, name) in self.by_kind or (kind, name) in self.external

    def pods_selected(self, selector: dict[str, str]) -> list[dict[str, Any]]:
        return [obj for obj, pod in self.pods if _matches(selector, pod.get("metadata", {}).get("labels") or {})]


# ---------------------------------------------------------------------------------------------
# Workloads


def container_problems(obj: dict[str, Any]) -> Iterator[str]:
    pod = pod_template(obj).get("spec") or {}
    pod_security = pod.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            yield f"{flag} is set"
    for volume in pod.get("volumes") or ():
        if "hostPath" in volume:
            yield f"volume {volume.get('name')} is a hostPath"
    if pod_security.get("runAsUser") == 0:
        yield "pod runs as root (runAsUser 0)"
    for label, container in _containers(pod):
        security = container.get("securityContext") or {}
        if obj["kind"] in LONG_RUNNING and label.startswith("container "):
            missing = [probe for probe in PROBES if probe not in container]
            if missing:
                yield f"{label}: no {', '.join(missing)}"
        res = container.get("resources") or {}
        missing = [f"{kind}.{resource}" for kind in ("requests", "limits") for resource in ("cpu", "memory")
                   if resource not in (res.get(kind) or {})]
        if missing:
            yield f"{label}: resources without {', '.join(missing)}"
        if not security.get("runAsNonRoot", pod_security.get("runAsNonRoot")):
            yield f"{label}: runAsNonRoot is not true"
        if security.get("runAsUser", pod_security.get("runAsUser")) == 0:
            yield f"{label}: runs as root (runAsUser 0)"
        if security.get("privileged"):
            yield f"{label}: privileged"
        if security.get("allowPrivilegeEscalation") is not False:
            yield f"{label}: allowPrivilegeEscalation is not false"
        if "ALL" not in ((security.get("capabilities") or {}).get("drop") or ()):
            yield f"{label}: capabilities do not drop ALL"
        if security.get("readOnlyRootFilesystem") is not True:
            yield f"{label}: readOnlyRootFilesystem is not true"
        seccomp = (security.get("seccompProfile") or pod_security.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            yield f"{label}: seccompProfile is not RuntimeDefault"
        image = str(container.get("image", ""))
        tag = image.rsplit("/", 1)[-1].partition(":")[2] if "@" not in image else "digest"
        if not tag or tag == "latest":
            yield f"{label}: image {image!r} is not pinned to a release tag"


def reference_problems(obj: dict[str, Any], build: Build) -> Iterator[str]:
    pod = pod_template(obj).get("spec") or {}
    account = pod.get("serviceAccountName")
    if account and not build.has("ServiceAccount", account):
        yield f"serviceAccountName {account} does not exist"
    refs: list[tuple[str, str, str | None, str]] = []  # kind, name, key, where
    for label, container in _containers(pod):
        for source in container.get("envFrom") or ():
            for field, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                if field in source:
                    refs.append((kind, source[field].get("name"), None, f"{label} envFrom"))
        for var in container.get("env") or ():
            value_from = var.get("valueFrom") or {}
            for field, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                if field in value_from:
                    ref = value_from[field]
                    refs.append((kind, ref.get("name"), None if ref.get("optional") else ref.get("key"),
                                 f"{label} env {var.get('name')}"))
    for volume in pod.get("volumes") or ():
        for field, kind, key in (("configMap", "ConfigMap", "name"), ("secret", "Secret", "secretName"),
                                 ("persistentVolumeClaim", "PersistentVolumeClaim", "claimName")):
            if field in volume:
                refs.append((kind, volume[field].get(key), None, f"volume {volume.get('name')}"))
    mounted = {volume.get("name") for volume in pod.get("volumes") or ()}
    for label, container in _containers(pod):
        for mount in container.get("volumeMounts") or ():
            if mount.get("name") not in mounted:
                yield f"{label} mounts volume {mount.get('name')}, which the pod does not define"
    for kind, name, key, where in refs:
        if not build.has(kind, name):
            yield f"{where}: {kind} {name} is neither in this kustomization nor declared as created by the operator"
        elif key is not None and (kind, name) in build.by_kind:
            data = {**(build.by_kind[(kind, name)].get("data") or {}),
                    **(build.by_kind[(kind, name)].get("stringData") or {})}
            if key not in data:
                yield f"{where}: {kind} {name} has no key {key}"


def environment(obj: dict[str, Any], build: Build) -> dict[str, str]:
    """The literal environment of a workload's first container (ConfigMaps resolved; secrets left out)."""
    container = (pod_template(obj).get("spec") or {}).get("containers", [{}])[0]
    env: dict[str, str] = {}
    for source in container.get("envFrom") or ():
        if "configMapRef" in source:
            found = build.by_kind.get(("ConfigMap", source["configMapRef"].get("name"))) or {}
            env.update(found.get("data") or {})
    for var in container.get("env") or ():
        if "value" in var:
            env[var["name"]] = var["value"]
    return env


def topology_problems(obj: dict[str, Any], svc: Service, build: Build) -> Iterator[str]:
    from winnow.ops.deploy.k8s_common import K8S_ENDPOINTS
    from winnow.ops.topology import service_env

    env = environment(obj, build)
    for key, value in service_env(svc, K8S_ENDPOINTS).items():
        if key not in env:
            yield f"environment lacks {key} (winnow/ops/topology.py gives it)"
        elif key not in PLATFORM_KEYS and env[key] != value:
            yield f"environment sets {key}={env[key]!r}, the topology says {value!r}"


def torchrun_problems(obj: dict[str, Any]) -> Iterator[str]:
    spec = obj.get("spec") or {}
    for label, container in _containers(pod_template(obj).get("spec") or {}, init=False):
        command = [*(container.get("command") or ()), *(container.get("args") or ())]
        if not command or command[0] != "torchrun":
            continue
        options = dict(arg[2:].split("=", 1) for arg in command if arg.startswith("--") and "=" in arg)
        gpus = str(((container.get("resources") or {}).get("limits") or {}).get("nvidia.com/gpu", ""))
        if gpus and options.get("nproc_per_node") != gpus:
            yield f"{label}: --nproc_per_node={options.get('nproc_per_node')} but the pod has {gpus} GPUs"
        nodes = options.get("nnodes")
        if nodes != str(spec.get("completions")) or nodes != str(spec.get("parallelism")):
            yield (f"{label}: --nnodes={nodes} but the Job runs completions={spec.get('completions')}, "
                   f"parallelism={spec.get('parallelism')}")
        if spec.get("completionMode") != "Indexed" or "--node_rank=$(JOB_COMPLETION_INDEX)" not in command:
            yield f"{label}: torchrun across pods needs an Indexed Job and --node_rank=$(JOB_COMPLETION_INDEX)"


# ---------------------------------------------------------------------------------------------
# Scaling, selectors, network policies


def scaled_object_problems(obj: dict[str, Any], build: Build) -> Iterator[str]:
    spec = obj.get("spec") or {}
    target = spec.get("scaleTargetRef") or {}
    kind = target.get("kind", "Deployment")
    deployment = build.by_kind.get((kind, target.get("name")))
    if deployment is None:
        yield f"scaleTargetRef {kind}/{target.get('name')} is not in this kustomization"
    elif "replicas" in (deployment.get("spec") or {}):
        yield f"{kind}/{target.get('name')} sets spec.replicas, which fights KEDA on every apply"
    low, high = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
    if low > high:
        yield f"minReplicaCount {low} > maxReplicaCount {high}"
    svc = TOPOLOGY.get(target.get("name"))
    for trigger in spec.get("triggers") or ():
        auth = (trigger.get("authenticationRef") or {}).get("name")
        if auth and not build.has(trigger["authenticationRef"].get("kind", "TriggerAuthentication"), auth):
            yield f"trigger {trigger.get('type')}: authenticationRef {auth} does not exist"
        if trigger.get("type") != "kafka":
            continue
        meta = trigger.get("metadata") or {}
        if high > TOPIC_PARTITIONS:
            yield f"maxReplicaCount {high} > {TOPIC_PARTITIONS} partitions: the extra consumers would sit idle"
        if svc is None:
            yield f"kafka trigger scales {target.get('name')}, which is not a service of the topology"
            continue
        if high > svc.max_replicas:
            yield f"maxReplicaCount {high} > max_replicas {svc.max_replicas} of {svc.name} in the topology"
        if meta.get("topic") != svc.input_topic:
            yield f"kafka trigger watches topic {meta.get('topic')}, {svc.name} consumes {svc.input_topic}"
        if meta.get("consumerGroup") != svc.consumer_group:
            yield f"kafka trigger watches group {meta.get('consumerGroup')}, {svc.name}'s is {svc.consumer_group}"


def trigger_auth_problems(obj: dict[str, Any], build: Build) -> Iterator[str]:
    for ref in (obj.get("spec") or {}).get("secretTargetRef") or ():
        if not build.has("Secret", ref.get("name")):
            yield f"secretTargetRef {ref.get('parameter')}: Secret {ref.get('name')} is not declared"


def selector_problems(obj: dict[str, Any], build: Build) -> Iterator[str]:
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    if kind == "Service" and spec.get("selector"):
        if not build.pods_selected(spec["selector"]):
            yield f"selector {spec['selector']} matches no workload's pods"
    if kind == "PodDisruptionBudget":
        labels = (spec.get("selector") or {}).get("matchLabels") or {}
        if not build.pods_selected(labels):
            yield f"selector {labels} matches no workload's pods"
    if kind in WORKLOADS and kind != "Job":
        labels = (spec.get("selector") or {}).get("matchLabels") or {}
        template_labels = (pod_template(obj).get("metadata") or {}).get("labels") or {}
        if not _matches(labels, template_labels):
            yield f"selector {labels} does not match its own pod template's labels"


def network_problems(build: Build) -> Iterator[str]:
    policies = [obj for obj in build.objects if obj.get("kind") == "NetworkPolicy"]
    for obj, pod in build.pods:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        types = set()
        for policy in policies:
            selector = ((policy.get("spec") or {}).get("podSelector") or {}).get("matchLabels") or {}
            if _matches(selector, labels):
                types.update((policy.get("spec") or {}).get("policyTypes") or ())
        missing = {"Ingress", "Egress"} - types
        if missing:
            yield f"{_name(obj)}: no NetworkPolicy restricts its {' and '.join(sorted(missing)).lower()}"


def policy_problems(objects: list[dict[str, Any]], external: frozenset[tuple[str, str]]) -> list[str]:
    """Every policy violation in one build, as ``Kind/name: problem``."""
    build = Build(objects, external)
    problems = []
    for obj in objects:
        found: list[str] = []
        kind = obj.get("kind")
        if kind in WORKLOADS:
            found += container_problems(obj)
            found += reference_problems(obj, build)
            found += torchrun_problems(obj)
            svc = TOPOLOGY.get(obj.get("metadata", {}).get("name"))
            if kind == "Deployment" and svc is not None:
                found += topology_problems(obj, svc, build)
        if kind == "ScaledObject":
            found += scaled_object_problems(obj, build)
        if kind == "TriggerAuthentication":
            found += trigger_auth_problems(obj, build)
        found += selector_problems(obj, build)
        problems += [f"{_name(obj)}: {problem}" for problem in found]
    return problems + list(network_problems(build))
