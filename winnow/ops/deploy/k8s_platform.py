"""The shared objects of the winnow namespace: the namespace, the platform ConfigMap, KEDA's Kafka
credentials, the state volume, the credentials Secret's example, and Triton.

Triton is a Deployment of the Triton image (docker/triton.Dockerfile), serving the model
repository built into it (the offline preset and DataComp's two CLIP models), scaled by KEDA on
the time requests wait in its queue, as Prometheus reports it. The GPU overlay serves the
production preset instead, from a repository an init container writes (:func:`repository_writer`).
"""

from __future__ import annotations

from typing import Any

from winnow.ops.deploy.k8s_common import (
    CREDENTIALS_SECRET,
    KAFKA_TRIGGER_AUTH,
    NAMESPACE,
    PLATFORM_CONFIGMAP,
    PROMETHEUS_URL,
    STATE_PVC,
    TRITON_NAME,
    TRITON_PORTS,
    container_security_context,
    empty_dir,
    metadata,
    pod_security_context,
    resources,
    selector,
)
from winnow.ops.deploy.k8s_services import (
    STARTUP_FAILURES,
    STARTUP_PERIOD_S,
    dns_egress,
    metrics_ingress,
    platform_config,
)
from winnow.ops.topology import SECRET_ENV, SERVICES, Resources

TRITON_RESOURCES = Resources("2", "8Gi", "8", "32Gi", gpu=1)
TRITON_MAX_REPLICAS = 4
#: Average time a request waits in Triton's queue, in microseconds, above which KEDA adds a replica.
QUEUE_TIME_TARGET_US = 20_000
QUEUE_TIME_ACTIVATION_US = 1_000
#: Mean queue time per successful request over the last minute, across Triton's replicas.
QUEUE_TIME_QUERY = (f'sum(rate(nv_inference_queue_duration_us{{namespace="{NAMESPACE}"}}[1m])) / '
                    f'clamp_min(sum(rate(nv_inference_request_success{{namespace="{NAMESPACE}"}}[1m])), 1)')
#: The repository docker/triton.Dockerfile writes at build time, and where the GPU overlay writes its own.
BUILT_REPOSITORY = "/opt/winnow/model-repository"
WRITTEN_REPOSITORY = "/models"
#: DataComp's two CLIP models, served as clip_b32 and clip_l14 (the embed service's defaults);
#: their weights are in the Triton image (HF_HOME), so writing a repository needs no internet.
CLIP_MODELS = ("b32=ViT-B-32:openai", "l14=ViT-L-14:openai")
#: KEDA's Kafka scaler parameters, read from CREDENTIALS_SECRET (absent keys: plaintext, no SASL).
KEDA_KAFKA_KEYS = {"sasl": "keda-kafka-sasl", "username": "keda-kafka-username", "password": "keda-kafka-password",
                   "tls": "keda-kafka-tls", "ca": "keda-kafka-ca", "cert": "keda-kafka-cert", "key": "keda-kafka-key"}


def namespace() -> dict[str, Any]:
    restricted = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "audit", "warn")}
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": NAMESPACE, "labels": {"app.kubernetes.io/part-of": "winnow", **restricted}}}


def platform_configmap() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(PLATFORM_CONFIGMAP, "platform"),
            "data": platform_config()}


def kafka_trigger_authentication() -> dict[str, Any]:
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication",
            "metadata": metadata(KAFKA_TRIGGER_AUTH, "platform"),
            "spec": {"secretTargetRef": [{"parameter": parameter, "name": CREDENTIALS_SECRET, "key": key}
                                         for parameter, key in KEDA_KAFKA_KEYS.items()]}}


def state_volume(size: str = "100Gi", access: str = "ReadWriteMany") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": metadata(STATE_PVC, "state"),
            "spec": {"accessModes": [access], "resources": {"requests": {"storage": size}}}}


def credentials_example() -> dict[str, Any]:
    """What the operator creates (never committed with real values)."""
    data = {key: "" for key in SECRET_ENV}
    data["WINNOW_KAFKA_SECURITY"] = "{}"
    data.update({KEDA_KAFKA_KEYS["sasl"]: "none", KEDA_KAFKA_KEYS["tls"]: "disable",
                 KEDA_KAFKA_KEYS["username"]: "", KEDA_KAFKA_KEYS["password"]: ""})
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": CREDENTIALS_SECRET, "namespace": NAMESPACE},
            "type": "Opaque", "stringData": data}


def _http_probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period, "timeoutSeconds": 5,
            "failureThreshold": failures}


