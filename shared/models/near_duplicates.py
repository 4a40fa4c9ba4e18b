"""Near-duplicate descriptors offline: perceptual hashes (pHash) from ``imagehash``, as vectors.

No weights: ``imagehash.phash`` (imagehash 4.3.2) turns the image to grayscale, resizes it to
64 x 64 (Lanczos), takes the 2-D DCT and keeps one bit per low-frequency coefficient of the
top-left 16 x 16 block: above the block's median or not. That gives 256 bits.

The bits become an L2-normalised vector with entries +-1/16 (+-1/sqrt(dim)), so the cosine
of two descriptors is exactly ``1 - 2 * hamming / dim`` and the same faiss inner-product index
serves these and ISC21 descriptors. ``threshold`` sits halfway between ``max_hamming`` and
``max_hamming + 1`` bits, so ``cosine >= threshold`` if and only if the Hamming distance is at
most ``max_hamming``, with no float ties.

Why ``max_hamming = 56`` of 256 (cosine threshold 0.5586): measured on 759 distinct real images
(the scikit-image photos and 739 byte-distinct openclipart PNGs, 8 KB or larger, outside
``special/``), a copy made smaller by half, cropped by 1 % on each side and saved as JPEG
quality 60 stays within 56 bits for 99.6 % of images (95th percentile 30, 99th 40 bits),
while distinct pairs lie at 82 bits or more for 99.9 % of the 287,661 pairs; the 98 distinct
pairs at or under 56 bits (3.4e-4) are recoloured icons and playing cards of one design.
pHash is weak to cropping: 3 % crops stay within 56 bits for 99.1 % of images, 4 % for 95 %;
periodic patterns (graph paper) and tiny symmetric line art hash unstably. DataComp's production
descriptor, ISC21 at cosine 0.604169, is robust to all of these.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from PIL import Image

from winnow.shared.models._checks import check_images
from winnow.shared.models.base import ImageNeed

log = logging.getLogger(__name__)


class PerceptualHashDescriptor:
    """pHash bits as L2-normalised +-1/sqrt(dim) float32 vectors; near-duplicate at <= ``max_hamming`` bits."""

    name = "phash"

    def __init__(self, hash_size: int = 16, max_hamming: int = 56) -> None:
        import imagehash

        if hash_size < 2:
            raise ValueError(f"hash_size must be >= 2, got {hash_size}")
        self.hash_size = hash_size
        self.dim = hash_size * hash_size
        if not 0 <= max_hamming < self.dim // 2:
            raise ValueError(f"max_hamming must be in [0, {self.dim // 2}), got {max_hamming}")
        self.max_hamming = max_hamming
        self.threshold = 1.0 - (2 * max_hamming + 1) / self.dim
        self._phash = imagehash.phash
        self._unit = np.float32(1.0 / math.sqrt(self.dim))
        self.load_seconds = 0.0  # no weights to load
        # imagehash shrinks to hash_size * 4 px (Lanczos); 4x that keeps the DCT-scaled decode's
        # other filter from flipping bits (tests/curation/test_reduced_decode.py bounds it).
        self.image_need = ImageNeed(shorter=hash_size * 16)

    def hash_bits(self, images: list[np.ndarray]) -> np.ndarray:
        """The pHash bits, shape (N, dim), bool."""
        check_images(images, self.name)
        out = np.empty((len(images), self.dim), dtype=bool)
        for i, image in enumerate(images):
            out[i] = self._phash(Image.fromarray(image), hash_size=self.hash_size).hash.ravel()
        return out

    def describe(self, images: list[np.ndarray]) -> np.ndarray:
        bits = self.hash_bits(images)
        return np.where(bits, self._unit, -self._unit).astype(np.float32)

    def hamming(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Hamming distances between descriptors ``a`` (..., dim) and ``b`` (..., dim)."""
        return np.rint((1.0 - np.sum(a * b, axis=-1, dtype=np.float64)) * self.dim / 2).astype(np.int64)
