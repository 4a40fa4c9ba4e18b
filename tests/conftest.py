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
from tests.infra.kafka_broker import KafkaBroker
from tests.infra.s3_server import S3Server


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
