"""One real Triton server for the session, serving the toy models; real models are loaded on demand.

The ``tritonserver`` binary comes from the ``nvidia-pytriton`` wheel (fetched into the cache on
first use, see :mod:`shared.triton.server`); the tests skip only where no such binary can exist.
The server runs in explicit model-control mode: the toy models load at start, each real offline
model (``shared.models`` presets) only in the test that needs it, so a broken real model fails
its own test and nothing else.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.triton.client import TritonClient
from shared.triton.contract import ModelKind
from shared.triton.repository import ModelSpec, clip_model_specs, write_model_repository
from shared.triton.server import TritonServer, TritonServerUnsupported, find_tritonserver

REPO_ROOT = Path(__file__).resolve().parents[2]
TOY = "tests.triton.toy_models"

TOY_MODELS = [
    # a wide batching window, so that concurrent requests surely share batches
    ModelSpec("toxicity", f"{TOY}:WordListToxicity", ModelKind.TEXT_TOXICITY, max_batch_size=16,
              max_queue_delay_us=20_000),
    ModelSpec("nsfw", f"{TOY}:BrightnessNSFW", ModelKind.IMAGE_NSFW, max_batch_size=8),
    ModelSpec("faces", f"{TOY}:GridFaceDetector", ModelKind.FACE_DETECTOR, max_batch_size=8),
    ModelSpec("near_duplicates", f"{TOY}:GridDescriptor", ModelKind.NEAR_DUPLICATE, max_batch_size=8,
              dim=16, threshold=0.9),
    *clip_model_specs("clip", f"{TOY}:StatsClip", dim=8, max_batch_size=8),  # clip_image, clip_text
    ModelSpec("language", f"{TOY}:KeywordLanguage", ModelKind.LANGUAGE_ID, max_batch_size=8),
    ModelSpec("slow", f"{TOY}:SlowToxicity", ModelKind.TEXT_TOXICITY, max_batch_size=4,
              factory_kwargs={"seconds": 3.0}),
]

# the offline presets of shared.models, served under their preset's Triton name; dim and threshold
# of the near-duplicate descriptor are those of its default arguments (perceptual hash, 16 x 16)
REAL_MODELS = [
    ModelSpec("text_toxicity_jigsaw", "shared.models.toxicity:JigsawToxicity", ModelKind.TEXT_TOXICITY,
              max_batch_size=64),
    ModelSpec("image_nsfw_opennsfw", "shared.models.nsfw:OpenNSFW", ModelKind.IMAGE_NSFW, max_batch_size=16),
    ModelSpec("faces_centerface", "shared.models.faces:CenterFaceDetector", ModelKind.FACE_DETECTOR,
              max_batch_size=8),
    ModelSpec("near_duplicate_phash", "shared.models.near_duplicates:PerceptualHashDescriptor",
              ModelKind.NEAR_DUPLICATE, max_batch_size=32, dim=256, threshold=1.0 - 113 / 256),
    ModelSpec("language_fastlangdetect", "shared.models.language:FastLangDetect", ModelKind.LANGUAGE_ID,
              max_batch_size=64),
]


@pytest.fixture(scope="session")
def triton_repository(tmp_path_factory) -> Path:
    return write_model_repository(tmp_path_factory.mktemp("model_repository"), TOY_MODELS + REAL_MODELS)


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
