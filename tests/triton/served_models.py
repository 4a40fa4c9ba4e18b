"""The models the session's one Triton server (``tests/conftest.py``) serves.

The ``tritonserver`` binary comes from the ``nvidia-pytriton`` wheel (fetched into the cache on
first use, see :mod:`winnow.ops.triton.server`); the tests skip only where no such binary can exist.
The server runs in explicit model-control mode: the toy models load at start, each real offline
model (``winnow.shared.models`` presets) only in the test that needs it, so a broken real model fails
its own test and nothing else.
"""

from __future__ import annotations

from winnow.ops.models_cli import repository_specs
from winnow.shared.triton.contract import ModelKind
from winnow.ops.triton.repository import ModelSpec, clip_model_specs

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

# the offline presets of winnow.shared.models, served under their preset's Triton name; dim and threshold
# of the near-duplicate descriptor are those of its default arguments (perceptual hash, 16 x 16)
REAL_MODELS = repository_specs("offline", [])


