"""The shard format: img2dataset/DataComp webdataset shards with a per-sample ledger.

A shard ``{shard:08d}`` in a stage's directory is:

- ``{shard:08d}.parquet``, the ledger: one row for *every* sample that entered, kept or not, with
  the DataComp columns, ``status``, ``reason``, ``error_message`` and ``dropped_by``. Its schema
  metadata names the shard's *image source* (``winnow_images``): the tar that holds the images of
  its kept samples, relative to the ledger's folder or absolute;
- ``{shard:08d}.tar``, only from a stage that brings images in or changes them (the downloader,
  the blur stage when it writes blurred images): the kept samples as ``{key}.jpg|webp|png``,
  ``{key}.txt``, ``{key}.json`` (readable by ``webdataset`` and by open_clip training as it is).
  Stages that only annotate (safety, dedup, embed, blur by default) write no tar: their ledger
  names the tar they read, so images are stored once however many stages run;
- sidecars a stage adds (embed's ``{shard:08d}.npz``);
- ``{shard:08d}_stats.json``: counts per status and reason; written last, it marks the shard
  complete, so a restarted worker skips it.

A job of shards the user already had writes no tar at all: its ledgers name the user's own tars,
by absolute URI (a source inside the job is named relative to the ledger, so a job moves as one
folder). A ledger without ``winnow_images`` (img2dataset's, schema version 1) has its tar beside it. The
tar is written deterministically (fixed mtimes and owners), so reprocessing a shard yields
byte-identical files.
"""

from __future__ import annotations

import io
import json
import math
import os
import posixpath
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from winnow.shared import storage
from winnow.shared.outages import is_outage

SCHEMA_VERSION = 2  # 2: annotating stages; the ledger names its image source
SUPPORTED_SCHEMA_VERSIONS = frozenset({1, 2})
IMAGES_METADATA = b"winnow_images"
IMAGES_BLURRED_METADATA = b"winnow_images_blurred"

SUCCESS = "success"
FAILED_TO_DOWNLOAD = "failed_to_download"
FAILED_TO_RESIZE = "failed_to_resize"
DROPPED = "dropped"
STATUSES = (SUCCESS, FAILED_TO_DOWNLOAD, FAILED_TO_RESIZE, DROPPED)

IMAGE_EXTENSIONS = ("jpg", "webp", "png")
#: Pillow's format name for each image extension a shard may hold (and ``jpeg``, as some inputs spell it).
IMAGE_FORMATS = {"jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP", "png": "PNG"}

# The columns every shard parquet has, in this order; a pool's other columns follow them.
CORE_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("uid", pa.string()),
        ("url", pa.string()),
        ("text", pa.string()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("error_message", pa.string()),
        ("dropped_by", pa.string()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("original_width", pa.int64()),
        ("original_height", pa.int64()),
        ("sha256", pa.string()),
    ]
)

# DataComp columns that later stages fill in; their types when present.
DATACOMP_TYPES = {
    "clip_b32_similarity_score": pa.float32(),
    "clip_l14_similarity_score": pa.float32(),
    "face_bboxes": pa.list_(pa.list_(pa.float64())),
}


class ShardFormatError(ValueError):
    """A shard or its reference cannot be read: bad layout, unknown schema version, corrupt file."""


@dataclass(frozen=True)
class ImageSource:
    """Where a shard's kept images are: the tar ``{prefix}.tar``, and whether the faces its
    ``face_bboxes`` name are already blurred in it (then nobody blurs them again)."""

    prefix: str
    blurred: bool = False


def _folder(uri: str) -> str:
    return posixpath.dirname(uri) if "://" in uri else os.path.dirname(uri)


def _relative(uri: str, folder: str) -> str:
    """``uri`` relative to ``folder`` when it lies in the same job (under the folder's parent: a
    sibling stage's folder), so a job moves as one folder; else absolute (a user's own shards)."""
    if "://" not in uri and "://" not in folder:
        relative = os.path.relpath(os.path.abspath(uri), os.path.abspath(folder or "."))
        return os.path.abspath(uri) if relative.split(os.sep)[:2] == ["..", ".."] else relative
    (scheme, path), (folder_scheme, folder_path) = (
        u.split("://", 1) if "://" in u else ("", u) for u in (uri, folder))
    if scheme != folder_scheme or path.split("/", 1)[0] != folder_path.split("/", 1)[0]:
        return uri
    relative = posixpath.relpath(path, folder_path)
    return uri if relative.split("/")[:2] == ["..", ".."] else relative


