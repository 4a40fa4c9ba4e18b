"""The shared objects of the winnow namespace: the namespace, the platform ConfigMap, KEDA's Kafka
credentials, the training volume, the credentials Secret's example, and Triton.

Triton is a Deployment serving the model repository that an init container writes with
``winnow models repository`` (both from the Triton image, which carries winnow for its python
backend), scaled by KEDA on the time requests wait in its queue, as Prometheus reports it.
"""

from __future__ import annotations

from typing import Any

from shared.deploy.k8s_common import (
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
from shared.deploy.k8s_services import (
    CACHE_DIR,
    STARTUP_FAILURES,
    STARTUP_PERIOD_S,
    cache_env,
    dns_egress,
    metrics_ingress,
    platform_config,
    public_internet,
)
from shared.topology import SECRET_ENV, SERVICES, Resources

TRITON_RESOURCES = Resources("2", "8Gi", "8", "32Gi", gpu=1)
TRITON_MAX_REPLICAS = 4
#: Average time a request waits in Triton's queue, in microseconds, above which KEDA adds a replica.
QUEUE_TIME_TARGET_US = 20_000
QUEUE_TIME_ACTIVATION_US = 1_000
#: Mean queue time per successful request over the last minute, across Triton's replicas.
QUEUE_TIME_QUERY = (f'sum(rate(nv_inference_queue_duration_us{{namespace="{NAMESPACE}"}}[1m])) / '
                    f'clamp_min(sum(rate(nv_inference_request_success{{namespace="{NAMESPACE}"}}[1m])), 1)')
MODEL_DIR = "/models"
#: DataComp's two CLIP models, served as clip_b32 and clip_l14 (the embed service's defaults).
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


def triton_repository_args(preset: str) -> list[str]:
    args = ["models", "repository", "--out", MODEL_DIR, "--preset", preset]
    for spec in CLIP_MODELS:
        args += ["--clip_model", spec]
    return args


def triton_deployment(image: str) -> dict[str, Any]:
    volume_mounts = [{"name": "models", "mountPath": MODEL_DIR}, {"name": "cache", "mountPath": CACHE_DIR},
                     {"name": "tmp", "mountPath": "/tmp"}]
    writer = {
        "name": "model-repository",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["winnow"],
        "args": triton_repository_args("offline"),
        "env": cache_env(),
        "resources": resources(Resources("500m", "2Gi", "2", "8Gi")),
        "securityContext": container_security_context(),
        "volumeMounts": volume_mounts,
    }
    server = {
        "name": TRITON_NAME,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["tritonserver"],
        "args": [f"--model-repository={MODEL_DIR}", f"--http-port={TRITON_PORTS['http']}",
                 f"--grpc-port={TRITON_PORTS['grpc']}", f"--metrics-port={TRITON_PORTS['metrics']}",
                 "--strict-readiness=true", "--exit-on-error=true"],
        "ports": [{"name": name, "containerPort": port, "protocol": "TCP"} for name, port in TRITON_PORTS.items()],
        "env": cache_env(),
        "resources": resources(TRITON_RESOURCES),
        "startupProbe": _http_probe("/v2/health/live", STARTUP_PERIOD_S, STARTUP_FAILURES),
        "readinessProbe": _http_probe("/v2/health/ready", 10, 3),
        "livenessProbe": _http_probe("/v2/health/live", 20, 3),
        "securityContext": container_security_context(),
        "volumeMounts": [*volume_mounts, {"name": "dshm", "mountPath": "/dev/shm"}],
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
                    "initContainers": [writer],
                    "containers": [server],
                    "volumes": [empty_dir("models", "1Gi"), empty_dir("cache", "20Gi"), empty_dir("tmp", "4Gi"),
                                # the python backend passes tensors through shared memory
                                empty_dir("dshm", "4Gi", memory=True)],
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
            # the init container fetches open_clip's published weights over HTTPS
            "egress": [dns_egress(), {"to": public_internet(), "ports": [{"protocol": "TCP", "port": 443}]}],
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
