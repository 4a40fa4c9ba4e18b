"""The wire contract between winnow's Triton models and their clients.

One table, :data:`SIGNATURES`, says for each kind of model which interface method it serves,
what its inputs are and which outputs it returns. The repository generator writes
``config.pbtxt`` from it, the python-backend runtime answers by it and the remote clients read by
it, so a tensor name or shape is spelled in one place only.

Every model takes one item per batch row (``max_batch_size > 0``, dynamic batching):

* an item (a UTF-8 text, an image) is a row of a ``UINT8`` tensor, zero-padded to the longest
  item of its request, with its true length in a companion ``INT32`` tensor (``TEXT`` and
  ``TEXT_LENGTH``, ``IMAGE`` and ``IMAGE_LENGTH``); the inputs allow ragged batches, so requests
  of different widths share a batch;
* an image row is either a *raw frame* (:func:`encode_image`: a 16-byte header with the height
  and width, then the ``H x W x 3`` uint8 RGB pixels) or any encoded image Pillow reads (JPEG,
  PNG, WebP, ...). The remote clients send raw frames: lossless, so a model answers over Triton
  exactly as in-process, and about 1000x cheaper than PNG (0.1 ms against 50-130 ms to encode a
  512 x 512 image; JPEG is cheap but lossy). Encoded bytes are accepted so that a caller holding a
  JPEG from a shard can send it without decoding it first;
* an image model whose preprocessing begins with :func:`fit_image` at some side ``S`` (CLIP's:
  the shorter side resized to ``S`` with PIL's bicubic filter, then the centre ``S x S`` crop)
  declares ``S`` in its configuration (:data:`PARAM_IMAGE_FIT`). Fitting an image that is already
  ``S x S`` changes nothing, so the model answers the fitted image exactly as the original, and
  the remote client fits each image before sending it: for a 512 x 512 image and a 224 px CLIP,
  a fifth of the bytes to copy, send and unpack (147 KiB against 768 KiB), the resize is paid by
  the client instead of the model's stub, and all images of a call are of one size, so they go
  as full batches. The model still takes images of any size, from older clients or any other
  caller: no contract version changes;
* outputs are ``FP32`` per row, except the face count (``INT32``) and the language code
  (``UINT8``, ASCII zero-padded to the longest code of the response).

No ``BYTES`` (``TYPE_STRING``) tensors: the python-backend stub bundled in ``nvidia-pytriton``
is built against numpy 1, and under numpy 2 its numpy conversions misread the element size
(``as_numpy()`` returns the first element repeated, numpy outputs arrive empty, a ``BYTES``
input kills the stub). Tensors therefore cross the stub by DLPack only, which carries its own
dtype and shape, and DLPack has no strings.

Faces are ragged (K boxes per image). A face detector answers, per request of N images,
``BOXES`` of shape ``(N, K, 5)`` (``[x0, y0, x1, y1, score]``, zero-padded; K is the most faces
any image of the request has, at least 1) and ``BOX_COUNT`` of shape ``(N, 1)``; image ``i`` has
``BOXES[i, :BOX_COUNT[i, 0]]``. Padding keeps the batch dimension first, as Triton requires,
and each response is padded on its own, so one crowded photo widens only its own request.
"""

from __future__ import annotations

import enum
import io
import struct
from dataclasses import dataclass

import numpy as np

# tensor names
TEXT = "TEXT"
TEXT_LENGTH = "TEXT_LENGTH"
IMAGE = "IMAGE"
IMAGE_LENGTH = "IMAGE_LENGTH"
SCORE = "SCORE"
BOXES = "BOXES"
BOX_COUNT = "BOX_COUNT"
DESCRIPTOR = "DESCRIPTOR"
EMBEDDING = "EMBEDDING"
LANGUAGE = "LANGUAGE"
PROBABILITY = "PROBABILITY"

# config.pbtxt parameters the runtime reads (all string values, as Triton stores them)
PARAM_KIND = "winnow_kind"
PARAM_FACTORY = "winnow_factory"
PARAM_FACTORY_KWARGS = "winnow_factory_kwargs"  # JSON object
PARAM_DIM = "winnow_dim"
PARAM_THRESHOLD = "winnow_threshold"
PARAM_IMAGE_FIT = "winnow_image_fit"  # image models: the side S of the fit_image their preprocessing begins with