def _resolve(value: str, folder: str) -> str:
    if "://" in value or os.path.isabs(value):
        return value
    if "://" in folder:
        scheme, rest = folder.split("://", 1)
        return f"{scheme}://" + posixpath.normpath(posixpath.join(rest, value))
    return os.path.normpath(os.path.join(folder, value))


def image_source(prefix: str, table: pa.Table | None = None) -> ImageSource:
    """The image source the ledger ``{prefix}.parquet`` names (``table`` is that ledger, when already
    read); a ledger that names none (img2dataset's) has its tar beside it."""
    if table is not None:
        metadata = table.schema.metadata or {}
    else:
        fs, path = storage.filesystem(f"{prefix}.parquet")
        try:
            metadata = pq.read_schema(path, filesystem=fs).metadata or {}
        except (pa.ArrowInvalid, OSError) as exc:
            if is_outage(exc):
                raise
            raise ShardFormatError(f"unreadable shard parquet {prefix}.parquet: {exc}") from exc
    named = metadata.get(IMAGES_METADATA)
    if not named:
        return ImageSource(prefix)
    return ImageSource(_resolve(named.decode(), _folder(prefix)),
                       blurred=metadata.get(IMAGES_BLURRED_METADATA, b"") == b"true")


def shard_name(shard_id: int) -> str:
    return f"{shard_id:08d}"


def shard_prefix(stage_dir: str, shard_id: int) -> str:
    """The URI of a shard without extension, e.g. ``out/downloader/00000003``."""
    return storage.join(stage_dir, shard_name(shard_id))


def stats_uri(prefix: str) -> str:
    return f"{prefix}_stats.json"


def is_complete(prefix: str) -> bool:
    """True when the shard's completion marker exists."""
    return storage.exists(stats_uri(prefix))


def sample_key(shard_id: int, index: int, samples_per_shard: int, shard_digits: int = 8) -> str:
    """img2dataset's key: the shard id on ``shard_digits`` digits (its ``oom_shard_count``; DataComp's
    8), then the index on as many as the shard needs."""
    width = max(1, math.ceil(math.log10(max(samples_per_shard, 2))))
    return f"{shard_id:0{shard_digits}d}{index:0{width}d}"


def check_schema_version(version: int) -> None:
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        raise ShardFormatError(
            f"shard schema version {version} is not supported (this winnow reads {sorted(SUPPORTED_SCHEMA_VERSIONS)})"
        )


@dataclass
class ShardStats:
    """What happened to a shard's samples in one stage; serialised as ``_stats.json``."""

    stage: str
    job_id: str
    shard_id: int
    count: int = 0
    successes: int = 0
    status_counts: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    start_time: float = field(default_factory=time.time)
    end_time: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def record(self, status: str, reason: str | None) -> None:
        self.count += 1
        self.status_counts[status] += 1
        if status == SUCCESS:
            self.successes += 1
        elif reason:
            self.reasons[reason] += 1

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "stage": self.stage,
            "job_id": self.job_id,
            "shard_id": self.shard_id,
            "count": self.count,
            "successes": self.successes,
            # img2dataset's fields, so its tooling reads ours.
            "failed_to_download": self.status_counts.get(FAILED_TO_DOWNLOAD, 0),
            "failed_to_resize": self.status_counts.get(FAILED_TO_RESIZE, 0),
            "dropped": self.status_counts.get(DROPPED, 0),
            "status_dict": dict(sorted(self.status_counts.items())),
            "reasons": dict(sorted(self.reasons.items())),
            "start_time": self.start_time,
            "end_time": self.end_time,
            "duration": round(self.end_time - self.start_time, 3),
            **self.extra,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ShardStats:
        check_schema_version(int(data.get("schema_version", -1)))
        known = {"schema_version", "stage", "job_id", "shard_id", "count", "successes", "failed_to_download",
                 "failed_to_resize", "dropped", "status_dict", "reasons", "start_time", "end_time", "duration"}
        return cls(
            stage=data["stage"],
            job_id=data["job_id"],
            shard_id=int(data["shard_id"]),
            count=int(data["count"]),
            successes=int(data["successes"]),
            status_counts=Counter(data.get("status_dict", {})),
            reasons=Counter(data.get("reasons", {})),
            start_time=float(data.get("start_time", 0.0)),
            end_time=float(data.get("end_time", 0.0)),
            extra={k: v for k, v in data.items() if k not in known},
        )


