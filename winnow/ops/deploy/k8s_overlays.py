"""The kustomize overlays: dev (small, CPU), gpu (production), the GPU training Job, and Strimzi.

- ``overlays/dev``: one replica per service (KEDA at most 2), small requests, Triton on CPU, a
  ReadWriteOnce training volume (what kind, minikube and k3d provide).
- ``overlays/gpu``: Triton on a GPU with DataComp's production models (weights on a volume that
  ``winnow models fetch`` fills), the trainer and evaluator on GPUs, larger limits.
- ``overlays/gpu/training``: the multi-node training Job, applied on its own for each run.
- ``components/strimzi``: a Strimzi Kafka (KRaft, one node pool) with a KafkaTopic per topic, and
  the services pointed at it; ``overlays/strimzi`` is dev plus this component.
"""

from __future__ import annotations

from typing import Any

from winnow.ops.deploy.k8s_common import (
    NAMESPACE,
    PLATFORM_CONFIGMAP,
    STATE_PVC,
    TRITON_NAME,
    container_security_context,
    resources,
)
from winnow.ops.deploy.k8s_platform import WRITTEN_REPOSITORY, repository_writer, triton_args
from winnow.ops.deploy.k8s_services import configmap_name, is_autoscaled
from winnow.ops.topology import SERVICES, TOPIC_PARTITIONS, Resources, Role, platform, topics

KUSTOMIZE_API = "kustomize.config.k8s.io/v1beta1"
DEV_MAX_REPLICAS = 2
DEV_SERVICE_RESOURCES = Resources("100m", "256Mi", "1", "2Gi")
DEV_HEAVY_RESOURCES = Resources("250m", "1Gi", "2", "6Gi")  # filter, trainer, evaluator: torch or a whole pool
DEV_TRITON_RESOURCES = Resources("500m", "2Gi", "4", "8Gi")
GPU_TRITON_RESOURCES = Resources("8", "32Gi", "16", "64Gi", gpu=1)
MODELS_PVC = "winnow-models"
WEIGHTS_DIR = "/weights"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
STRIMZI_CLUSTER = "winnow"
STRIMZI_BOOTSTRAP = f"{STRIMZI_CLUSTER}-kafka-bootstrap:{platform('kafka').ports['kafka']}"


def kustomization(resources_: list[str], patches: list[str] = (), components: list[str] = (),
                  kind: str = "Kustomization", namespace: bool = True) -> dict[str, Any]:
    doc: dict[str, Any] = {"apiVersion": KUSTOMIZE_API if kind == "Kustomization" else
                           "kustomize.config.k8s.io/v1alpha1", "kind": kind}
    if namespace:
        doc["namespace"] = NAMESPACE
    if resources_:
        doc["resources"] = list(resources_)
    if components:
        doc["components"] = list(components)
    if patches:
        doc["patches"] = [{"path": path} for path in patches]
    return doc


def _deployment_patch(name: str, container: str, resources_: dict[str, Any], **pod: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": container, "resources": resources_}], **pod}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"template": {"spec": spec}}}


# ---------------------------------------------------------------------------------------------
# dev


def dev_resource_patches() -> list[dict[str, Any]]:
    patches = []
    for svc in SERVICES:
        small = DEV_HEAVY_RESOURCES if svc.role is not Role.STAGE or svc.name == "dedup" else DEV_SERVICE_RESOURCES
        patches.append(_deployment_patch(svc.name, svc.name, resources(small)))
    patches.append(_deployment_patch(TRITON_NAME, TRITON_NAME, resources(DEV_TRITON_RESOURCES)))
    return patches


def dev_scaling_patches() -> list[dict[str, Any]]:
    names = [svc.name for svc in SERVICES if is_autoscaled(svc)] + [TRITON_NAME]
    return [{"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": name},
             "spec": {"maxReplicaCount": DEV_MAX_REPLICAS}} for name in names]


def dev_volume_patch() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": STATE_PVC},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}}}


# ---------------------------------------------------------------------------------------------
# gpu