#: the largest image an encoded (JPEG, PNG, ...) row may decode to; raw frames are bounded by
#: the request size instead
MAX_DECODED_PIXELS = 100_000_000


class ModelKind(str, enum.Enum):
    TEXT_TOXICITY = "text_toxicity"
    IMAGE_NSFW = "image_nsfw"
    FACE_DETECTOR = "face_detector"
    NEAR_DUPLICATE = "near_duplicate"
    CLIP_IMAGE = "clip_image"
    CLIP_TEXT = "clip_text"
    LANGUAGE_ID = "language_id"


def clip_tower_name(model: str, kind: ModelKind) -> str:
    """The Triton name of one tower of the CLIP model ``model``: ``<model>_image`` or ``<model>_text``."""
    suffixes = {ModelKind.CLIP_IMAGE: "_image", ModelKind.CLIP_TEXT: "_text"}
    return model + suffixes[ModelKind(kind)]


DIM = "dim"  # placeholder in a tensor's dims for the model's embedding size


@dataclass(frozen=True)
class TensorSpec:
    name: str
    data_type: str  # Triton config type, e.g. "TYPE_FP32"
    dims: tuple[int | str, ...]  # per batch row; DIM stands for the model's embedding size
    ragged: bool = False  # inputs only: requests of different widths may share a batch


@dataclass(frozen=True)
class KindSignature:
    method: str  # the interface method (winnow.shared.models.base) the model is called through
    item: str  # TEXT or IMAGE: what one row carries
    outputs: tuple[TensorSpec, ...]
    needs_dim: bool = False
    needs_threshold: bool = False

    @property
    def inputs(self) -> tuple[TensorSpec, TensorSpec]:
        return item_inputs(self.item)


def item_inputs(item: str) -> tuple[TensorSpec, TensorSpec]:
    """The two input tensors of one item: its zero-padded bytes and its length."""
    return (TensorSpec(item, "TYPE_UINT8", (-1,), ragged=True),
            TensorSpec(f"{item}_LENGTH", "TYPE_INT32", (1,), ragged=True))


_SCORE_OUT = TensorSpec(SCORE, "TYPE_FP32", (1,))

SIGNATURES: dict[ModelKind, KindSignature] = {
    ModelKind.TEXT_TOXICITY: KindSignature("score", TEXT, (_SCORE_OUT,)),
    ModelKind.IMAGE_NSFW: KindSignature("score", IMAGE, (_SCORE_OUT,)),
    ModelKind.FACE_DETECTOR: KindSignature(
        "detect", IMAGE, (TensorSpec(BOXES, "TYPE_FP32", (-1, 5)), TensorSpec(BOX_COUNT, "TYPE_INT32", (1,)))
    ),
    ModelKind.NEAR_DUPLICATE: KindSignature(
        "describe", IMAGE, (TensorSpec(DESCRIPTOR, "TYPE_FP32", (DIM,)),), needs_dim=True, needs_threshold=True
    ),
    ModelKind.CLIP_IMAGE: KindSignature("embed_images", IMAGE, (TensorSpec(EMBEDDING, "TYPE_FP32", (DIM,)),),
                                        needs_dim=True),
    ModelKind.CLIP_TEXT: KindSignature("embed_texts", TEXT, (TensorSpec(EMBEDDING, "TYPE_FP32", (DIM,)),),
                                       needs_dim=True),
    ModelKind.LANGUAGE_ID: KindSignature(
        "detect", TEXT, (TensorSpec(LANGUAGE, "TYPE_UINT8", (-1,)), TensorSpec(PROBABILITY, "TYPE_FP32", (1,)))
    ),
}


# --- rows ---------------------------------------------------------------------------------------


