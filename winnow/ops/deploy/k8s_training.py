"""Production training: an indexed Job running ``torchrun`` across pods, one pod per node.

Pod ``i`` of the Job ``winnow-train`` is node rank ``i``; pod 0 is the rendezvous master, found
through a headless Service (``winnow-train-0.winnow-train``). Each pod runs
``torchrun --nnodes N --nproc_per_node G --node_rank $(JOB_COMPLETION_INDEX) -m
winnow.services.trainer.train ...`` with the ``winnow train`` options, as DataComp launches its
``train.py``. Checkpoints go to the shared training volume; a retried pod resumes the run from
the newest one (``--resume latest``).
"""

from __future__ import annotations

from typing import Any

from winnow.ops.deploy.k8s_common import (
    K8S_ENDPOINTS,
    PLATFORM_CONFIGMAP,
    STATE_PVC,
    container_security_context,
    empty_dir,
    metadata,
    pod_security_context,
    resources,
    selector,
)
from winnow.ops.deploy.k8s_services import dns_egress, object_store_egress, secret_env
from winnow.ops.topology import STATE_ROOT, Resources, service

JOB_NAME = "winnow-train"
NODES = 2
GPUS_PER_NODE = 8
MASTER_PORT = 29500
NODE_RESOURCES = Resources("32", "256Gi", "64", "512Gi", gpu=GPUS_PER_NODE)
#: What to train: DataComp's medium scale on a winnow job's resharded subset in the object store
#: (any ``winnow train --data_dir`` source works). Patch the Job's args for another run.
SCALE = "medium"
TRAIN_JOB = "medium-pool"
TRAIN_DATA = f"{K8S_ENDPOINTS.job_root}/{TRAIN_JOB}"
#: The trainer service's runs folder, so its API and the evaluator see these runs too.
OUTPUT_DIR = service("trainer").env["WINNOW_TRAIN_OUTPUT_DIR"]
WORKERS_PER_RANK = 4


def torchrun_args() -> list[str]:
    """torchrun's options, then ``-m winnow.services.trainer.train`` and the ``winnow train`` options."""
    return [f"--nnodes={NODES}", f"--nproc_per_node={GPUS_PER_NODE}", "--node_rank=$(JOB_COMPLETION_INDEX)",
            f"--master_addr={JOB_NAME}-0.{JOB_NAME}", f"--master_port={MASTER_PORT}",
            "-m", "winnow.services.trainer.train",
            "--scale", SCALE, "--data_dir", TRAIN_DATA, "--output_dir", OUTPUT_DIR,
            "--workers", str(WORKERS_PER_RANK), "--report_to", "tensorboard"]


def training_job(image: str) -> dict[str, Any]:
    labels = metadata(JOB_NAME, "training")["labels"]
    container = {
        "name": "torchrun",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["torchrun"],
        "args": torchrun_args(),
        "ports": [{"name": "rendezvous", "containerPort": MASTER_PORT, "protocol": "TCP"}],
        # set by the Job controller too; declared so that $(JOB_COMPLETION_INDEX) expands in args
        "env": [{"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
                    "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}},
                *secret_env()],
        "envFrom": [{"configMapRef": {"name": PLATFORM_CONFIGMAP}}],  # the object store's address
        "resources": resources(NODE_RESOURCES, gpu=True),
        "securityContext": container_security_context(),
        "volumeMounts": [{"name": "state", "mountPath": STATE_ROOT}, {"name": "dshm", "mountPath": "/dev/shm"},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }
    return {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": metadata(JOB_NAME, "training"),
        "spec": {
            "completionMode": "Indexed",
            "completions": NODES,
            "parallelism": NODES,
            # a lost node fails the whole torchrun group; each retry resumes from the newest checkpoint
            "backoffLimit": 3 * NODES,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "subdomain": JOB_NAME,  # pod i answers at winnow-train-i.winnow-train
                    "restartPolicy": "Never",
                    "serviceAccountName": JOB_NAME,
                    "automountServiceAccountToken": False,
                    "securityContext": pod_security_context(),
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                    "containers": [container],
                    "volumes": [{"name": "state", "persistentVolumeClaim": {"claimName": STATE_PVC}},
                                empty_dir("dshm", "64Gi", memory=True), empty_dir("tmp", "16Gi")],
                },
            },
        },
    }


def training_objects(image: str) -> list[dict[str, Any]]:
    rendezvous = {"apiVersion": "v1", "kind": "Service", "metadata": metadata(JOB_NAME, "training"),
                  "spec": {"clusterIP": "None", "publishNotReadyAddresses": True, "selector": selector(JOB_NAME),
                           "ports": [{"name": "rendezvous", "port": MASTER_PORT, "targetPort": "rendezvous",
                                      "protocol": "TCP"}]}}
    peers = [{"podSelector": {"matchLabels": selector(JOB_NAME)}}]
    policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": metadata(JOB_NAME, "training"),
              "spec": {"podSelector": {"matchLabels": selector(JOB_NAME)}, "policyTypes": ["Ingress", "Egress"],
                       # rendezvous and NCCL (which picks its own ports) between the Job's pods only
                       "ingress": [{"from": peers}],
                       "egress": [{"to": peers}, dns_egress(), *object_store_egress()]}}
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata(JOB_NAME, "training"),
               "automountServiceAccountToken": False}
    return [account, rendezvous, policy, training_job(image)]