def gpu_patches(triton_image: str) -> list[dict[str, Any]]:
    """Triton on a GPU serving the production preset (written at start from the weights volume),
    and the services that train or evaluate on GPUs."""
    weights = {"name": "weights", "mountPath": WEIGHTS_DIR, "readOnly": True}
    writer = repository_writer(triton_image, "production", WEIGHTS_DIR)
    writer["volumeMounts"].append(weights)
    triton = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": TRITON_NAME},
        "spec": {"template": {"spec": {
            "tolerations": [GPU_TOLERATION],
            "initContainers": [writer],
            "containers": [{"name": TRITON_NAME, "args": triton_args(WRITTEN_REPOSITORY),
                            "resources": resources(GPU_TRITON_RESOURCES, gpu=True),
                            "env": [{"name": "WINNOW_MODELS_DIR", "value": WEIGHTS_DIR}],
                            "volumeMounts": [{"name": "models", "mountPath": WRITTEN_REPOSITORY}, weights]}],
            "volumes": [{"name": "models", "emptyDir": {"sizeLimit": "1Gi"}},
                        {"name": "weights", "persistentVolumeClaim": {"claimName": MODELS_PVC, "readOnly": True}},
                        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}}],
        }}},
    }
    patches = [triton]
    for svc in SERVICES:
        if svc.resources.gpu:
            patches.append(_deployment_patch(svc.name, svc.name, resources(svc.resources, gpu=True),
                                             tolerations=[GPU_TOLERATION]))
    return patches


def gpu_model_preset_patches() -> list[dict[str, Any]]:
    """The curation services ask Triton for the production models' names."""
    return [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": configmap_name(svc)},
             "data": {"WINNOW_MODEL_PRESET": "production"}} for svc in SERVICES if svc.uses_triton]


def models_volume() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": MODELS_PVC, "labels": {"app.kubernetes.io/part-of": "winnow"}},
            "spec": {"accessModes": ["ReadOnlyMany"], "resources": {"requests": {"storage": "50Gi"}}}}


# ---------------------------------------------------------------------------------------------
# Strimzi


def _strimzi_pod_security() -> dict[str, Any]:
    # Strimzi's images run as their own non-root user; restricted needs only these
    return {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}


def strimzi_objects() -> list[dict[str, Any]]:
    container = {"securityContext": container_security_context()}
    kafka = {
        "apiVersion": "kafka.strimzi.io/v1", "kind": "Kafka",
        "metadata": {"name": STRIMZI_CLUSTER, "labels": {"app.kubernetes.io/part-of": "winnow"}},
        "spec": {
            "kafka": {
                "listeners": [{"name": "plain", "port": platform("kafka").ports["kafka"], "type": "internal",
                               "tls": False}],
                "config": {"offsets.topic.replication.factor": 1, "transaction.state.log.replication.factor": 1,
                           "transaction.state.log.min.isr": 1, "default.replication.factor": 1,
                           "min.insync.replicas": 1, "num.partitions": TOPIC_PARTITIONS},
            },
            "entityOperator": {"topicOperator": {},
                               "template": {"pod": {"securityContext": _strimzi_pod_security()},
                                            "topicOperatorContainer": container}},
        },
    }
    pool = {
        "apiVersion": "kafka.strimzi.io/v1", "kind": "KafkaNodePool",
        "metadata": {"name": "dual-role", "labels": {"strimzi.io/cluster": STRIMZI_CLUSTER,
                                                     "app.kubernetes.io/part-of": "winnow"}},
        "spec": {
            "replicas": 1,
            "roles": ["controller", "broker"],  # KRaft: one node is both
            "storage": {"type": "jbod", "volumes": [{"id": 0, "type": "persistent-claim", "size": "20Gi",
                                                     "deleteClaim": False, "kraftMetadata": "shared"}]},
            "resources": resources(Resources("250m", "1Gi", "2", "2Gi")),
            "template": {"pod": {"securityContext": _strimzi_pod_security()}, "kafkaContainer": container},
        },
    }
    topic_objects = [{"apiVersion": "kafka.strimzi.io/v1", "kind": "KafkaTopic",
                      "metadata": {"name": name, "labels": {"strimzi.io/cluster": STRIMZI_CLUSTER,
                                                            "app.kubernetes.io/part-of": "winnow"}},
                      "spec": {"topicName": name, "partitions": TOPIC_PARTITIONS, "replicas": 1}}
                     for name in topics()]
    return [kafka, pool, *topic_objects]


def strimzi_platform_patch() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": PLATFORM_CONFIGMAP},
            "data": {"WINNOW_KAFKA_BOOTSTRAP_SERVERS": STRIMZI_BOOTSTRAP}}

