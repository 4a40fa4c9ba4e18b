"""One image in, one resized and encoded image out, with img2dataset's resize modes.

A JPEG that shrinks at least 2x is decoded by libjpeg-turbo at a reduced DCT scale (1/2, 1/4
or 1/8, through simplejpeg), which is most of the work saved on large photos, and finished with
OpenCV's bicubic (the remaining reduction is under 2x); this costs about half of a full decode
and resize and stays within 2/255 mean absolute difference of it (see
``tests/downloader/test_resize.py`` and ``benchmarks/download.py``). Other images go through
PIL: a plain reduction is an area (box) filter, as img2dataset's ``INTER_AREA``, an upscale is
Lanczos, as img2dataset's. Alpha is matted on white, as img2dataset does.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from enum import Enum

import cv2
import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

from winnow.shared.shards import IMAGE_EXTENSIONS, IMAGE_FORMATS

cv2.setNumThreads(1)  # parallelism comes from the downloader's threads and processes


class ResizeMode(str, Enum):
    no = "no"
    keep_ratio = "keep_ratio"
    keep_ratio_largest = "keep_ratio_largest"
    center_crop = "center_crop"
    border = "border"


ENCODE_FORMATS = {extension: IMAGE_FORMATS[extension] for extension in IMAGE_EXTENSIONS}
MIME_TYPES = {"jpg": "image/jpeg", "webp": "image/webp", "png": "image/png"}


class ResizeError(Exception):
    """The bytes are not a usable image; ``reason`` is the ledger's machine-readable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ResizeOptions:
    """img2dataset's resizer options, with DataComp's defaults."""

    image_size: int = 512
    resize_mode: ResizeMode = ResizeMode.keep_ratio_largest
    resize_only_if_bigger: bool = True  # DataComp downloads with this on
    encode_format: str = "jpg"
    encode_quality: int = 95  # jpg/webp quality; png compression level 0-9
    skip_reencode: bool = False  # keep the source bytes when no resize is needed and the format matches
    disable_all_reencoding: bool = False  # img2dataset's: keep the source bytes as they are, no resize
    min_image_size: int = 0
    max_image_area: float = float("inf")
    max_aspect_ratio: float = float("inf")
    max_image_pixels: int = 89_478_485  # decompression-bomb guard, checked before decoding

    def __post_init__(self) -> None:
        object.__setattr__(self, "resize_mode", ResizeMode(self.resize_mode))
        if self.encode_format not in ENCODE_FORMATS:
            raise ValueError(f"encode_format must be one of {sorted(ENCODE_FORMATS)}, got {self.encode_format!r}")
        if self.encode_format == "png" and not 0 <= self.encode_quality <= 9:
            raise ValueError(f"for png, encode_quality is the compression level 0-9, got {self.encode_quality}")
        if self.image_size <= 0:
            raise ValueError(f"image_size must be positive, got {self.image_size}")


@dataclass(frozen=True)
class ResizedImage:
    data: bytes
    width: int
    height: int
    original_width: int
    original_height: int
    extension: str


def _target_size(width: int, height: int, options: ResizeOptions) -> tuple[int, int] | None:
    """The size to scale to before any crop or pad, or None to keep the size."""
    size, mode = options.image_size, options.resize_mode
    if mode is ResizeMode.no:
        return None
    if mode in (ResizeMode.keep_ratio, ResizeMode.center_crop):
        side = min(width, height)
    else:
        side = max(width, height)
    if options.resize_only_if_bigger and side <= size:
        return None
    scale = size / side
    if mode in (ResizeMode.keep_ratio, ResizeMode.center_crop):
        # The short side lands exactly on image_size, as albumentations' smallest_max_size.
        return (size, max(1, round(height * scale))) if width <= height else (max(1, round(width * scale)), size)
    return (size, max(1, round(height * scale))) if width >= height else (max(1, round(width * scale)), size)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode.startswith("I;16") or (image.mode == "I" and image.getextrema()[1] > 255):
        # 16-bit samples (a 16-bit grayscale PNG): PIL's conversion would clip them to white.
        image = Image.fromarray((np.asarray(image, dtype=np.uint32) >> 8).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image if image.mode == "RGB" else image.convert("RGB")


def _scaled_jpeg(data: bytes, target: tuple[int, int], original: tuple[int, int]) -> Image.Image | None:
    """Decode a JPEG at the smallest power-of-two DCT scale (1/2, 1/4, 1/8) that still covers
    ``target`` (libjpeg-turbo through simplejpeg), then finish with OpenCV's bicubic.

    The scaled decode rounds the size up (2137 px at 1/4 gives 535 px for 534.25 px of
    source), so it is scaled by the exact source ratio and cropped, keeping pixels aligned.
    None when this path does not apply (CMYK, corrupt data): PIL takes over, and reports.
    """
    try:
        pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=target[0], min_height=target[1],
                                        min_factor=2, strict=True)
    except ValueError:
        return None
    height, width = pixels.shape[:2]
    factor = 2 ** round(math.log2(original[0] / width))
    scaled = (max(target[0], round(width * target[0] * factor / original[0])),
              max(target[1], round(height * target[1] * factor / original[1])))
    pixels = cv2.resize(pixels, scaled, interpolation=cv2.INTER_CUBIC)[: target[1], : target[0]]
    return Image.fromarray(np.ascontiguousarray(pixels))


