"""Decoding a stored image for the models of a stage, at the size they need.

A JPEG whose every model needs less than its stored size is decoded by libjpeg-turbo at the
smallest DCT scale (1/2, 1/4 or 1/8, through simplejpeg) that keeps what they need, as the
downloader does; most of a large photo's decode time is saved and the models see the same image
(they shrink it further themselves). Anything else, or a JPEG libjpeg-turbo will not decode to
RGB (CMYK), is decoded at full size by Pillow.
"""

from __future__ import annotations

import io

import numpy as np
import simplejpeg
from PIL import Image

from winnow.shared.models.base import ImageNeed

_JPEG_MAGIC = b"\xff\xd8"


def decode_rgb(data: bytes, need: ImageNeed | None = None) -> np.ndarray:
    """The image as uint8 RGB ``(H, W, 3)``, at a reduced scale where ``need`` allows it."""
    if need is not None and data[:2] == _JPEG_MAGIC:
        reduced = _reduced_jpeg(data, need)
        if reduced is not None:
            return reduced
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def _reduced_jpeg(data: bytes, need: ImageNeed) -> np.ndarray | None:
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        if colorspace not in ("Gray", "YCbCr", "RGB"):
            return None
        min_width, min_height = need.min_size(width, height)
        if min_width * 2 > width or min_height * 2 > height:
            return None  # no scale below 1 keeps enough: Pillow decodes it as always
        return simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=min_width, min_height=min_height)
    except ValueError:
        return None  # a JPEG libjpeg-turbo refuses here: Pillow decides (it may be more lenient)
