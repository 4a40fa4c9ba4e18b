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

from winnow.services.dedup.pool_index import BinaryPoolIndex, FloatPoolIndex, PoolIndexConfig, hamming_radius, sign_bits


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
    """What the pool has seen: where each uid first occurs, sha256 -> first uid, the kept images, and
    every near-duplicate answer.

    First come, first kept: a sample is a duplicate when another uid claimed the same bytes or a
    near-identical image before it. Claims are made a batch at a time (one index search per
    batch; the batch's own earlier kept images are compared in memory), and each answer is
    recorded per uid, so reprocessing a shard gives the same answers whatever was kept since.

    The registry is one SQLite file; the index of kept images (``pool_index``) is rebuilt from it
    on open. Writes stay in one open transaction until ``commit``, which the stage calls once per
    shard before the shard's completion marker: a crash before it loses only claims that no
    finished shard's answers rest on (every claim made so far is committed with each shard, so a
    shard whose marker exists never depends on a claim that was not made durable with it). The
    dedup stage therefore runs as a single writer per job: one replica, or one per disjoint set of
    jobs.
    """

    def __init__(self, path: Path, dim: int, threshold: float, *, binary: bool,
                 config: PoolIndexConfig | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS hashes (sha256 TEXT PRIMARY KEY, uid TEXT NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS images (id INTEGER PRIMARY KEY, uid TEXT UNIQUE NOT NULL, "
                         "descriptor BLOB NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS answers (uid TEXT PRIMARY KEY, owner TEXT NOT NULL, "
                         "similarity REAL NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS occurrences (uid TEXT PRIMARY KEY, shard INTEGER NOT NULL, "
                         "key TEXT NOT NULL)")
        self._lock = threading.Lock()
        self.dim, self.threshold, self.binary = dim, threshold, binary
        config = config or PoolIndexConfig()
        self.index = (BinaryPoolIndex(dim, hamming_radius(threshold, dim), config.binary_backend) if binary
                      else FloatPoolIndex(dim, config))
        self._uids: list[str] = []  # position in the index -> uid
        self._positions: dict[str, int] = {}
        self._load()

    def _load(self) -> None:
        packed_size, float_size = self.dim // 8, self.dim * 4
        cursor = self._db.execute("SELECT uid, descriptor FROM images ORDER BY id")
        while rows := cursor.fetchmany(100_000):
            blobs = [blob for _, blob in rows]
            if self.binary and all(len(b) == packed_size for b in blobs):
                self.index.add(np.frombuffer(b"".join(blobs), np.uint8).reshape(len(rows), packed_size))
            elif all(len(b) == float_size for b in blobs):
                vectors = np.frombuffer(b"".join(blobs), np.float32).reshape(len(rows), self.dim)
                if self.binary:  # a registry written before hashes were stored packed
                    bits = sign_bits(vectors)
                    if bits is None:
                        raise ValueError("the pool registry holds float descriptors, not hashes: another descriptor "
                                         "made it; use another registry_dir")
                    vectors = bits
                self.index.add(vectors)
            else:
                raise ValueError(f"the pool registry holds descriptors of another size than {self.dim}-d "
                                 f"{'hashes' if self.binary else 'floats'}: another descriptor made it; "
                                 "use another registry_dir")
            for uid, _ in rows:
                self._positions[uid] = len(self._uids)
                self._uids.append(uid)

    def _write(self, sql: str, rows: list[tuple]) -> None:
        if rows:
            if not self._db.in_transaction:
                self._db.execute("BEGIN")
            self._db.executemany(sql, rows)

    def _select(self, sql: str, keys: list[str]) -> list[tuple]:
        found = []
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            found += self._db.execute(sql.format(",".join("?" * len(chunk))), chunk).fetchall()
        return found

    def claim_uids(self, claims: list[tuple[str, int, str]]) -> list[tuple[int, str]]:
        """Per ``(uid, shard, key)`` in order, the ``(shard, key)`` of the uid's first occurrence in the
        pool: the claim's own when it is the first (a shard processed again finds its own rows)."""
        with self._lock:
            self._write("INSERT OR IGNORE INTO occurrences (uid, shard, key) VALUES (?, ?, ?)", claims)
            first = {uid: (shard, key) for uid, shard, key in
                     self._select("SELECT uid, shard, key FROM occurrences WHERE uid IN ({})",
                                  list({uid for uid, _, _ in claims}))}
            return [first[uid] for uid, _, _ in claims]

    def claim_hashes(self, claims: list[tuple[str, str]]) -> list[str]:
        """Per ``(sha256, uid)`` in order, the uid that owns those bytes: ``uid`` itself when it is
        the first to claim them (earlier in the batch counts as first)."""
        with self._lock:
            self._write("INSERT OR IGNORE INTO hashes (sha256, uid) VALUES (?, ?)", claims)
            owners = dict(self._select("SELECT sha256, uid FROM hashes WHERE sha256 IN ({})",
                                       list({sha for sha, _ in claims})))
            return [owners[sha] for sha, _ in claims]

    def claim_images(self, descriptors: np.ndarray, uids: list[str], k: int = 8) -> list[tuple[str, float]]:
        """Per descriptor in order: the uid of the most similar earlier kept image at cosine >=
        ``threshold`` (its own uid, after keeping it, when there is none), and the cosine to the
        nearest earlier kept image found (0 when none)."""
        vectors = np.ascontiguousarray(descriptors, dtype=np.float32).reshape(len(uids), self.dim)
        codes = sign_bits(vectors) if self.binary else vectors
        if codes is None:
            raise ValueError("the pool registry holds hashes; these descriptors are not +-1/sqrt(dim) vectors")
        with self._lock:
            known = {uid: (owner, similarity) for uid, owner, similarity in
                     self._select("SELECT uid, owner, similarity FROM answers WHERE uid IN ({})", list(set(uids)))}
            todo = [i for i, uid in enumerate(uids) if uid not in known]
            if self.index.ntotal and todo:
                similarity, positions = self.index.search(codes[todo], min(k, self.index.ntotal))
            else:
                similarity, positions = np.zeros((len(todo), 0)), np.zeros((len(todo), 0), np.int64)
            within = vectors[todo] @ vectors[todo].T  # the batch against its own earlier images
            first_new, kept, answers = len(self._uids), [], []
            for row, i in enumerate(todo):
                uid = uids[i]
                if uid in known:  # the same uid twice in one batch
                    continue
                own = self._positions.get(uid)
                best, owner, best_position = 0.0, uid, -1
                candidates = [(s, p) for s, p in zip(similarity[row], positions[row]) if p >= 0]
                candidates += [(within[row, j], first_new + n) for n, j in enumerate(kept)]
                for s, p in candidates:
                    if own is not None and p >= own:
                        continue  # kept later: not an answer for this uid, nor on reprocessing
                    if s > best or (s == best and p < best_position):
                        best, best_position = float(s), int(p)
                if best_position >= 0 and best >= self.threshold:
                    owner = self._uids[best_position] if best_position < first_new else uids[todo[kept[
                        best_position - first_new]]]
                elif own is None:
                    self._positions[uid] = first_new + len(kept)
                    kept.append(row)
                known[uid] = (owner, best)
                answers.append((uid, owner, best))
            if kept:
                rows = [todo[row] for row in kept]
                self.index.add(codes[rows])
                self._uids += [uids[i] for i in rows]
                self._write("INSERT INTO images (uid, descriptor) VALUES (?, ?)",
                            [(uids[i], codes[i].tobytes()) for i in rows])
            self._write("INSERT OR IGNORE INTO answers (uid, owner, similarity) VALUES (?, ?, ?)", answers)
            return [known[uid] for uid in uids]

    def commit(self) -> None:
        """Make every claim so far durable, in one transaction (the stage calls it once per shard)."""
        with self._lock:
            if self._db.in_transaction:
                self._db.execute("COMMIT")

    def close(self) -> None:
        """Close without committing: claims since the last ``commit`` belong to unfinished shards."""
        with self._lock:
            self._db.close()
