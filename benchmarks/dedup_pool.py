"""Pool dedup claims per second: the batch pool index against the per-sample registry it replaced.

Same input for both, in one run: a registry pre-filled with ``--size`` random 256-bit hashes
(pHash-shaped: +-1/16 descriptors, near-duplicate at <= 56 bits), then claims of ``--claims``
descriptors, half near copies of kept hashes (<= 40 bits flipped, must be found) and half new.

- new: ``PoolRegistry.claim_images`` in batches of ``--batch`` (hashes packed, exact search)
  and one ``commit`` at the end (the stage commits once per shard);
- old: ``LegacyPoolRegistry.claim_image`` one sample at a time (a 256-d float ``IndexFlatIP``
  and an autocommitted SQLite insert per kept sample), the registry as of commit 16e07a8.

Both answer the same claims; the run fails if they disagree. Sizes below ``--size`` (5,000 and
50,000 by default) are measured too, to show how the per-claim cost grows with the pool.
Pre-filling writes SQLite directly; the time to open each registry (rebuilding its index) is
reported.

    .venv/bin/python -m benchmarks.dedup_pool                       # 1M hashes
    .venv/bin/python -m benchmarks.dedup_pool --size 100000 --json p.json
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

import faiss
import numpy as np

from winnow.services.dedup.index import PoolRegistry

DIM, MAX_HAMMING = 256, 56
THRESHOLD = 1.0 - (2 * MAX_HAMMING + 1) / DIM


class LegacyPoolRegistry:
    """The per-sample registry replaced by the pool index (kept for this comparison only)."""

    def __init__(self, path: Path, dim: int) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS hashes (sha256 TEXT PRIMARY KEY, uid TEXT NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS images (id INTEGER PRIMARY KEY, uid TEXT UNIQUE NOT NULL, "
                         "descriptor BLOB NOT NULL)")
        self._lock = threading.Lock()
        self._index = faiss.IndexIDMap(faiss.IndexFlatIP(dim))
        rows = self._db.execute("SELECT id, uid, descriptor FROM images ORDER BY id").fetchall()
        self._uids = {r[0]: r[1] for r in rows}
        if rows:
            vectors = np.frombuffer(b"".join(r[2] for r in rows), np.float32).reshape(len(rows), dim)
            self._index.add_with_ids(vectors, np.array([r[0] for r in rows], np.int64))
        self._by_uid = {uid: i for i, uid in self._uids.items()}

    def claim_hash(self, sha256: str, uid: str) -> str:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO hashes (sha256, uid) VALUES (?, ?)", (sha256, uid))
            return self._db.execute("SELECT uid FROM hashes WHERE sha256 = ?", (sha256,)).fetchone()[0]

    def claim_image(self, descriptor: np.ndarray, uid: str, threshold: float) -> tuple[str, float]:
        vector = np.ascontiguousarray(descriptor, dtype=np.float32).reshape(1, -1)
        with self._lock:
            own = self._by_uid.get(uid)
            best = 0.0
            if self._index.ntotal:
                similarity, ids = self._index.search(vector, min(8, self._index.ntotal))
                for s, i in zip(similarity[0], ids[0]):
                    if i < 0 or i == own or (own is not None and i > own):
                        continue
                    if s >= threshold:
                        return self._uids[int(i)], float(s)
                    best = max(best, float(s))
            if own is None:
                own = self._db.execute("INSERT INTO images (uid, descriptor) VALUES (?, ?)",
                                       (uid, vector.tobytes())).lastrowid
                self._index.add_with_ids(vector, np.array([own], np.int64))
                self._uids[own], self._by_uid[uid] = uid, own
            return uid, best

    def close(self) -> None:
        self._db.close()


def random_hashes(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 2, (n, DIM), dtype=np.uint8).astype(bool)


def as_descriptors(bits: np.ndarray) -> np.ndarray:
    return np.where(bits, np.float32(1 / 16), np.float32(-1 / 16))


def prefill(path: Path, bits: np.ndarray, packed: bool) -> None:
    """A registry's SQLite with these hashes kept, as the given registry stores them."""
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("CREATE TABLE images (id INTEGER PRIMARY KEY, uid TEXT UNIQUE NOT NULL, descriptor BLOB NOT NULL)")
    db.execute("BEGIN")
    for start in range(0, len(bits), 100_000):
        chunk = bits[start:start + 100_000]
        blobs = np.packbits(chunk, axis=1) if packed else as_descriptors(chunk)
        db.executemany("INSERT INTO images (uid, descriptor) VALUES (?, ?)",
                       ((f"kept-{start + i}", blob.tobytes()) for i, blob in enumerate(blobs)))
    db.execute("COMMIT")
    db.close()


