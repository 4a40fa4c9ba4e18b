"""``winnow deploy render|check kubernetes``: the manifests under ``k8s/``, from winnow/ops/topology.py.

``render`` builds every file of ``k8s/base``, ``k8s/overlays/{dev,gpu,gpu/training,strimzi}`` and
``k8s/components/strimzi`` (the modules ``k8s_*`` build the objects); ``check`` builds each
kustomization with kustomize and validates what comes out (:mod:`winnow.ops.deploy.k8s_validate`:
Kubernetes schemas, the committed CRD schemas of KEDA and Strimzi, and winnow's policies).
Hand-written files beside them (``k8s/README.md``, ``k8s/crds/``) are not rendered.
"""

from __future__ import annotations

from pathlib import Path

from winnow.ops.deploy.k8s_common import dump, service_image, triton_image
from winnow.ops.deploy.k8s_overlays import (
    dev_resource_patches,
    dev_scaling_patches,
    dev_volume_patch,
    gpu_model_preset_patches,
    gpu_patches,
    kustomization,
    models_volume,
    strimzi_objects,
    strimzi_platform_patch,
)
from winnow.ops.deploy.k8s_platform import (
    credentials_example,
    kafka_trigger_authentication,
    namespace,
    platform_configmap,
    state_volume,
    triton_objects,
)
from winnow.ops.deploy.k8s_services import service_objects
from winnow.ops.deploy.k8s_training import training_objects
from winnow.ops.topology import SERVICES

K8S = Path("k8s")
#: The kustomizations `check` builds, each deployable with ``kubectl apply -k``.
KUSTOMIZATIONS = ("base", "overlays/dev", "overlays/gpu", "overlays/gpu/training", "overlays/strimzi")


def render(repo: Path) -> dict[Path, str]:
    """Every generated file under k8s/, by path relative to ``repo``."""
    image, triton = service_image(repo), triton_image(repo)
    base = {
        "namespace.yaml": [namespace()],
        "platform.yaml": [platform_configmap(), kafka_trigger_authentication(), state_volume()],
        "triton.yaml": triton_objects(triton),
        **{f"{svc.name}.yaml": service_objects(svc, image) for svc in SERVICES},
    }
    files: dict[str, list[dict]] = {f"base/{name}": docs for name, docs in base.items()}
    files["base/kustomization.yaml"] = [kustomization(list(base))]
    # not a resource of the kustomization: it shows what to create, with real values, by hand
    files["base/secrets.example.yaml"] = [credentials_example()]

    files["overlays/dev/kustomization.yaml"] = [kustomization(
        ["../../base"], ["resources.yaml", "scaling.yaml", "state-volume.yaml"])]
    files["overlays/dev/resources.yaml"] = dev_resource_patches()
    files["overlays/dev/scaling.yaml"] = dev_scaling_patches()
    files["overlays/dev/state-volume.yaml"] = [dev_volume_patch()]

    files["overlays/gpu/kustomization.yaml"] = [kustomization(
        ["../../base", "models-volume.yaml"], ["gpu.yaml", "model-preset.yaml"])]
    files["overlays/gpu/gpu.yaml"] = gpu_patches(triton)
    files["overlays/gpu/model-preset.yaml"] = gpu_model_preset_patches()
    files["overlays/gpu/models-volume.yaml"] = [models_volume()]
    files["overlays/gpu/training/kustomization.yaml"] = [kustomization(["trainer-job.yaml"])]
    files["overlays/gpu/training/trainer-job.yaml"] = training_objects(image)

    files["components/strimzi/kustomization.yaml"] = [kustomization(
        ["kafka.yaml"], ["platform.yaml"], kind="Component", namespace=False)]
    files["components/strimzi/kafka.yaml"] = strimzi_objects()
    files["components/strimzi/platform.yaml"] = [strimzi_platform_patch()]
    files["overlays/strimzi/kustomization.yaml"] = [kustomization(
        ["../dev"], components=["../../components/strimzi"])]
    return {K8S / name: dump(docs) for name, docs in sorted(files.items())}


def check(repo: Path) -> list[str]:
    """Problems with the committed manifests: schema errors, CRD errors, policy violations."""
    from winnow.ops.deploy.k8s_validate import validate_kustomizations

    return validate_kustomizations(repo / K8S, KUSTOMIZATIONS)
