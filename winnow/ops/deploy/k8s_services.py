"""The Kubernetes objects of one winnow service, built from its :class:`~winnow.ops.topology.Service`.

Per service: ServiceAccount, ConfigMap (its environment from :func:`winnow.ops.topology.service_env`,
less the platform addresses, which every service reads from one shared ConfigMap), Service,
Deployment, PodDisruptionBudget, NetworkPolicy, and a KEDA ScaledObject on the consumer-group lag
of its input topic when it may run more than one replica.
"""

from __future__ import annotations

from typing import Any

from winnow.ops.deploy.k8s_common import (
    API_CLIENT_LABEL,
    CREDENTIALS_SECRET,
    K8S_ENDPOINTS,
    KAFKA_TRIGGER_AUTH,
    MONITORING_NAMESPACE,
    PLATFORM_CONFIGMAP,
    PLATFORM_KEYS,
    PRIVATE_RANGES_V4,
    PRIVATE_RANGES_V6,
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
from winnow.ops.topology import (
    SECRET_ENV,
    SERVICES,
    STATE_ROOT,
    TOPIC_PARTITIONS,
    Role,
    Service,
    platform,
    service_env,
)

#: Consumer lag (unprocessed shards) per replica above which KEDA adds a replica. A shard is
#: minutes of work, so a small backlog per worker is already worth another replica.
LAG_THRESHOLD = 2
#: Every service also answers a gRPC API (SubmitPool, GetJob, StartRun, ...), so none scales to zero.
MIN_REPLICAS = 1
#: Models load before the health service says SERVING: allow this long (period x failures).
STARTUP_PERIOD_S, STARTUP_FAILURES = 10, 90
KAFKA_PORTS = (platform("kafka").ports["kafka"], platform("kafka").ports["kafka"] + 2)  # 9092-9094: plain, TLS, SASL
OBJECT_STORE_PORT = platform("s3").ports["s3"]


def configmap_name(svc: Service) -> str:
    return f"{svc.name}-config"


def is_autoscaled(svc: Service) -> bool:
    """A ScaledObject only where KEDA has room to act (the dedup registry, the filter's whole-pool
    pass and the one-run-at-a-time trainer and evaluator stay at one replica)."""
    return min(svc.max_replicas, TOPIC_PARTITIONS) > MIN_REPLICAS


def service_config(svc: Service) -> dict[str, str]:
    """The service's own environment: ``service_env`` without the platform keys."""
    return {key: value for key, value in service_env(svc, K8S_ENDPOINTS).items() if key not in PLATFORM_KEYS}


def platform_config() -> dict[str, str]:
    """The platform keys of ``service_env`` (identical for every service)."""
    reference = service_env(SERVICES[0], K8S_ENDPOINTS)
    return {key: reference[key] for key in PLATFORM_KEYS if key in reference}


def secret_env() -> list[dict[str, Any]]:
    """Credentials by reference; optional, since a plaintext development Kafka, workload identity
    for the object store or an open gRPC API need none of them."""
    return [{"name": key, "valueFrom": {"secretKeyRef": {"name": CREDENTIALS_SECRET, "key": key, "optional": True}}}
            for key in SECRET_ENV]


def grpc_probe(port: int, period: int, failures: int, timeout: int = 5) -> dict[str, Any]:
    return {"grpc": {"port": port}, "periodSeconds": period, "timeoutSeconds": timeout, "failureThreshold": failures}


def service_account(svc: Service) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata(svc.name, svc.role.value),
            "automountServiceAccountToken": False}


def config_map(svc: Service) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(configmap_name(svc), svc.role.value),
            "data": service_config(svc)}


def k8s_service(svc: Service) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata(svc.name, svc.role.value),
            "spec": {"selector": selector(svc.name),
                     "ports": [{"name": "grpc", "port": svc.grpc_port, "targetPort": "grpc", "protocol": "TCP"},
                               {"name": "metrics", "port": svc.metrics_port, "targetPort": "metrics",
                                "protocol": "TCP"}]}}


