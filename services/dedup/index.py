"""Indexes of image descriptors in faiss: the evaluation set, and the pool seen so far.

faiss-gpu is used when the installed faiss has GPU support and a GPU is present; the CPU index
otherwise, through the same calls. Descriptors are L2-normalised, so inner product = cosine.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import faiss
import numpy as np


def _maybe_gpu(index: faiss.Index) -> faiss.Index:
    if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        return faiss.index_cpu_to_all_gpus(index)
    return index


class EvalIndex:
    """Descriptors of evaluation images; ``match`` finds pool images that copy one of them."""

    def __init__(self, index: faiss.Index, names: list[str], descriptor: str, threshold: float,
                 descriptor_threshold: float) -> None:
        self.index = _maybe_gpu(index)
        self.names = names
        self.descriptor = descriptor
        self.threshold = threshold  # the decision threshold of this index
        self.descriptor_threshold = descriptor_threshold  # the descriptor model's own, to recognise it

    @property
    def dim(self) -> int:
        return self.index.d

    @classmethod
    def build(cls, descriptors: np.ndarray, names: list[str], descriptor, threshold: float | None = None) -> EvalIndex:
        """Index ``descriptors`` made by the model ``descriptor``; ``threshold`` defaults to the model's."""
        index = faiss.IndexFlatIP(descriptors.shape[1])
        index.add(np.ascontiguousarray(descriptors, dtype=np.float32))
        return cls(index, names, descriptor.name, descriptor.threshold if threshold is None else threshold,
                   descriptor.threshold)

    def made_by(self, descriptor) -> bool:
        """Whether ``descriptor`` (local or served by Triton) is the model this index was built with."""
        return descriptor.dim == self.dim and abs(descriptor.threshold - self.descriptor_threshold) < 1e-6

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        cpu = faiss.index_gpu_to_cpu(self.index) if hasattr(faiss, "index_gpu_to_cpu") and \
            not isinstance(self.index, faiss.IndexFlat) else self.index
        faiss.write_index(cpu, str(directory / "eval.faiss"))
        (directory / "eval.json").write_text(json.dumps(
            {"descriptor": self.descriptor, "threshold": self.threshold,
             "descriptor_threshold": self.descriptor_threshold, "names": self.names}, indent=1))

    @classmethod
    def load(cls, directory: Path) -> EvalIndex:
        meta_path, index_path = directory / "eval.json", directory / "eval.faiss"
        if not meta_path.exists() or not index_path.exists():
            raise FileNotFoundError(f"{directory} holds no evaluation index (build one with `winnow dedup build-index`)")
        meta = json.loads(meta_path.read_text())
        return cls(faiss.read_index(str(index_path)), meta["names"], meta["descriptor"], meta["threshold"],
                   meta["descriptor_threshold"])

    def match(self, descriptors: np.ndarray) -> tuple[np.ndarray, list[str | None]]:
        """Best cosine per descriptor, and the evaluation image it matches (None below threshold)."""
        if self.index.ntotal == 0 or len(descriptors) == 0:
            return np.zeros(len(descriptors), np.float32), [None] * len(descriptors)
        similarity, ids = self.index.search(np.ascontiguousarray(descriptors, dtype=np.float32), 1)
        best = similarity[:, 0]
        return best, [self.names[i] if s >= self.threshold else None for s, i in zip(best, ids[:, 0])]


class PoolRegistry:
    """What the pool has seen: sha256 -> first uid, and descriptors of kept images.

    First come, first kept: a sample is a duplicate when another uid claimed the same bytes or a
    near-identical image before it. Claims are idempotent per uid, so reprocessing a shard gives
    the same answers. The registry is one SQLite file (persisted; the faiss index is rebuilt from
    it on open), so the dedup stage runs as a single consumer per job: one replica, or one per
    disjoint set of jobs.
    """

    def __init__(self, path: Path, dim: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS hashes (sha256 TEXT PRIMARY KEY, uid TEXT NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS images (id INTEGER PRIMARY KEY, uid TEXT UNIQUE NOT NULL, "
                         "descriptor BLOB NOT NULL)")
        self._lock = threading.Lock()
        self.dim = dim
        self._index = faiss.IndexIDMap(faiss.IndexFlatIP(dim))
        self._uids: dict[int, str] = {}
        rows = self._db.execute("SELECT id, uid, descriptor FROM images ORDER BY id").fetchall()
        if rows:
            vectors = np.stack([np.frombuffer(blob, np.float32) for _, _, blob in rows])
            self._index.add_with_ids(vectors, np.array([r[0] for r in rows], np.int64))
            self._uids = {r[0]: r[1] for r in rows}
        self._by_uid = {uid: i for i, uid in self._uids.items()}

    def claim_hash(self, sha256: str, uid: str) -> str:
        """The uid that owns these bytes: ``uid`` itself when it is the first to claim them."""
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO hashes (sha256, uid) VALUES (?, ?)", (sha256, uid))
            return self._db.execute("SELECT uid FROM hashes WHERE sha256 = ?", (sha256,)).fetchone()[0]

    def claim_image(self, descriptor: np.ndarray, uid: str, threshold: float) -> tuple[str, float]:
        """The uid of the first near-identical image (cosine >= threshold), or ``uid`` itself
        after registering it; with the best similarity to an earlier image."""
        vector = np.ascontiguousarray(descriptor, dtype=np.float32).reshape(1, -1)
        with self._lock:
            own = self._by_uid.get(uid)
            best_uid, best = uid, 0.0
            if self._index.ntotal:
                similarity, ids = self._index.search(vector, min(8, self._index.ntotal))
                for s, i in zip(similarity[0], ids[0]):
                    if i < 0 or i == own:
                        continue
                    if own is not None and i > own:
                        continue  # registered later: not an answer for this uid, nor on reprocessing
                    if s >= threshold:
                        return self._uids[int(i)], float(s)
                    best = max(best, float(s))
            if own is None:
                cursor = self._db.execute("INSERT INTO images (uid, descriptor) VALUES (?, ?)",
                                          (uid, vector.tobytes()))
                own = cursor.lastrowid
                self._index.add_with_ids(vector, np.array([own], np.int64))
                self._uids[own], self._by_uid[uid] = uid, own
            return best_uid, best

    def close(self) -> None:
        self._db.close()
