"""Face blurring as DataComp blurs (img2dataset's ``BoundingBoxBlurrer``), for every stage that blurs.

Boxes are ``[x0, y0, x1, y1]`` in [0, 1]. Each box is taken to pixels (``int(x * width)``),
grown by 10% of its longer side on every side, and painted into a mask; the image and the mask
are both Gaussian-blurred with sigma = 10% of the longest box side, and the blurred image is
blended in where the blurred mask is set. The soft mask reaches a few sigma beyond the grown
boxes; pixels farther away are left exactly as they were.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFilter

from winnow.shared.shards import IMAGE_FORMATS

GROWTH = 0.1  # of a box's longer side, on each side
SIGMA = 0.1  # of the longest box side

Box = Sequence[float]


def grown_pixel_boxes(boxes: Sequence[Box], width: int, height: int) -> tuple[list[tuple[int, int, int, int]], int]:
    """The boxes in pixels, grown and clipped to the image, and the longest box side (before growth)."""
    out, longest = [], 0
    for box in boxes:
        if len(box) != 4:
            raise ValueError(f"a face box is [x0, y0, x1, y1], got {list(box)}")
        x0, y0, x1, y1 = (int(box[0] * width), int(box[1] * height), int(box[2] * width), int(box[3] * height))
        side = max(x1 - x0, y1 - y0)
        longest = max(longest, side)
        grow = GROWTH * side
        x0, y0, x1, y1 = int(x0 - grow), int(y0 - grow), int(x1 + grow), int(y1 + grow)
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, width), min(y1, height)
        if x1 > x0 and y1 > y0:
            out.append((x0, y0, x1, y1))
    return out, longest


def blur_boxes(image: Image.Image, boxes: Sequence[Box]) -> Image.Image:
    """A copy of ``image`` with the regions of ``boxes`` blurred (the image itself if none apply)."""
    pixel_boxes, longest = grown_pixel_boxes(boxes, *image.size)
    sigma = SIGMA * longest
    if not pixel_boxes or sigma <= 0:
        return image
    if image.mode not in ("RGB", "L", "RGBA"):
        image = image.convert("RGB")
    mask = Image.new("L", image.size, 0)
    draw = ImageDraw.Draw(mask)
    for x0, y0, x1, y1 in pixel_boxes:
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=255)  # PIL's rectangle includes its far edge
    soft_mask = mask.filter(ImageFilter.GaussianBlur(sigma))
    blurred = image.filter(ImageFilter.GaussianBlur(sigma))
    return Image.composite(blurred, image, soft_mask)


def blur_encoded(data: bytes, extension: str, boxes: Sequence[Box], quality: int = 95) -> bytes:
    """Decode, blur ``boxes`` and encode again in the same format; the bytes unchanged if no box applies."""
    if not boxes:
        return data
    with Image.open(io.BytesIO(data)) as source:
        source.load()
        blurred = blur_boxes(source, boxes)
        if blurred is source:
            return data
        fmt = IMAGE_FORMATS.get(extension.lower(), source.format or "JPEG")
        if fmt == "JPEG" and blurred.mode == "RGBA":
            blurred = blurred.convert("RGB")
        out = io.BytesIO()
        options = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
        blurred.save(out, format=fmt, **options)
        return out.getvalue()

