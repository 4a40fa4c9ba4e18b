"""The deployment topology: every service, its ports, topics, consumer group, environment and models.

This module is the one place that says what runs. docker-compose.yml and the Kubernetes
manifests under ``k8s/`` are generated from it (``winnow deploy render``) and checked against it
in CI (``winnow deploy check``); ``winnow up`` starts the same services as local processes with
the environment :func:`service_env` gives them, so the three cannot drift apart.

Where a service runs (compose, Kubernetes, local processes) only changes :class:`Endpoints`:
the addresses of Kafka, Triton and the object store.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field
from enum import Enum

from winnow.shared.topics import CRAWL_TOPIC, TOPIC_PARTITIONS, shards_topic

#: The image every service runs from (docker/Dockerfile); the tag is the release.
SERVICE_IMAGE = "ghcr.io/winnow-data/winnow"
TRITON_IMAGE = "ghcr.io/winnow-data/winnow-triton"
#: Where jobs live in the object store.
BUCKET = "winnow"
#: Root of the writable state a service keeps on a volume (a PersistentVolume, a named volume, a
#: local folder under ``winnow up``): every path in a service's ``env`` under it is such state.
STATE_ROOT = "/var/lib/winnow"


class Role(str, Enum):
    """How a service uses its input."""

    STAGE = "stage"  # one shard in, one shard out; replicas share partitions
    JOB = "job"  # acts once per job (the filter waits for the whole pool)
    TRAINING = "training"  # one long message per run (trainer, evaluator)


@dataclass(frozen=True)
class Resources:
    """Kubernetes requests and limits (also compose's ``deploy.resources``)."""

    cpu_request: str
    memory_request: str
    cpu_limit: str
    memory_limit: str
    gpu: int = 0  # nvidia.com/gpu in the GPU overlay


@dataclass(frozen=True)
class Service:
    """One winnow service: a stage behind a gRPC API and a Kafka worker."""

    name: str
    module: str  # ``python -m <module>`` starts it
    summary: str
    input_topic: str
    output_topic: str
    grpc_port: int
    metrics_port: int
    role: Role = Role.STAGE
    models: tuple[str, ...] = ()  # model kinds it calls on Triton (shared/models/presets.json)
    clip: bool = False  # calls CLIP models on Triton (embed)
    max_replicas: int = TOPIC_PARTITIONS
    resources: Resources = Resources("500m", "1Gi", "2", "4Gi")
    env: dict[str, str] = field(default_factory=dict)  # service-specific settings (WINNOW_*)
    fetches_internet: bool = False  # needs egress to the public internet (the downloader)
    # what paths in its requests and bus messages may name (winnow.shared.access), beside the job storage
    reads_pools: bool = False  # the pools folder beside the job storage (where clients upload pools)
    read_roots: tuple[str, ...] = ()
    write_roots: tuple[str, ...] = ()
    job_storage_access: str = "write"  # "write", "read" or "" (none) for the job storage itself

    @property
    def consumer_group(self) -> str:
        return self.name

    @property
    def uses_triton(self) -> bool:
        return bool(self.models) or self.clip

    @property
    def state_paths(self) -> list[str]:
        """Paths under :data:`STATE_ROOT` this service writes or reads: they need a volume."""
        return sorted({value for value in self.env.values() if value.startswith(STATE_ROOT)})


SERVICES: tuple[Service, ...] = (
    Service("extractor", "winnow.services.extractor", "image URLs and alt text from Common Crawl WARC/WAT files",
            CRAWL_TOPIC, shards_topic("pool"), 50050, 9100,
            resources=Resources("500m", "512Mi", "1", "2Gi"), fetches_internet=True, reads_pools=True),
    Service("downloader", "winnow.services.downloader", "fetches, resizes and shards the images of a pool",
            shards_topic("pool"), shards_topic("downloader"), 50051, 9101,
            resources=Resources("1", "1Gi", "4", "4Gi"), fetches_internet=True, reads_pools=True,
            # one crawl file is one pool shard (often 50k+ images): hold its message up to 4 hours
            env={"WINNOW_MAX_MESSAGE_SECONDS": "14400"}),
    Service("safety", "winnow.services.safety", "drops toxic captions and NSFW images",
            shards_topic("downloader"), shards_topic("safety"), 50052, 9102,
            models=("text_toxicity", "image_nsfw")),
    Service("dedup", "winnow.services.dedup", "drops evaluation-set copies and duplicates within the pool",
            shards_topic("safety"), shards_topic("dedup"), 50053, 9103,
            models=("near_duplicate",), max_replicas=1,  # its pool registry is one writer per job
            resources=Resources("500m", "2Gi", "2", "8Gi"),
            env={"WINNOW_REGISTRY_DIR": f"{STATE_ROOT}/dedup", "WINNOW_EVAL_INDEX_DIR": ""}),
    Service("blur", "winnow.services.blur", "blurs detected faces",
            shards_topic("dedup"), shards_topic("blur"), 50054, 9104, models=("face_detector",)),
    Service("embed", "winnow.services.embed", "CLIP image and text embeddings and CLIP scores",
            shards_topic("blur"), shards_topic("embed"), 50055, 9105, clip=True),
    Service("filter", "winnow.services.filter", "a DataComp baseline over the whole pool, then resharding",
            shards_topic("embed"), shards_topic("reshard"), 50056, 9106, role=Role.JOB, max_replicas=1,
            resources=Resources("1", "4Gi", "4", "16Gi")),
    Service("trainer", "winnow.services.trainer", "trains a CLIP on a subset with open_clip at a DataComp scale",
            shards_topic("reshard"), shards_topic("trainer"), 50057, 9107, role=Role.TRAINING, max_replicas=1,
            resources=Resources("2", "8Gi", "8", "32Gi", gpu=1),
            env={"WINNOW_TRAIN_OUTPUT_DIR": f"{STATE_ROOT}/training"},
            # reads the pipeline's subsets, writes only its runs
            job_storage_access="read", read_roots=(f"{STATE_ROOT}/training",), write_roots=(f"{STATE_ROOT}/training",)),
    Service("evaluator", "winnow.services.evaluator", "evaluates a trained model on DataComp's tasks",
            shards_topic("trainer"), shards_topic("evaluator"), 50058, 9108, role=Role.TRAINING, max_replicas=1,
            resources=Resources("1", "4Gi", "4", "16Gi", gpu=1),
            # reads the trainer's runs (the same volume) and DataComp's evaluation sets; writes results into the runs
            env={"WINNOW_EVAL_DATA_DIR": f"{STATE_ROOT}/eval-data",
                 "WINNOW_TRAIN_OUTPUT_DIR": f"{STATE_ROOT}/training"},
            job_storage_access="", write_roots=(f"{STATE_ROOT}/training",)),
)

#: The order shards flow in (extractor first when a crawl is the source).
PIPELINE = tuple(service.name for service in SERVICES)


@dataclass(frozen=True)
class Platform:
    """A server winnow needs but does not implement: Kafka, Triton, the object store."""

    name: str
    ports: dict[str, int]
    summary: str


PLATFORM: tuple[Platform, ...] = (
    Platform("kafka", {"kafka": 9092, "controller": 9093}, "Apache Kafka, KRaft mode, one broker"),
    Platform("s3", {"s3": 8333}, "S3-compatible object store (SeaweedFS)"),
    Platform("triton", {"http": 8000, "grpc": 8001, "metrics": 8002}, "NVIDIA Triton serving every model"),
)


@dataclass(frozen=True)
class Endpoints:
    """Where the platform is, seen from a service."""

    kafka_bootstrap: str
    triton_grpc: str
    s3_endpoint: str  # http(s)://host:port of the object store; empty = local files
    job_root: str  # where submitted jobs are written (s3://bucket/runs, or a local directory)
    host: str = "0.0.0.0"  # the address services listen on


def service(name: str) -> Service:
    """The service called ``name``."""
    for candidate in SERVICES:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no service {name!r}; the topology has {', '.join(PIPELINE)}")


def platform(name: str) -> Platform:
    for candidate in PLATFORM:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no platform component {name!r}")


def topics() -> list[str]:
    """Every topic the pipeline uses, in flow order, then the dead-letter topics."""
    names: list[str] = []
    for svc in SERVICES:
        for topic in (svc.input_topic, svc.output_topic):
            if topic not in names:
                names.append(topic)
    return names + [f"{svc.input_topic}.dlq" for svc in SERVICES]


#: Environment variables that hold credentials: Kubernetes reads them from a Secret, compose
#: from the developer's environment (with development defaults), never from a committed file.
SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "WINNOW_KAFKA_SECURITY", "WINNOW_GRPC_TOKEN")


