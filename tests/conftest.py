"""Session-wide real servers: one Kafka broker, one S3 server, one web server of real images.

Each starts on first use and stops at the end of the session; tests use unique topic, group
and bucket names so they never see each other's data.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from tests.infra.image_server import ImageServer
from tests.infra.images import make_jpeg_corpus, skimage_photos
from winnow.ops.devstack.kafka import KafkaBroker
from winnow.ops.devstack.s3 import S3Server

from winnow.shared.triton.client import TritonClient
from winnow.ops.triton.repository import write_model_repository
from winnow.ops.triton.server import TritonServer, TritonServerUnsupported, find_tritonserver
from tests.triton.served_models import REAL_MODELS, TOY_MODELS

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory) -> str:
    """Bootstrap address of a real single-node KRaft Apache Kafka broker."""
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"))
    broker.start()
    yield broker.bootstrap_servers
    broker.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 server (SeaweedFS); its credentials are exported so ``s3://`` URIs just work."""
    server = S3Server(tmp_path_factory.mktemp("s3"))
    server.start()
    saved = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)
    yield server
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()


@pytest.fixture
def s3_bucket(s3_server) -> str:
    name = f"t-{uuid.uuid4().hex[:10]}"
    s3_server.make_bucket(name)
    return f"s3://{name}"


@pytest.fixture(scope="session")
def web_root(tmp_path_factory) -> Path:
    """A directory of real images: skimage photos and large JPEGs made from them and clip art."""
    root = tmp_path_factory.mktemp("www")
    for photo in skimage_photos()[:8]:
        (root / photo.name).write_bytes(photo.read_bytes())
    make_jpeg_corpus(root, 12, min_side=800)
    return root


@pytest.fixture(scope="session")
def web(web_root) -> ImageServer:
    """A local HTTP server on 127.0.0.1 serving ``web_root`` with failure routes."""
    server = ImageServer(web_root)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic, group and job names."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def tiny_clip_checkpoint(tmp_path_factory) -> str:
    """A small CLIP of winnow's tiny architecture with fixed random weights, saved as open_clip does."""
    import open_clip
    import torch

    from winnow.shared.models.clip import register_winnow_configs

    register_winnow_configs()
    torch.manual_seed(0)
    model = open_clip.create_model("winnow-tiny-ViT")
    path = tmp_path_factory.mktemp("clip") / "tiny.pt"
    torch.save({"state_dict": model.state_dict(), "epoch": 0}, path)
    return str(path)


@pytest.fixture(scope="session")
def triton_repository(tmp_path_factory, tiny_clip_checkpoint) -> Path:
    """Toy models, winnow's offline presets, and the tiny CLIP as ``clip_tiny`` (loaded on demand)."""
    from winnow.ops.triton.repository import clip_model_specs

    clip = clip_model_specs("clip_tiny", "winnow.shared.models.clip:OpenClipEncoder", dim=128,
                            factory_kwargs={"arch": "winnow-tiny-ViT", "pretrained": tiny_clip_checkpoint})
    return write_model_repository(tmp_path_factory.mktemp("model_repository"), TOY_MODELS + REAL_MODELS + clip)


@pytest.fixture(scope="session")
def triton_install():
    try:
        return find_tritonserver()
    except TritonServerUnsupported as exc:
        pytest.skip(f"no tritonserver binary for this platform: {exc}")


@pytest.fixture(scope="session")
def triton_server(triton_repository, triton_install, tmp_path_factory) -> TritonServer:
    server = TritonServer(triton_repository, tmp_path_factory.mktemp("triton"), install=triton_install,
                          models=[spec.name for spec in TOY_MODELS], python_path=[REPO_ROOT])
    server.start(timeout=240)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def triton_client(triton_server) -> TritonClient:
    with TritonClient(triton_server.grpc_url, init_timeout_s=10, infer_timeout_s=60, retries=2,
                      backoff_s=0.1, max_in_flight=4) as client:
        yield client