def _volumes(svc: Service) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, mounts): writable space under a read-only root filesystem. STATE_ROOT is the
    image's home (model and Hugging Face caches): the shared volume for a service that keeps
    state there, scratch space for the others."""
    state = ({"name": "state", "persistentVolumeClaim": {"claimName": STATE_PVC}} if svc.state_paths
             else empty_dir("state", "4Gi"))
    volumes = [state, empty_dir("tmp", svc.resources.memory_limit)]
    mounts = [{"name": "state", "mountPath": STATE_ROOT}, {"name": "tmp", "mountPath": "/tmp"}]
    if svc.role is Role.TRAINING:
        # torch's data-loader workers pass batches through shared memory
        volumes.append(empty_dir("dshm", "2Gi", memory=True))
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    return volumes, mounts


def deployment(svc: Service, image: str) -> dict[str, Any]:
    volumes, mounts = _volumes(svc)
    container = {
        "name": svc.name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": [svc.module],
        "ports": [{"name": "grpc", "containerPort": svc.grpc_port, "protocol": "TCP"},
                  {"name": "metrics", "containerPort": svc.metrics_port, "protocol": "TCP"}],
        "envFrom": [{"configMapRef": {"name": PLATFORM_CONFIGMAP}}, {"configMapRef": {"name": configmap_name(svc)}}],
        "env": secret_env(),
        "resources": resources(svc.resources),
        "startupProbe": grpc_probe(svc.grpc_port, STARTUP_PERIOD_S, STARTUP_FAILURES),
        "readinessProbe": grpc_probe(svc.grpc_port, 10, 3),
        "livenessProbe": grpc_probe(svc.grpc_port, 20, 3),
        "securityContext": container_security_context(),
        "volumeMounts": mounts,
    }
    single = not is_autoscaled(svc)
    spec: dict[str, Any] = {}
    if single:
        spec["replicas"] = 1  # KEDA owns the replica count of the others: leaving it out keeps apply from fighting it
    spec.update({
        "revisionHistoryLimit": 3,
        "selector": {"matchLabels": selector(svc.name)},
        # one writer (dedup registry, filter pass, a training run): the old pod is gone before the new starts
        "strategy": {"type": "Recreate"} if single else
        {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "template": {
            "metadata": {"labels": metadata(svc.name, svc.role.value)["labels"],
                         "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(svc.metrics_port),
                                         "prometheus.io/path": "/metrics"}},
            "spec": {
                "serviceAccountName": svc.name,
                "automountServiceAccountToken": False,
                "securityContext": pod_security_context(),
                "terminationGracePeriodSeconds": 60,
                "containers": [container],
                "volumes": volumes,
            },
        },
    })
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata(svc.name, svc.role.value),
            "spec": spec}


def pod_disruption_budget(svc: Service) -> dict[str, Any]:
    # maxUnavailable, not minAvailable: a single-replica service must not block node drains forever
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": metadata(svc.name, svc.role.value),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(svc.name)}}}


def _tcp(*ports: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port} for port in ports]


def public_internet() -> list[dict[str, Any]]:
    """Every address but the cluster-private, loopback, link-local and multicast ranges."""
    return [{"ipBlock": {"cidr": "0.0.0.0/0", "except": list(PRIVATE_RANGES_V4)}},
            {"ipBlock": {"cidr": "::/0", "except": list(PRIVATE_RANGES_V6)}}]


def dns_egress() -> dict[str, Any]:
    return {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}


def object_store_egress() -> list[dict[str, Any]]:
    """An S3-compatible store in the cluster (SeaweedFS's port) or a public one over HTTPS."""
    return [{"to": [{"podSelector": {}}, {"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": _tcp(OBJECT_STORE_PORT)},
            {"to": public_internet(), "ports": _tcp(443)}]


def metrics_ingress(port: int) -> dict[str, Any]:
    return {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": MONITORING_NAMESPACE}}}],
            "ports": _tcp(port)}


def network_policy(svc: Service) -> dict[str, Any]:
    kafka = {"to": [{"podSelector": {}}, {"ipBlock": {"cidr": "0.0.0.0/0"}}],
             "ports": [{"protocol": "TCP", "port": KAFKA_PORTS[0], "endPort": KAFKA_PORTS[1]}]}
    egress = [dns_egress(), kafka, *object_store_egress()]
    if svc.uses_triton:
        egress.append({"to": [{"podSelector": {"matchLabels": selector(TRITON_NAME)}}],
                       "ports": _tcp(TRITON_PORTS["grpc"])})
    if svc.fetches_internet:
        egress.append({"to": public_internet(), "ports": _tcp(80, 443)})
    ingress = [
        {"from": [{"podSelector": {}}, {"namespaceSelector": {"matchLabels": {API_CLIENT_LABEL: "true"}}}],
         "ports": _tcp(svc.grpc_port)},
        metrics_ingress(svc.metrics_port),
    ]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": metadata(svc.name, svc.role.value),
            "spec": {"podSelector": {"matchLabels": selector(svc.name)}, "policyTypes": ["Ingress", "Egress"],
                     "ingress": ingress, "egress": egress}}


def scaled_object(svc: Service) -> dict[str, Any]:
    """KEDA on the consumer-group lag of the input topic; KEDA reads the brokers from the
    Deployment's own environment, so it always watches the Kafka the service consumes."""
    return {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": metadata(svc.name, svc.role.value),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": svc.name},
            "minReplicaCount": MIN_REPLICAS,
            "maxReplicaCount": min(svc.max_replicas, TOPIC_PARTITIONS),
            "pollingInterval": 30,
            "cooldownPeriod": 300,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {"scaleDown": {
                "stabilizationWindowSeconds": 300, "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}}}},
            "triggers": [{
                "type": "kafka",
                "name": "consumer-lag",
                "metadata": {"bootstrapServersFromEnv": "WINNOW_KAFKA_BOOTSTRAP_SERVERS",
                             "consumerGroup": svc.consumer_group, "topic": svc.input_topic,
                             "lagThreshold": str(LAG_THRESHOLD),
                             "offsetResetPolicy": "earliest",  # as the workers (a new group reads from the start)
                             "allowIdleConsumers": "false"},
                "authenticationRef": {"name": KAFKA_TRIGGER_AUTH},
            }],
        },
    }


def service_objects(svc: Service, image: str) -> list[dict[str, Any]]:
    """Every object of one service, in apply order."""
    objects = [service_account(svc), config_map(svc), k8s_service(svc), deployment(svc, image),
               pod_disruption_budget(svc), network_policy(svc)]
    if is_autoscaled(svc):
        objects.append(scaled_object(svc))
    return objects
