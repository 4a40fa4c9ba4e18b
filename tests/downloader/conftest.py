"""Fixtures for the downloader's tests: real images behind the real local image server.

The images are real (a large photo variant from ``make_jpeg_corpus``, scikit-image samples and
an openclipart drawing with transparency) and are served by ``tests.infra.image_server`` on
127.0.0.1, so the fetcher is allowed ``127.0.0.0/8`` here and nowhere else.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from winnow.services.downloader.fetch import FetchOptions, HttpFetcher
from tests.infra.image_server import ImageServer
from tests.infra.images import make_jpeg_corpus, openclipart_images, skimage_images

LOOPBACK = ("127.0.0.0/8",)


@dataclass(frozen=True)
class SampleImages:
    """Files in the served directory; ``.name`` is the path the server knows them by."""

    root: Path
    large_jpeg: Path  # a photo, shorter side >= 1600 px: big enough for draft-mode decoding
    small_jpeg: Path  # scikit-image's rocket, 640x427
    rgb_png: Path  # scikit-image's coffee, 600x400
    gray_png: Path  # scikit-image's camera, 512x512, mode L
    alpha_png: Path  # clip art with a transparent background


def _alpha_source() -> Path:
    """A real drawing with transparent pixels: openclipart when installed, else skimage's logo."""
    for path in openclipart_images(limit=100):
        with Image.open(path) as image:
            if image.mode == "RGBA" and min(image.size) >= 400 and image.getchannel("A").getextrema()[0] == 0:
                return path
    return {p.name: p for p in skimage_images()}["logo.png"]


@pytest.fixture(scope="session")
def sample_images(tmp_path_factory) -> SampleImages:
    root = tmp_path_factory.mktemp("downloader-images")
    corpus = make_jpeg_corpus(tmp_path_factory.mktemp("jpeg-corpus"), 1, min_side=1600)
    skimage = {p.name: p for p in skimage_images()}
    files = {
        "large.jpg": corpus[0],
        "rocket.jpg": skimage["rocket.jpg"],
        "coffee.png": skimage["coffee.png"],
        "camera.png": skimage["camera.png"],
        "alpha.png": _alpha_source(),
    }
    for name, source in files.items():
        shutil.copyfile(source, root / name)
    return SampleImages(root=root, large_jpeg=root / "large.jpg", small_jpeg=root / "rocket.jpg",
                        rgb_png=root / "coffee.png", gray_png=root / "camera.png", alpha_png=root / "alpha.png")


@pytest.fixture(scope="session")
def image_server(sample_images):
    with ImageServer(sample_images.root) as server:
        server.preload()
        yield server


@pytest.fixture(scope="session")
def fetch_options() -> FetchOptions:
    """Short timeouts so the failure routes cost about a second each."""
    return FetchOptions(timeout=1.0, total_timeout=1.5, retries=1, backoff_s=0.05, max_retry_after_s=3.0,
                        per_domain_concurrency=16, allow_networks=LOOPBACK)


@pytest.fixture(scope="session")
def fetcher(fetch_options):
    fetcher = HttpFetcher(fetch_options)
    yield fetcher
    fetcher.close()
