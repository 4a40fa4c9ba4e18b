"""The narrow interfaces stages depend on. Each has an in-process implementation (real weights)
and a Triton-backed one (``winnow.shared.triton.remote``) with identical inputs and outputs.

Images cross these interfaces as ``uint8`` RGB arrays of shape ``(H, W, 3)``; batches are lists,
since sizes differ. Scores are ``float32`` arrays with one entry per input.

An image model may say how much of an image it looks at (``image_need``, an :class:`ImageNeed`):
a stage whose every model says so decodes a JPEG at the smallest DCT scale that keeps that much
(:mod:`winnow.shared.image_decode`). A model without it gets every image at its stored size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

Image = np.ndarray  # (H, W, 3) uint8 RGB


@dataclass(frozen=True)
class ImageNeed:
    """The least an image must keep for a model to see it as at full size: its shorter side at
    least ``shorter`` pixels and its longer side at least ``longer`` (a model that resizes to a
    fixed input needs no more; one that fits the longer side, as a face detector, says ``longer``)."""

    shorter: int = 0
    longer: int = 0

    def min_size(self, width: int, height: int) -> tuple[int, int]:
        """The smallest ``(width, height)`` of this aspect ratio that keeps what is needed, at most
        the image's own."""
        scale = min(1.0, max(self.shorter / max(1, min(width, height)), self.longer / max(1, max(width, height))))
        return min(width, math.ceil(width * scale)), min(height, math.ceil(height * scale))

    @staticmethod
    def of_all(needs: list[ImageNeed | None]) -> ImageNeed | None:
        """What a stage with these models needs: the most of each, or None when one model does not say."""
        if not needs or any(n is None for n in needs):
            return None
        return ImageNeed(max(n.shorter for n in needs), max(n.longer for n in needs))


def image_need(model: object) -> ImageNeed | None:
    """The model's ``image_need``, or None when it does not declare one."""
    need = getattr(model, "image_need", None)
    return need if isinstance(need, ImageNeed) else None


@runtime_checkable
class TextToxicity(Protocol):
    name: str

    def score(self, texts: list[str]) -> np.ndarray:
        """Probability in [0, 1] that each text is toxic, shape (N,)."""


@runtime_checkable
class ImageNSFW(Protocol):
    name: str

    def score(self, images: list[Image]) -> np.ndarray:
        """Probability in [0, 1] that each image is not safe for work, shape (N,)."""


@runtime_checkable
class FaceDetector(Protocol):
    name: str

    def detect(self, images: list[Image]) -> list[np.ndarray]:
        """Per image, an array (K, 5) of ``[x0, y0, x1, y1, score]``, coordinates in [0, 1]."""


@runtime_checkable
class NearDuplicateDescriptor(Protocol):
    name: str
    dim: int
    threshold: float  # cosine similarity at or above which two images are near-duplicates

    def describe(self, images: list[Image]) -> np.ndarray:
        """L2-normalised float32 descriptors, shape (N, dim)."""


@runtime_checkable
class ClipEncoder(Protocol):
    name: str
    dim: int

    def embed_images(self, images: list[Image]) -> np.ndarray:
        """L2-normalised float32 image embeddings, shape (N, dim)."""

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """L2-normalised float32 text embeddings, shape (N, dim)."""


@runtime_checkable
class LanguageIdentifier(Protocol):
    name: str

    def detect(self, texts: list[str]) -> list[tuple[str, float]]:
        """Per text, the most likely ISO 639-1 language code and its probability."""
