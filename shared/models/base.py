"""The narrow interfaces stages depend on. Each has an in-process implementation (real weights)
and a Triton-backed one (``shared.triton.remote``) with identical inputs and outputs.

Images cross these interfaces as ``uint8`` RGB arrays of shape ``(H, W, 3)``; batches are lists,
since sizes differ. Scores are ``float32`` arrays with one entry per input.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

Image = np.ndarray  # (H, W, 3) uint8 RGB


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