def repository_writer(image: str, preset: str, models_dir: str) -> dict[str, Any]:
    """An init container writing the Triton model repository of ``preset`` into WRITTEN_REPOSITORY,
    with the weights ``winnow models fetch`` put in ``models_dir``."""
    args = ["models", "repository", "--out", WRITTEN_REPOSITORY, "--preset", preset]
    for spec in CLIP_MODELS:
        args += ["--clip_model", spec]
    return {
        "name": "model-repository",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["winnow"],
        "args": args,
        "env": [{"name": "WINNOW_MODELS_DIR", "value": models_dir}],
        "resources": resources(Resources("500m", "2Gi", "2", "8Gi")),
        "securityContext": container_security_context(),
        "volumeMounts": [{"name": "models", "mountPath": WRITTEN_REPOSITORY}, {"name": "tmp", "mountPath": "/tmp"}],
    }


def triton_args(repository: str) -> list[str]:
    return [f"--model-repository={repository}", "--model-control-mode=none", f"--http-port={TRITON_PORTS['http']}",
            f"--grpc-port={TRITON_PORTS['grpc']}", f"--metrics-port={TRITON_PORTS['metrics']}",
            "--strict-readiness=true", "--exit-on-error=true"]


def triton_deployment(image: str) -> dict[str, Any]:
    server = {
        "name": TRITON_NAME,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["tritonserver"],
        "args": triton_args(BUILT_REPOSITORY),
        "ports": [{"name": name, "containerPort": port, "protocol": "TCP"} for name, port in TRITON_PORTS.items()],
        "resources": resources(TRITON_RESOURCES),
        "startupProbe": _http_probe("/v2/health/live", STARTUP_PERIOD_S, STARTUP_FAILURES),
        "readinessProbe": _http_probe("/v2/health/ready", 10, 3),
        "livenessProbe": _http_probe("/v2/health/live", 20, 3),
        "securityContext": container_security_context(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, {"name": "dshm", "mountPath": "/dev/shm"}],
    }
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata(TRITON_NAME, "inference"),
        "spec": {
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector(TRITON_NAME)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": metadata(TRITON_NAME, "inference")["labels"],
                             "annotations": {"prometheus.io/scrape": "true",
                                             "prometheus.io/port": str(TRITON_PORTS["metrics"]),
                                             "prometheus.io/path": "/metrics"}},
                "spec": {
                    "serviceAccountName": TRITON_NAME,
                    "automountServiceAccountToken": False,
                    "securityContext": pod_security_context(),
                    "terminationGracePeriodSeconds": 60,
                    "containers": [server],
                    # the python backend passes tensors through shared memory
                    "volumes": [empty_dir("tmp", "4Gi"), empty_dir("dshm", "4Gi", memory=True)],
                },
            },
        },
    }


def triton_objects(image: str) -> list[dict[str, Any]]:
    clients = sorted(svc.name for svc in SERVICES if svc.uses_triton)
    service = {"apiVersion": "v1", "kind": "Service", "metadata": metadata(TRITON_NAME, "inference"),
               "spec": {"selector": selector(TRITON_NAME),
                        "ports": [{"name": name, "port": port, "targetPort": name, "protocol": "TCP"}
                                  for name, port in TRITON_PORTS.items()]}}
    policy = {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": metadata(TRITON_NAME, "inference"),
        "spec": {
            "podSelector": {"matchLabels": selector(TRITON_NAME)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {"from": [{"podSelector": {"matchExpressions": [
                    {"key": "app.kubernetes.io/name", "operator": "In", "values": clients}]}}],
                 "ports": [{"protocol": "TCP", "port": TRITON_PORTS["grpc"]}]},
                metrics_ingress(TRITON_PORTS["metrics"]),
            ],
            "egress": [dns_egress()],  # every weight is in the image or on a volume
        },
    }
    scaler = {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": metadata(TRITON_NAME, "inference"),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": TRITON_NAME},
            "minReplicaCount": 1,
            "maxReplicaCount": TRITON_MAX_REPLICAS,
            "pollingInterval": 30,
            "cooldownPeriod": 600,  # a replica costs a GPU and minutes of model loading
            "triggers": [{
                "type": "prometheus",
                "name": "queue-time",
                "metricType": "Value",  # replicas grow with the ratio of queue time to the target
                "metadata": {"serverAddress": PROMETHEUS_URL, "query": QUEUE_TIME_QUERY,
                             "threshold": str(QUEUE_TIME_TARGET_US),
                             "activationThreshold": str(QUEUE_TIME_ACTIVATION_US)},
            }],
        },
    }
    return [{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata(TRITON_NAME, "inference"),
             "automountServiceAccountToken": False},
            service, triton_deployment(image),
            {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": metadata(TRITON_NAME, "inference"),
             "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(TRITON_NAME)}}},
            policy, scaler]
