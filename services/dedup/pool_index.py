"""The index of the pool's kept images, searched a batch at a time and sized to the pool.

Two kinds, one interface (``add``, ``search`` by cosine, ``ntotal``); positions are the order
images were added in, which is the order they were kept (first come, first kept):

- ``BinaryPoolIndex``: perceptual hashes (descriptors whose entries are all +-1/sqrt(dim), see
  ``winnow.shared.models.near_duplicates``) as packed bits in a faiss binary index. The cosine of two
  such descriptors is exactly ``1 - 2 * hamming / dim``, so a search at the descriptor's cosine
  threshold is a search within a Hamming radius. Both backends find every code within that
  radius: ``IndexBinaryFlat`` (a popcount scan, about 1 ns per kept hash and query) and
  ``IndexBinaryMultiHash`` with ``nflip = radius // nhash`` (by the pigeonhole principle some
  substring then differs in at most ``nflip`` bits). ``choose_binary_backend`` picks by a cost
  model measured on this project's machine. For 256-bit pHash at radius 56 the multi-hash
  probes so many buckets that it is 50-100x slower than the scan at 200k codes, and the model
  picks the scan at every size: exact search at 22 % of the bits is linear in practice. The
  multi-hash wins only at small radii (a few bits).
- ``FloatPoolIndex``: ISC21-like float descriptors, ``IndexFlatIP`` (exact) up to
  ``flat_limit`` kept images; past it, an index built once from a faiss factory string
  (default ``IVF1024,Flat``, searched with ``nprobe=32``), trained on everything kept so far.
  IVF is approximate: a near-duplicate whose original falls in a list not probed is missed.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import faiss
import numpy as np

from winnow.services.dedup.options import PoolIndexConfig

log = logging.getLogger(__name__)

# Measured with faiss 1.15 on the project's 2-core machine (256-bit codes, 200k of them):
# a scan costs ~1 ns per code and query; the multi-hash ~100 ns per bucket probed and ~300 ns per
# candidate it verifies.
SCAN_NS_PER_CODE = 1.0
MULTIHASH_NS_PER_PROBE = 100.0
MULTIHASH_NS_PER_CANDIDATE = 300.0


def sign_bits(descriptors: np.ndarray) -> np.ndarray | None:
    """The packed sign bits (uint8, (N, dim/8)) when every entry is +-1/sqrt(dim), else None."""
    descriptors = np.asarray(descriptors, dtype=np.float32)
    if descriptors.ndim != 2 or descriptors.shape[1] % 8 or descriptors.size == 0:
        return None
    unit = 1.0 / math.sqrt(descriptors.shape[1])
    if not np.allclose(np.abs(descriptors), unit, rtol=0, atol=1e-6):
        return None
    return np.packbits(descriptors > 0, axis=1)


def hamming_radius(threshold: float, dim: int) -> int:
    """The largest Hamming distance whose cosine ``1 - 2h/dim`` is still >= ``threshold``."""
    return int(math.floor((1.0 - threshold) * dim / 2 + 1e-9))


@dataclass(frozen=True)
class MultiHashPlan:
    nhash: int
    bits: int
    nflip: int
    ns_per_query: float


def multihash_plan(dim: int, radius: int, n: int) -> MultiHashPlan | None:
    """The cheapest exact multi-hash layout for ``n`` uniformly spread codes, by the cost model."""
    best = None
    for bits in range(4, 65):
        for nhash in range(1, dim // bits + 1):
            nflip = radius // nhash
            if nflip >= bits:
                continue
            probes = nhash * sum(math.comb(bits, k) for k in range(nflip + 1))
            candidates = min(float(n), probes * n / 2.0 ** bits)
            cost = probes * MULTIHASH_NS_PER_PROBE + candidates * MULTIHASH_NS_PER_CANDIDATE
            if best is None or cost < best.ns_per_query:
                best = MultiHashPlan(nhash, bits, nflip, cost)
    return best


def choose_binary_backend(dim: int, radius: int, n: int) -> MultiHashPlan | None:
    """A multi-hash plan when the cost model says it beats the scan at ``n`` codes, else None."""
    plan = multihash_plan(dim, radius, n)
    if plan is not None and plan.ns_per_query < SCAN_NS_PER_CODE * n:
        return plan
    return None


class BinaryPoolIndex:
    """Packed hashes; ``search`` finds every code within ``radius`` bits (and the nearest ones)."""

    def __init__(self, dim: int, radius: int, backend: str = "auto") -> None:
        if backend not in ("auto", "flat", "multihash"):
            raise ValueError(f"binary_backend must be auto, flat or multihash, got {backend!r}")
        self.dim, self.radius, self.backend = dim, radius, backend
        self._codes = np.empty((0, dim // 8), np.uint8)
        self._count = 0
        self.plan: MultiHashPlan | None = None
        self._planned_at = 0
        self._index: faiss.IndexBinary = self._build(0)

    @property
    def ntotal(self) -> int:
        return self._count

    @property
    def kind(self) -> str:
        return "flat" if self.plan is None else f"multihash({self.plan.nhash}x{self.plan.bits},nflip={self.plan.nflip})"

    def _build(self, n: int) -> faiss.IndexBinary:
        if self.backend == "multihash" or (self.backend == "auto" and choose_binary_backend(self.dim, self.radius, n)):
            self.plan = multihash_plan(self.dim, self.radius, max(n, 1))
            index = faiss.IndexBinaryMultiHash(self.dim, self.plan.nhash, self.plan.bits)
            index.nflip = self.plan.nflip
        else:
            self.plan = None
            index = faiss.IndexBinaryFlat(self.dim)
        if n:
            index.add(self._codes[:n])
        return index

    def add(self, codes: np.ndarray) -> None:
        codes = np.ascontiguousarray(codes, dtype=np.uint8)
        needed = self._count + len(codes)
        if needed > len(self._codes):
            grown = np.empty((max(needed, 2 * len(self._codes), 1024), self.dim // 8), np.uint8)
            grown[:self._count] = self._codes[:self._count]
            self._codes = grown
        self._codes[self._count:needed] = codes
        self._count = needed
        if self.backend == "auto" and needed >= 2 * max(self._planned_at, 1024):
            # Re-plan as the pool doubles; rebuild only when the backend changes.
            self._planned_at = needed
            if (choose_binary_backend(self.dim, self.radius, needed) is None) != (self.plan is None):
                self._index = self._build(needed)
                log.info("pool index: %s at %d hashes", self.kind, needed)
                return
        self._index.add(codes)

    def search(self, codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Cosines ``1 - 2h/dim`` and positions of the ``k`` nearest codes found (position -1: none)."""
        distances, positions = self._index.search(np.ascontiguousarray(codes, dtype=np.uint8), k)
        similarity = 1.0 - 2.0 * distances.astype(np.float64) / self.dim
        return np.where(positions >= 0, similarity, -np.inf), positions