def _resized_with_pil(image: Image.Image, target: tuple[int, int] | None, original_width: int) -> Image.Image:
    """Any format PIL reads: a draft (reduced-size JPEG decode) when it helps, then a resample."""
    draft_box = None
    if target is not None and image.format == "JPEG" and target[0] * 2 <= original_width:
        drafted = image.draft("RGB", target)
        if drafted is not None and image.size[0] != original_width:
            # The reduced image rounds the source size up; its box maps back to the exact source area.
            draft_box = drafted[1]
    image.load()
    image = _to_rgb(image)
    if target is None:
        return image
    if draft_box is not None:
        resample = Image.Resampling.HAMMING
    elif target[0] < image.width:
        resample = Image.Resampling.BOX
    else:
        resample = Image.Resampling.LANCZOS
    return image.resize(target, resample, box=draft_box)


def with_end_of_image(data: bytes) -> bytes:
    """A JPEG that lacks only its end-of-image marker, with the marker; any other bytes as they are.

    Many encoders and servers drop the final ``FFD9``; the pixels are all there. The marker is
    added only when a strict decode (libjpeg-turbo, which fails on "premature end of data") then
    succeeds, so a JPEG truncated inside its image data stays a ``decode_error``.
    """
    if not data.startswith(b"\xff\xd8") or data.endswith(b"\xff\xd9"):
        return data
    completed = data + b"\xff\xd9"
    try:
        simplejpeg.decode_jpeg(completed, colorspace="GRAY", min_factor=8, strict=True)
    except ValueError:
        return data
    return completed


def resize_image(data: bytes, options: ResizeOptions, boxes: list | None = None) -> ResizedImage:
    """Decode, check, resize and encode one image; raises ResizeError with a reason.

    ``boxes`` (``[x0, y0, x1, y1]``, normalised) are blurred on the full-size image before
    resizing, with DataComp's blur, as img2dataset's ``bbox_col`` does.
    """
    data = with_end_of_image(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise ResizeError("not_an_image", "the bytes are not an image PIL can identify") from exc
    except Image.DecompressionBombError as exc:
        raise ResizeError("decompression_bomb", str(exc)) from exc
    except Exception as exc:
        raise ResizeError("decode_error", f"cannot open image: {exc}") from exc
    original_width, original_height = image.size
    if original_width <= 0 or original_height <= 0:
        raise ResizeError("decode_error", f"image has an empty size {image.size}")
    if original_width * original_height > options.max_image_pixels:
        raise ResizeError("decompression_bomb", f"{original_width}x{original_height} pixels is over the cap of "
                          f"{options.max_image_pixels}")
    if min(original_width, original_height) < options.min_image_size:
        raise ResizeError("image_too_small", "image too small")
    if original_width * original_height > options.max_image_area:
        raise ResizeError("image_area_too_large", "image area too large")
    if max(original_width, original_height) / min(original_width, original_height) > options.max_aspect_ratio:
        raise ResizeError("aspect_ratio_too_large", "aspect ratio too large")

    target = _target_size(original_width, original_height, options)
    source_format = image.format
    if options.disable_all_reencoding:
        try:
            image.verify()
        except Exception as exc:
            raise ResizeError("decode_error", f"cannot decode image: {exc}") from exc
        # img2dataset keeps the bytes as they came and names them by encode_format.
        return ResizedImage(data, original_width, original_height, original_width, original_height,
                            options.encode_format)
    keep_source = (
        not boxes
        and options.skip_reencode
        and target is None
        and options.resize_mode is not ResizeMode.border
        and ENCODE_FORMATS[options.encode_format] == source_format
        and image.mode in ("RGB", "L")
    )
    try:
        if keep_source:
            image.verify()  # checks the data without decoding the pixels
            return ResizedImage(data, original_width, original_height, original_width, original_height,
                                options.encode_format)
        resized = None
        if boxes:
            from winnow.shared.face_blur import blur_boxes  # DataComp's blur, shared with the resharder

            image.load()
            image = blur_boxes(_to_rgb(image), boxes)
            resized = _resized_with_pil(image, target, original_width)
        elif (target is not None and source_format == "JPEG" and image.mode in ("RGB", "L")
                and target[0] * 2 <= original_width):
            resized = _scaled_jpeg(data, target, (original_width, original_height))
        if resized is None:
            resized = _resized_with_pil(image, target, original_width)
        image = resized
    except ResizeError:
        raise
    except Exception as exc:  # truncated or corrupt data surfaces only when decoding
        raise ResizeError("decode_error", f"cannot decode image: {exc}") from exc

    if options.resize_mode is ResizeMode.center_crop and target is not None:
        size = options.image_size
        left, top = (image.width - size) // 2, (image.height - size) // 2
        image = image.crop((left, top, left + size, top + size))
    elif options.resize_mode is ResizeMode.border and target is not None:
        size = options.image_size
        canvas = Image.new("RGB", (size, size), (255, 255, 255))
        canvas.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
        image = canvas

    buffer = io.BytesIO()
    fmt = ENCODE_FORMATS[options.encode_format]
    if fmt == "PNG":
        image.save(buffer, fmt, compress_level=options.encode_quality)
    else:
        image.save(buffer, fmt, quality=options.encode_quality)
    return ResizedImage(buffer.getvalue(), image.width, image.height, original_width, original_height,
                        options.encode_format)