def pack_rows(items: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Items as a zero-padded ``(N, L)`` uint8 array (L >= 1) and their ``(N, 1)`` int32 lengths."""
    lengths = np.array([len(item) for item in items], dtype=np.int32).reshape(-1, 1)
    rows = np.zeros((len(items), max(1, int(lengths.max(initial=0)))), dtype=np.uint8)
    for i, item in enumerate(items):
        rows[i, : len(item)] = np.frombuffer(item, dtype=np.uint8)
    return rows, lengths


def unpack_rows(rows: np.ndarray, lengths: np.ndarray) -> list[bytes]:
    """The inverse of :func:`pack_rows`; ``ValueError`` if the two do not fit together."""
    lengths = np.asarray(lengths).reshape(-1)
    if rows.ndim != 2 or rows.dtype != np.uint8:
        raise ValueError(f"rows must be a 2-D uint8 array, got {rows.dtype} {rows.shape}")
    if len(lengths) != rows.shape[0]:
        raise ValueError(f"{rows.shape[0]} rows but {len(lengths)} lengths")
    bad = np.flatnonzero((lengths < 0) | (lengths > rows.shape[1]))
    if bad.size:
        raise ValueError(f"row {bad[0]}: length {lengths[bad[0]]} outside 0..{rows.shape[1]}")
    return [rows[i, : int(n)].tobytes() for i, n in enumerate(lengths)]


# --- images -------------------------------------------------------------------------------------

_RAW_MAGIC = b"WNRGB8\x00\x01"  # format name and version
_RAW_HEADER = struct.Struct("<8sII")  # magic, height, width


def encode_image(image: np.ndarray) -> bytes:
    """A uint8 RGB ``(H, W, 3)`` array as one raw frame (header + pixels, lossless)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) RGB array, got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    return _RAW_HEADER.pack(_RAW_MAGIC, height, width) + np.ascontiguousarray(image).tobytes()


def fit_image(image: np.ndarray, size: int) -> np.ndarray:
    """``image`` with its shorter side resized to ``size`` (PIL bicubic) and cropped to the centre ``size x size``.

    Pixel for pixel what torchvision's ``Resize(size, InterpolationMode.BICUBIC)`` and then
    ``CenterCrop(size)`` make of it as a PIL image (open_clip's preprocessing for its default
    ``resize_mode="shortest"``), with torchvision's arithmetic: the longer side becomes
    ``int(size * long / short)``, the crop's corner ``round((side - size) / 2)``. A ``size x size``
    image is returned as it is, as torchvision leaves it, so fitting twice is fitting once.
    """
    from PIL import Image

    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) RGB array, got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    if (height, width) == (size, size):
        return image
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(size * long / short)
    new_width, new_height = (size, new_long) if width <= height else (new_long, size)
    picture = Image.fromarray(image)
    if (new_height, new_width) != (height, width):
        picture = picture.resize((new_width, new_height), Image.Resampling.BICUBIC)
    top, left = int(round((new_height - size) / 2.0)), int(round((new_width - size) / 2.0))
    return np.asarray(picture.crop((left, top, left + size, top + size)))


def decode_image(data: bytes) -> np.ndarray:
    """One image row back to a uint8 RGB ``(H, W, 3)`` array; ``ValueError`` if it is not an image.

    A raw frame is returned as a read-only view of ``data``; encoded images are decoded by Pillow.
    """
    if data[: len(_RAW_MAGIC)] == _RAW_MAGIC:
        if len(data) < _RAW_HEADER.size:
            raise ValueError(f"raw image frame is truncated: {len(data)} bytes, the header alone is {_RAW_HEADER.size}")
        _, height, width = _RAW_HEADER.unpack_from(data)
        expected = _RAW_HEADER.size + height * width * 3
        if height == 0 or width == 0 or len(data) != expected:
            raise ValueError(f"raw image frame of {height}x{width} must be {expected} bytes, got {len(data)}")
        return np.frombuffer(data, dtype=np.uint8, offset=_RAW_HEADER.size).reshape(height, width, 3)
    return _decode_encoded_image(data)


def _decode_encoded_image(data: bytes) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            if width * height > MAX_DECODED_PIXELS:
                raise ValueError(f"image of {width}x{height} pixels exceeds the {MAX_DECODED_PIXELS} pixel limit")
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"neither a raw frame nor an image Pillow can decode ({len(data)} bytes, "
                         f"starting {data[:8].hex()}): {exc}") from None


# --- texts --------------------------------------------------------------------------------------


def decode_text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"text is not valid UTF-8: {exc}") from None