class FloatPoolIndex:
    """Float descriptors (inner product = cosine): flat up to ``flat_limit``, then a factory index."""

    def __init__(self, dim: int, config: PoolIndexConfig) -> None:
        self.dim, self.config = dim, config
        self._vectors = np.empty((0, dim), np.float32)
        self._count = 0
        self._index: faiss.Index = faiss.IndexFlatIP(dim)
        self.kind = "flat"

    @property
    def ntotal(self) -> int:
        return self._count

    def add(self, vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        needed = self._count + len(vectors)
        if needed > len(self._vectors):
            grown = np.empty((max(needed, 2 * len(self._vectors), 1024), self.dim), np.float32)
            grown[:self._count] = self._vectors[:self._count]
            self._vectors = grown
        self._vectors[self._count:needed] = vectors
        self._count = needed
        if self.kind == "flat" and needed > self.config.flat_limit:
            self._index = self._trained(self._vectors[:needed])
            return
        self._index.add(vectors)

    def _trained(self, vectors: np.ndarray) -> faiss.Index:
        try:
            index = faiss.index_factory(self.dim, self.config.factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise ValueError(f"faiss cannot build {self.config.factory!r}: {exc}") from exc
        index.train(vectors)
        index.add(vectors)
        if self.config.search_params:
            faiss.ParameterSpace().set_index_parameters(index, self.config.search_params)
        self.kind = self.config.factory
        log.info("pool index: %s (%s) trained on %d descriptors", self.config.factory, self.config.search_params,
                 len(vectors))
        return index

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        similarity, positions = self._index.search(np.ascontiguousarray(vectors, dtype=np.float32), k)
        return np.where(positions >= 0, similarity.astype(np.float64), -np.inf), positions