def read_stats(prefix: str) -> ShardStats:
    try:
        return ShardStats.from_json(json.loads(storage.read_text(stats_uri(prefix))))
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ShardFormatError(f"unreadable stats file {stats_uri(prefix)}: {exc}") from exc


def _tar_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o444
    info.uname = info.gname = "winnow"
    return info, io.BytesIO(data)


class ShardWriter:
    """Writes one shard: samples stream into a local tar, rows into the ledger, the marker last.

    ``extra_schema`` types the pool's own columns (DataComp scores, bboxes, ...) that ride
    along in the parquet; columns not in it are inferred. ``core_schema`` replaces the leading
    columns (the downloader's img2dataset layout names and types them as img2dataset does).
    ``members`` says where a kept sample's files go: ``tar`` (webdataset), ``files`` (a
    ``{prefix}/`` folder of ``{key}.{ext}`` files, img2dataset's ``files`` format) or ``none``
    (the caller puts the bytes in the ledger, img2dataset's ``parquet`` format, or an annotating
    stage, whose ledger names the ``image_source`` it read instead). A shard that writes a tar is
    its own image source; ``images_blurred`` says its faces are blurred.
    """

    def __init__(self, prefix: str, *, stage: str, job_id: str, shard_id: int,
                 extra_schema: pa.Schema | None = None, core_schema: pa.Schema | None = None,
                 members: str = "tar", image_source: ImageSource | None = None,
                 images_blurred: bool = False) -> None:
        if members not in ("tar", "files", "none"):
            raise ValueError(f"members must be tar, files or none, got {members!r}")
        self.prefix = prefix
        self.stats = ShardStats(stage=stage, job_id=job_id, shard_id=shard_id)
        self._extra_schema = extra_schema or pa.schema([])
        self._core_schema = core_schema if core_schema is not None else CORE_SCHEMA
        self._members = members
        if members == "tar":
            image_source = ImageSource(prefix, blurred=images_blurred)
        self.image_source = image_source
        self._member_files: list[str] = []
        self._rows: list[dict[str, Any]] = []
        storage.remove_partial_writes(prefix)
        self._tmpdir = tempfile.TemporaryDirectory(prefix="winnow-shard-")
        self._tar_path = os.path.join(self._tmpdir.name, "shard.tar")
        self._tar = tarfile.open(self._tar_path, "w", format=tarfile.USTAR_FORMAT)
        self._closed = False

    def add(self, row: Mapping[str, Any], files: Mapping[str, bytes] | None = None) -> None:
        """Record one sample; ``files`` (extension -> bytes) go into the tar for kept samples."""
        status = row.get("status")
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        if files:
            if status != SUCCESS:
                raise ValueError(f"only kept samples go into the tar; {row.get('key')} has status {status}")
            for ext, data in files.items():
                if self._members == "files":
                    name = f"{row['key']}.{ext}"
                    with open(os.path.join(self._tmpdir.name, name), "wb") as handle:
                        handle.write(data)
                    self._member_files.append(name)
                elif self._members == "tar":
                    info, payload = _tar_member(f"{row['key']}.{ext}", data)
                    self._tar.addfile(info, payload)
        self._rows.append(dict(row))
        self.stats.record(status, row.get("reason"))

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The ledger rows written so far, in order."""
        return self._rows

    def carry(self, row: Mapping[str, Any]) -> None:
        """Keep a row that an earlier stage already failed or dropped; this stage's stats skip it."""
        if row.get("status") == SUCCESS:
            raise ValueError(f"{row.get('key')} is a kept sample: add() it with its files, or drop it")
        self._rows.append(dict(row))

    def _table(self) -> pa.Table:
        core = self._core_schema
        extra_names = [n for n in dict.fromkeys(k for r in self._rows for k in r) if n not in core.names]
        fields = list(core)
        for name in extra_names:
            if name in self._extra_schema.names:
                fields.append(self._extra_schema.field(name))
            elif name in DATACOMP_TYPES:
                fields.append(pa.field(name, DATACOMP_TYPES[name]))
            else:
                inferred = pa.array([r.get(name) for r in self._rows]).type
                fields.append(pa.field(name, pa.string() if pa.types.is_null(inferred) else inferred))
        metadata = {b"winnow_schema_version": str(SCHEMA_VERSION).encode()}
        if self.image_source is not None:
            metadata[IMAGES_METADATA] = _relative(self.image_source.prefix, _folder(self.prefix)).encode()
            metadata[IMAGES_BLURRED_METADATA] = b"true" if self.image_source.blurred else b"false"
        schema = pa.schema(fields, metadata=metadata)
        columns = {f.name: [r.get(f.name) for r in self._rows] for f in schema}
        return pa.Table.from_pydict(columns, schema=schema)

    def close(self, sidecars: Mapping[str, bytes] | None = None, **extra_stats: Any) -> ShardStats:
        """Move tar, parquet and any sidecar files (extension -> bytes, e.g. ``npz``) into
        place, then write ``_stats.json`` last."""
        if self._closed:
            raise RuntimeError("shard writer already closed")
        self._closed = True
        try:
            self._tar.close()
            if self._members == "tar":
                storage.put_file(self._tar_path, f"{self.prefix}.tar")
            elif self._members == "files":
                storage.makedirs(self.prefix)
                for name in self._member_files:
                    storage.put_file(os.path.join(self._tmpdir.name, name), storage.join(self.prefix, name))
            buffer = io.BytesIO()
            pq.write_table(self._table(), buffer, compression="zstd")
            storage.write_bytes(f"{self.prefix}.parquet", buffer.getvalue())
            for extension, data in (sidecars or {}).items():
                storage.write_bytes(f"{self.prefix}.{extension}", data)
            self.stats.end_time = time.time()
            self.stats.extra.update(extra_stats)
            storage.write_text(stats_uri(self.prefix), json.dumps(self.stats.to_json(), indent=1, default=str))
            return self.stats
        finally:
            self._tmpdir.cleanup()

    def abort(self) -> None:
        """Drop everything written so far (nothing reached the final names)."""
        if not self._closed:
            self._closed = True
            self._tar.close()
            self._tmpdir.cleanup()


