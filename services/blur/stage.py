"""The blur stage: find faces and record them as ``face_bboxes``; blur them where told to.

Boxes are ``[x0, y0, x1, y1]`` in [0, 1] of the image (DataComp's convention). By default the
stage only annotates: the images are blurred when they are materialised, by the resharder, from
``face_bboxes``. With ``write_blurred_images`` (for deployments whose policy forbids unblurred
faces at rest) it writes a tar of its kept samples with the faces blurred, which later stages and
the resharder read instead, and then removes the job's unblurred downloader tar of that shard.
Either way the blur is DataComp's (:mod:`winnow.shared.face_blur`). Blurring drops nothing.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
from PIL import Image

from winnow.services.blur.options import BlurOptions
from winnow.shared import storage
from winnow.shared.curation import Sample, SampleStage, Verdict
from winnow.shared.face_blur import blur_boxes
from winnow.shared.messages import ShardRef
from winnow.shared.models.base import FaceDetector, ImageNeed, image_need
from winnow.shared.models.provider import model_factory
from winnow.shared.shards import IMAGE_FORMATS, ImageSource, image_source


def build_stage(options: BlurOptions, model_preset: str = "offline", triton_url: str = "") -> BlurStage:
    """The blur stage of ``options`` with the preset's face detector (on Triton at ``triton_url`` if
    given), for the service and ``winnow run`` alike."""
    return BlurStage(model_factory("face_detector", model_preset, triton_url), options)


class BlurStage(SampleStage):
    name = "blur"
    input_columns = ()  # it reads the images alone
    output_columns = ("face_bboxes",)
    drop_reasons = ()

    def __init__(self, detector: Callable[[], FaceDetector], options: BlurOptions | None = None) -> None:
        self.options = options or BlurOptions()
        self.batch_size = self.options.batch_size
        self._make_detector = detector
        self.detector: FaceDetector | None = None
        self.writes_images = self.options.write_blurred_images

    def setup(self) -> None:
        if self.detector is None:
            self.detector = self._make_detector()

    def image_need(self) -> ImageNeed | None:
        self.setup()
        return ImageNeed.of_all([image_need(self.detector)])

    def output_image_source(self, source: ImageSource) -> ImageSource | None:
        # The boxes this stage records are new: whatever the source's earlier boxes were (a pool's,
        # blurred at download), these are not blurred in it until the resharder or this stage does it.
        return None if self.writes_images else replace(source, blurred=False)

    def judge(self, samples: list[Sample], shard: dict[str, Any]) -> list[Verdict]:
        self.setup()
        detections = self.detector.detect([s.image for s in samples])
        verdicts = []
        for sample, found in zip(samples, detections):
            boxes = [[float(v) for v in box[:4]] for box in np.asarray(found).reshape(-1, 5)]
            columns = {"face_bboxes": boxes}
            if not boxes or not self.writes_images:
                verdicts.append(Verdict(True, columns=columns))
                continue
            extension = sample.image_extension
            blurred = blur_boxes(Image.fromarray(sample.image), boxes)
            buffer = io.BytesIO()
            save_format = IMAGE_FORMATS[extension]
            blurred.save(buffer, save_format, **({"quality": self.options.jpeg_quality} if save_format != "PNG" else {}))
            verdicts.append(Verdict(True, columns=columns, image=buffer.getvalue()))
        return verdicts

    def process(self, ref: ShardRef) -> ShardRef:
        done = super().process(ref)
        if self.writes_images:
            self._remove_unblurred_source(ref)
        return done

    def _remove_unblurred_source(self, ref: ShardRef) -> None:
        """Once the blurred shard is complete, the job's own unblurred tar of it goes (a user's
        shards, outside the job, are never touched). Idempotent: a redelivered shard removes
        nothing twice."""
        source = image_source(ref.uri)
        if source.blurred or not _inside(source.prefix, ref.job_root):
            return
        if storage.exists(f"{source.prefix}.tar"):
            storage.remove(f"{source.prefix}.tar")


def _inside(uri: str, root: str) -> bool:
    if "://" in uri or "://" in root:
        return uri.startswith(root.rstrip("/") + "/")
    return os.path.abspath(uri).startswith(os.path.abspath(root) + os.sep)
