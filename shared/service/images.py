"""Decoding images that arrive in API requests, with clear errors and a pixel cap."""

from __future__ import annotations

import io

import grpc
import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_ITEMS = 256
MAX_PIXELS = 50_000_000


def check_count(items, context, what: str = "items") -> None:
    if not items:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"no {what} given")
    if len(items) > MAX_ITEMS:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"at most {MAX_ITEMS} {what} per call, got {len(items)}")


def decode_image(data: bytes) -> np.ndarray:
    """uint8 RGB (H, W, 3); ValueError with the reason when the bytes are not a usable image."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_PIXELS:
                raise ValueError(f"image of {image.width}x{image.height} pixels is over the {MAX_PIXELS} cap")
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"not a decodable image: {exc}") from exc


def decode_images(messages, context) -> list[np.ndarray]:
    """Decode every ``ImageBytes`` of a request, or abort with INVALID_ARGUMENT naming the bad one."""
    check_count(messages, context, "images")
    images = []
    for index, message in enumerate(messages):
        try:
            images.append(decode_image(message.data))
        except ValueError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"image {index}: {exc}")
    return images
