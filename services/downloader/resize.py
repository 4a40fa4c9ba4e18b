"""One image in, one resized and encoded image out, with img2dataset's resize modes.

The decoder asks libjpeg for a reduced-size decode (DCT scaling, PIL's draft mode) when the
target is at most half the source, which is most of the work saved on large photos. Without
a draft, a reduction is an area (box) filter, as img2dataset's ``INTER_AREA``; after one, the
remaining reduction is under 2x, where a box filter blends neighbours at shifting phases, so
a Hamming filter finishes it, over the exact source region the draft covers (as close to a
full decode as Lanczos, within about 1 dB PSNR, at two thirds of its cost: see
``benchmarks/download.py``). Upscaling uses Lanczos, as img2dataset. Alpha is matted on white,
as img2dataset does.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from enum import Enum

from PIL import Image, UnidentifiedImageError


class ResizeMode(str, Enum):
    no = "no"
    keep_ratio = "keep_ratio"
    keep_ratio_largest = "keep_ratio_largest"
    center_crop = "center_crop"
    border = "border"


ENCODE_FORMATS = {"jpg": "JPEG", "webp": "WEBP", "png": "PNG"}
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
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image if image.mode == "RGB" else image.convert("RGB")


def resize_image(data: bytes, options: ResizeOptions) -> ResizedImage:
    """Decode, check, resize and encode one image; raises ResizeError with a reason."""
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
    draft_box = None
    if target is not None and source_format == "JPEG" and target[0] * 2 <= original_width:
        drafted = image.draft("RGB", target)
        if drafted is not None and image.size != (original_width, original_height):
            # The reduced image rounds the source size up; its box maps back to the exact source area.
            draft_box = drafted[1]
    keep_source = (
        options.skip_reencode
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
        image.load()
    except Exception as exc:  # truncated or corrupt data surfaces only when decoding
        raise ResizeError("decode_error", f"cannot decode image: {exc}") from exc

    image = _to_rgb(image)
    if target is not None:
        if draft_box is not None:
            resample = Image.Resampling.HAMMING
        elif target[0] < image.width:
            resample = Image.Resampling.BOX
        else:
            resample = Image.Resampling.LANCZOS
        image = image.resize(target, resample, box=draft_box)
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
