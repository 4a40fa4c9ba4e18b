"""The blur stage: find faces, record them as ``face_bboxes`` and blur them in the stored image.

Boxes are ``[x0, y0, x1, y1]`` in [0, 1] of the image (DataComp's convention), blurred with
DataComp's blur (:mod:`shared.face_blur`, the resharder's and the downloader's too). Blurring
drops nothing.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from shared.curation import Sample, SampleStage, Verdict
from shared.face_blur import blur_boxes
from shared.models.base import FaceDetector
from shared.shards import IMAGE_FORMATS

@dataclass(frozen=True)
class BlurOptions:
    jpeg_quality: int = 95
    batch_size: int = 32


class BlurStage(SampleStage):
    output_columns = ("face_bboxes",)
    drop_reasons = ()
    name = "blur"

    def __init__(self, detector: Callable[[], FaceDetector], options: BlurOptions | None = None) -> None:
        self.options = options or BlurOptions()
        self.batch_size = self.options.batch_size
        self._make_detector = detector
        self.detector: FaceDetector | None = None

    def setup(self) -> None:
        if self.detector is None:
            self.detector = self._make_detector()

    def judge(self, samples: list[Sample], shard: dict[str, Any]) -> list[Verdict]:
        self.setup()
        detections = self.detector.detect([s.image for s in samples])
        verdicts = []
        for sample, found in zip(samples, detections):
            boxes = [[float(v) for v in box[:4]] for box in np.asarray(found).reshape(-1, 5)]
            columns = {"face_bboxes": boxes}
            if not boxes:
                verdicts.append(Verdict(True, columns=columns))
                continue
            extension = sample.image_extension
            blurred = blur_boxes(Image.fromarray(sample.image), boxes)
            buffer = io.BytesIO()
            save_format = IMAGE_FORMATS[extension]
            blurred.save(buffer, save_format, **({"quality": self.options.jpeg_quality} if save_format != "PNG" else {}))
            verdicts.append(Verdict(True, columns=columns, image=buffer.getvalue()))
        return verdicts
