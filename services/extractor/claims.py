"""Dropping a job's duplicate pairs across its crawl files, correctly with any number of replicas.

Each file of a job is extracted independently (any replica, any order, any number of
redeliveries). Before a file's pool shard is written, the file *claims* its pairs in the job's
claim log, ``{job_root}/extractor/claims/{seq:08d}.claim``: a totally ordered, append-only
log whose entry ``seq`` is created with an exclusive create (``O_EXCL``-style link on a local
disk, ``If-None-Match: *`` on S3), so exactly one writer wins each position. A file reads every
entry before the next free position, keeps the pairs no earlier entry holds, and tries to
append them there; when another replica took that position first, it reads that entry and
tries the next. Hence:

- every pair is kept by exactly one file of the job: the first to commit it;
- no locks to leak: a replica that dies before appending left nothing, and one that dies after
  left a complete entry;
- a redelivered file finds its own entry and keeps exactly the same pairs, so its shard is
  rewritten byte for byte.

Cost: each replica keeps the job's claimed uids in memory as sorted runs of 16-byte digests
(16 bytes per kept pair, merged as they grow), and reads each entry once. Storage without an
exclusive create (plain HTTP, most fsspec backends other than local and S3) cannot hold a claim
log; such jobs must turn cross-file dedup off.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import threading
import uuid

import numpy as np
from fsspec.implementations.local import LocalFileSystem

from winnow.shared import storage

CLAIMS_DIR = ("extractor", "claims")
DIGEST = np.dtype("S16")


class ClaimStoreUnsupported(ValueError):
    """The job's storage has no exclusive create, so cross-file dedup cannot be exact there."""


def supports_claims(uri: str) -> bool:
    fs, _ = storage.filesystem(uri)
    return isinstance(fs, LocalFileSystem) or "s3" in _protocols(fs)


def _protocols(fs) -> tuple[str, ...]:
    protocol = fs.protocol
    return tuple(protocol) if isinstance(protocol, (tuple, list)) else (protocol,)


def create_exclusive(uri: str, data: bytes) -> bool:
    """Write ``uri`` only if nothing is there; True when this call created it, complete."""
    fs, path = storage.filesystem(uri)
    if isinstance(fs, LocalFileSystem):
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)  # atomic, and fails when the name exists
            return True
        except FileExistsError:
            return False
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    if "s3" in _protocols(fs):
        try:
            fs.pipe_file(path, data, mode="create")
            return True
        except OSError:
            # 412 Precondition Failed, or a retried PUT that had in fact succeeded: either way the
            # entry exists now and the caller reads whose it is.
            if storage.exists(uri):
                return False
            raise
    raise ClaimStoreUnsupported(f"{uri}: cross-file dedup needs a local disk or S3 (exclusive create)")


def digests(uids: list[str]) -> np.ndarray:
    """Hex uids as an array of 16-byte digests."""
    return np.frombuffer(b"".join(bytes.fromhex(uid) for uid in uids), dtype=DIGEST) if uids else \
        np.empty(0, dtype=DIGEST)


def _encode_entry(shard_id: int, source: str, kept: np.ndarray) -> bytes:
    header = json.dumps({"shard_id": shard_id, "source_file": source, "count": int(len(kept))}).encode()
    return header + b"\n" + np.ascontiguousarray(kept).tobytes()


def _decode_entry(data: bytes) -> tuple[int, np.ndarray]:
    header, _, body = data.partition(b"\n")
    meta = json.loads(header)
    kept = np.frombuffer(body, dtype=DIGEST)
    if len(kept) != meta["count"]:
        raise ValueError(f"claim entry of shard {meta['shard_id']} holds {len(kept)} digests, not {meta['count']}")
    return int(meta["shard_id"]), kept


def _contains(sorted_run: np.ndarray, values: np.ndarray) -> np.ndarray:
    if not len(sorted_run):
        return np.zeros(len(values), dtype=bool)
    positions = np.minimum(np.searchsorted(sorted_run, values), len(sorted_run) - 1)
    return sorted_run[positions] == values


class ClaimLog:
    """One job's claim log as seen by this process; ``claim`` is safe from several threads."""

    def __init__(self, job_root: str) -> None:
        self.root = storage.join(job_root, *CLAIMS_DIR)
        if not supports_claims(self.root):
            raise ClaimStoreUnsupported(f"{job_root}: cross-file dedup needs a local disk or S3 (exclusive create)")
        self._next = 0
        self._runs: list[np.ndarray] = []  # sorted, disjoint; sizes shrink along the list
        self._owner: dict[int, int] = {}  # shard id -> position of its entry
        self._lock = threading.Lock()

    def _entry_uri(self, position: int) -> str:
        return storage.join(self.root, f"{position:08d}.claim")

    def _add_run(self, values: np.ndarray) -> None:
        self._runs.append(np.sort(values))
        while len(self._runs) > 1 and len(self._runs[-2]) <= 2 * len(self._runs[-1]):
            last = self._runs.pop()
            self._runs[-1] = np.sort(np.concatenate([self._runs[-1], last]))

    def _catch_up(self) -> None:
        while storage.exists(self._entry_uri(self._next)):
            shard_id, kept = _decode_entry(storage.read_bytes(self._entry_uri(self._next)))
            self._owner.setdefault(shard_id, self._next)
            self._add_run(kept)
            self._next += 1

    def claimed(self, values: np.ndarray) -> np.ndarray:
        """Which of ``values`` some entry read so far holds."""
        found = np.zeros(len(values), dtype=bool)
        for run in self._runs:
            found |= _contains(run, values)
        return found

    def claim(self, shard_id: int, source: str, uids: list[str]) -> list[bool]:
        """Whether each of a file's (distinct) uids is the file's to keep; commits the answer."""
        candidates = digests(uids)
        with self._lock:
            while True:
                self._catch_up()
                if shard_id in self._owner:  # committed before: the same answer again
                    _, mine = _decode_entry(storage.read_bytes(self._entry_uri(self._owner[shard_id])))
                    return _contains(np.sort(mine), candidates).tolist()
                keep = ~self.claimed(candidates)
                if create_exclusive(self._entry_uri(self._next), _encode_entry(shard_id, source, candidates[keep])):
                    self._owner[shard_id] = self._next
                    self._add_run(candidates[keep])
                    self._next += 1
                    return keep.tolist()