def claims(kept: np.ndarray, count: int, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    half = count // 2
    sources = rng.choice(len(kept), half, replace=half > len(kept))
    copies = kept[sources].copy()
    for row in copies:
        row[rng.choice(DIM, int(rng.integers(1, 41)), replace=False)] ^= True
    queries = np.concatenate([copies, random_hashes(count - half, rng)])
    return as_descriptors(queries), [f"copy-{i}" for i in range(half)] + [f"new-{i}" for i in range(count - half)]


def measure(size: int, args, work: Path, rng: np.random.Generator) -> dict:
    kept = random_hashes(size, rng)
    descriptors, uids = claims(kept, args.claims, rng)
    figures: dict = {"size": size}

    prefill(work / f"new-{size}.sqlite", kept, packed=True)
    started = time.perf_counter()
    registry = PoolRegistry(work / f"new-{size}.sqlite", DIM, THRESHOLD, binary=True)
    figures["new_open_s"] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    answers = []
    for start in range(0, len(uids), args.batch):
        answers += registry.claim_images(descriptors[start:start + args.batch], uids[start:start + args.batch])
    registry.commit()
    seconds = time.perf_counter() - started
    figures["new_claims_per_s"] = round(len(uids) / seconds, 1)
    figures["new_index"] = registry.index.kind
    registry.close()
    half = args.claims // 2
    if any(not owner.startswith("kept-") for owner, _ in answers[:half]):
        raise SystemExit("new: a near copy was not found")

    legacy_count = min(args.legacy_claims, len(uids))
    picked = np.linspace(0, len(uids) - 1, legacy_count).astype(int)  # copies and new alike
    prefill(work / f"old-{size}.sqlite", kept, packed=False)
    started = time.perf_counter()
    legacy = LegacyPoolRegistry(work / f"old-{size}.sqlite", DIM)
    figures["old_open_s"] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    old_answers = [legacy.claim_image(descriptors[i], uids[i], THRESHOLD) for i in picked]
    seconds = time.perf_counter() - started
    legacy.close()
    figures["old_claims_per_s"] = round(legacy_count / seconds, 1)
    figures["old_claims_timed"] = legacy_count
    # The old path keeps each new claim as it goes, the new one a batch later: compare the owners
    # of the near copies (always kept-*) and that new ones are kept by both.
    for i, old in zip(picked, old_answers):
        if (old[0] == uids[i]) != (answers[i][0] == uids[i]) or (i < half and old[0] != answers[i][0]):
            raise SystemExit(f"old and new disagree on {uids[i]}: {old} vs {answers[i]}")
    figures["ratio"] = round(figures["new_claims_per_s"] / figures["old_claims_per_s"], 1)
    for path in work.glob(f"*-{size}.sqlite*"):
        path.unlink()
    print(f"{size:>9,} kept: new {figures['new_claims_per_s']:>10,.0f} claims/s ({figures['new_index']}, batches of "
          f"{args.batch}, open {figures['new_open_s']} s); old {figures['old_claims_per_s']:>8,.0f} claims/s "
          f"(per sample, open {figures['old_open_s']} s); ratio {figures['ratio']}x", flush=True)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=1_000_000, help="kept hashes in the largest registry")
    parser.add_argument("--sizes", default="5000,50000", help="smaller registries measured first")
    parser.add_argument("--claims", type=int, default=4_000, help="claims timed on the new path")
    parser.add_argument("--legacy-claims", type=int, default=500, help="of those, timed on the old path")
    parser.add_argument("--batch", type=int, default=64, help="claims per claim_images call (the stage's batch)")
    parser.add_argument("--threads", type=int, default=2, help="faiss OpenMP threads")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    sizes = [int(s) for s in args.sizes.split(",") if s] + [args.size]
    with tempfile.TemporaryDirectory() as work:
        figures = [measure(size, args, Path(work), rng) for size in sizes]
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