def read_table(prefix: str) -> pa.Table:
    """The shard's ledger (every sample that entered the stage)."""
    try:
        table = pq.ParquetFile(io.BytesIO(storage.read_bytes(f"{prefix}.parquet"))).read()
    except (pa.ArrowInvalid, OSError) as exc:
        if is_outage(exc):  # the store is down, the shard is fine: let the worker wait for the store
            raise
        raise ShardFormatError(f"unreadable shard parquet {prefix}.parquet: {exc}") from exc
    version = (table.schema.metadata or {}).get(b"winnow_schema_version")
    if version is not None:
        check_schema_version(int(version))
    missing = [n for n in ("key", "uid", "status") if n not in table.column_names]
    if missing:
        raise ShardFormatError(f"{prefix}.parquet lacks columns {missing}")
    return table


def iter_tar_samples(prefix: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """``(key, {extension: bytes})`` for each sample in the shard's tar, in tar order.

    A tar that stops without its end-of-archive blocks (a copy cut short between two members,
    which ``tarfile`` reads as a complete, shorter archive) raises :class:`ShardFormatError`
    in place of its last sample, so no stage records a short shard as whole.
    """
    fs, path = storage.filesystem(f"{prefix}.tar")
    try:
        with fs.open(path, "rb") as handle, tarfile.open(fileobj=handle, mode="r|") as tar:
            key, files = None, {}
            for member in tar:
                if not member.isfile():
                    continue
                base, _, ext = member.name.partition(".")
                if key is not None and base != key:
                    yield key, files
                    files = {}
                key = base
                files[ext] = tar.extractfile(member).read()
            members_end = tar.offset
        if fs.size(path) - members_end < tarfile.BLOCKSIZE:
            raise ShardFormatError(f"truncated shard tar {prefix}.tar: it ends at byte {members_end}, after "
                                   f"sample {key}, without the end-of-archive blocks every tar writer adds")
        if key is not None:
            yield key, files
    except tarfile.TarError as exc:
        raise ShardFormatError(f"corrupt shard tar {prefix}.tar: {exc}") from exc
