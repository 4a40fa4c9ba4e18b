"""One real Triton server for the session, serving the toy models (and real ones where installed).

The ``tritonserver`` binary comes from the ``nvidia-pytriton`` wheel (fetched into the cache on
first use, see :mod:`shared.triton.server`); the tests skip only where no such binary exists.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from shared.triton.client import TritonClient
from shared.triton.contract import ModelKind
from shared.triton.repository import ModelSpec, write_model_repository
from shared.triton.server import TritonServer, TritonServerUnsupported, find_tritonserver

REPO_ROOT = Path(__file__).resolve().parents[2]
TOY = "tests.triton.toy_models"

TOY_MODELS = [
    ModelSpec("toxicity", f"{TOY}:WordListToxicity", ModelKind.TEXT_TOXICITY, max_batch_size=16,
              max_queue_delay_us=20_000),  # a wide window, so that concurrent requests surely share batches
    ModelSpec("nsfw", f"{TOY}:BrightnessNSFW", ModelKind.IMAGE_NSFW, max_batch_size=8),
    ModelSpec("faces", f"{TOY}:GridFaceDetector", ModelKind.FACE_DETECTOR, max_batch_size=8),
    ModelSpec("near_duplicates", f"{TOY}:GridDescriptor", ModelKind.NEAR_DUPLICATE, max_batch_size=8,
              dim=16, threshold=0.9),
    ModelSpec("clip_image", f"{TOY}:StatsClip", ModelKind.CLIP_IMAGE, max_batch_size=8, dim=8),
    ModelSpec("clip_text", f"{TOY}:StatsClip", ModelKind.CLIP_TEXT, max_batch_size=8, dim=8),
    ModelSpec("language", f"{TOY}:KeywordLanguage", ModelKind.LANGUAGE_ID, max_batch_size=8),
    ModelSpec("slow", f"{TOY}:SlowToxicity", ModelKind.TEXT_TOXICITY, max_batch_size=4,
              factory_kwargs={"seconds": 3.0}),
]

# real offline models, served where their packages are installed: (spec, module, class, needed package)
REAL_MODELS = [
    (ModelSpec("jigsaw_toxicity", "shared.models.toxicity:JigsawToxicity", ModelKind.TEXT_TOXICITY,
               max_batch_size=32), "shared.models.toxicity", "JigsawToxicity", "toxic_classifier"),
]


def available_real_models() -> list[tuple[ModelSpec, str, str]]:
    found = []
    for spec, module, cls, package in REAL_MODELS:
        if importlib.util.find_spec(module) is not None and importlib.util.find_spec(package) is not None:
            found.append((spec, module, cls))
    return found


@pytest.fixture(scope="session")
def triton_repository(tmp_path_factory) -> Path:
    specs = TOY_MODELS + [spec for spec, _, _ in available_real_models()]
    return write_model_repository(tmp_path_factory.mktemp("model_repository"), specs)


@pytest.fixture(scope="session")
def triton_server(triton_repository, tmp_path_factory) -> TritonServer:
    try:
        install = find_tritonserver()
    except TritonServerUnsupported as exc:
        pytest.skip(f"no tritonserver binary for this platform: {exc}")
    server = TritonServer(triton_repository, tmp_path_factory.mktemp("triton"), install=install,
                          python_path=[REPO_ROOT])
    server.start(timeout=240)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def triton_client(triton_server) -> TritonClient:
    with TritonClient(triton_server.grpc_url, init_timeout_s=10, infer_timeout_s=30, retries=2,
                      backoff_s=0.1) as client:
        yield client