def pools_root(job_root: str) -> str:
    """Where clients put pools for the downloader to read: ``pools`` beside the job storage."""
    return posixpath.join(posixpath.dirname(job_root.rstrip("/")), "pools")


def access_roots(svc: Service, endpoints: Endpoints) -> tuple[list[str], list[str]]:
    """(read roots, write roots) for paths in the service's requests and bus messages."""
    write = ([endpoints.job_root] if svc.job_storage_access == "write" else []) + list(svc.write_roots)
    read = ([endpoints.job_root] if svc.job_storage_access == "read" else []) + list(svc.read_roots)
    if svc.reads_pools:
        read.append(pools_root(endpoints.job_root))
    return read, write


def service_env(svc: Service, endpoints: Endpoints) -> dict[str, str]:
    """The environment one service runs with (secrets excluded: see :data:`SECRET_ENV`)."""
    env = {
        "WINNOW_SERVICE_NAME": svc.name,
        "WINNOW_GRPC_ADDRESS": f"{endpoints.host}:{svc.grpc_port}",
        "WINNOW_METRICS_PORT": str(svc.metrics_port),
        "WINNOW_KAFKA_BOOTSTRAP_SERVERS": endpoints.kafka_bootstrap,
        "WINNOW_INPUT_TOPIC": svc.input_topic,
        "WINNOW_OUTPUT_TOPIC": svc.output_topic,
        "WINNOW_CONSUMER_GROUP": svc.consumer_group,
        "WINNOW_TOPIC_PARTITIONS": str(TOPIC_PARTITIONS),
        "WINNOW_LOG_JSON": "true",
    }
    read_roots, write_roots = access_roots(svc, endpoints)
    env["WINNOW_READ_ROOTS"] = json.dumps(read_roots)  # besides the write roots (winnow.shared.access)
    env["WINNOW_WRITE_ROOTS"] = json.dumps(write_roots)
    if svc.uses_triton:
        env["WINNOW_TRITON_URL"] = endpoints.triton_grpc
    if svc.name in ("downloader", "extractor"):
        env["WINNOW_OUTPUT_URI"] = endpoints.job_root
    if endpoints.s3_endpoint:
        # botocore (under s3fs) reads the endpoint from here; credentials come from SECRET_ENV.
        env["AWS_ENDPOINT_URL"] = endpoints.s3_endpoint
        env["AWS_DEFAULT_REGION"] = "us-east-1"
    env.update(svc.env)
    return env


def settings_class(svc: Service):
    """The pydantic settings class the service reads its environment with (imported lazily)."""
    import importlib

    module = importlib.import_module(f"{svc.module}.__main__")
    classes = [value for value in vars(module).values()
               if isinstance(value, type) and value.__name__.endswith("Settings")
               and value.__module__ in (module.__name__, f"{svc.module}.settings")]
    if len(classes) != 1:
        raise LookupError(f"{svc.module}.__main__ should define or import exactly one *Settings class, "
                          f"found {[c.__name__ for c in classes]}")
    return classes[0]
