"""The blur stage: find faces, record them as ``face_bboxes`` and blur them in the stored image.

Boxes are ``[x0, y0, x1, y1]`` in [0, 1] of the image (DataComp's convention). Each box is
widened a little and blurred with a Gaussian whose radius grows with the face, so the face is
not recognisable and the rest of the image is untouched. Blurring drops nothing.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from shared.curation import Sample, SampleStage, Verdict
from shared.models.base import FaceDetector

SAVE_FORMATS = {"jpg": "JPEG", "webp": "WEBP", "png": "PNG"}


@dataclass(frozen=True)
class BlurOptions:
    margin: float = 0.1  # the box grows by this fraction of its size on each side
    radius_fraction: float = 0.15  # Gaussian radius as a fraction of the box's larger side
    jpeg_quality: int = 95
    batch_size: int = 32


def blur_boxes(image: Image.Image, boxes: list[list[float]], options: BlurOptions = BlurOptions()) -> Image.Image:
    """A copy of ``image`` with each normalised box blurred."""
    out = image.copy()
    width, height = image.size
    for x0, y0, x1, y1 in boxes:
        bw, bh = (x1 - x0) * width, (y1 - y0) * height
        left = max(0, int(x0 * width - options.margin * bw))
        top = max(0, int(y0 * height - options.margin * bh))
        right = min(width, int(np.ceil(x1 * width + options.margin * bw)))
        bottom = min(height, int(np.ceil(y1 * height + options.margin * bh)))
        if right <= left or bottom <= top:
            continue
        region = out.crop((left, top, right, bottom))
        radius = max(2.0, options.radius_fraction * max(right - left, bottom - top))
        out.paste(region.filter(ImageFilter.GaussianBlur(radius)), (left, top))
    return out


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
            blurred = blur_boxes(Image.fromarray(sample.image), boxes, self.options)
            buffer = io.BytesIO()
            save_format = SAVE_FORMATS[extension]
            blurred.save(buffer, save_format, **({"quality": self.options.jpeg_quality} if save_format != "PNG" else {}))
            verdicts.append(Verdict(True, columns=columns, image=buffer.getvalue()))
        return verdicts
