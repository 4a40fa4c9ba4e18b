"""Shards one already has, brought into a job in place: img2dataset's webdataset output or DataComp's shards.

An input shard is ``{name}.tar`` with, when they are there, ``{name}.parquet`` and
``{name}_stats.json`` beside it (img2dataset's layout, which DataComp's download writes too), local
or on an object store. ``prepare_shards_job`` lists them and writes the job's manifest;
``ShardImportStage`` turns each into a winnow ledger ``{job_root}/source/{shard:08d}.parquet`` (+
``_stats.json``, written last) whose image source is the input's own tar, named by its absolute
URI: no image is copied, and the curation stages read the user's tar.

The ledger's rows:

- with the input's parquet, its rows in its order: img2dataset's failed rows too, with their
  ``status`` and ``error_message`` (and winnow's ``reason`` where the input has it, else the status);
  its kept rows must be the tar's samples in the tar's order, or the shard fails as out of step;
- without one, a row per tar sample in tar order, from its ``.json`` (where img2dataset writes the
  sample's row) and ``.txt``.

``text`` is img2dataset's ``caption`` (or a ``text`` column), else the ``.txt``; every other input
column rides along (DataComp's ``face_bboxes`` and ``clip_*`` scores). The uid is the parquet's
``uid``, else the ``.json``'s, else derived as the downloader derives it (``generate_uid``).
``sha256`` is the input's own (img2dataset's hash of the downloaded bytes, as winnow's downloader
computes it, so exact-duplicate verdicts match a download of the same pool), else the sha256 of
the image bytes in the tar (recorded in the stats as ``sha256_from_tar``). Each image is decoded
once (JPEGs at 1/8 scale, which still reads every byte), so a corrupt one is a failed row
(``decode_error``; ``not_an_image`` for a sample with no jpg, webp or png) instead of failing
every later stage. Whether the tar's faces are already blurred cannot be told from the data: the
job says so (``images_blurred``, recorded in each ledger; DataComp's download blurs them).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from winnow.services.downloader.pool import generate_uid
from winnow.shared import storage
from winnow.shared.jobs import SOURCE_STAGE, JobManifest
from winnow.shared.messages import ShardRef
from winnow.shared.outages import is_outage
from winnow.shared.shards import (FAILED_TO_RESIZE, IMAGE_EXTENSIONS, SUCCESS, ImageSource, ShardFormatError,
                           ShardStats, ShardWriter, iter_tar_samples, stats_uri)
from winnow.shared.stage import ShardStage

#: The manifest option that says the input tars' faces are already blurred.
IMAGES_BLURRED_OPTION = "images_blurred"
# img2dataset's parquet columns that become winnow's core ones (or are folded into them).
_CAPTION_COLUMNS = ("text", "caption")
# Marks, until the stats are written, a row whose sha256 was computed here (not a ledger column).
_HASHED_HERE = "_sha256_from_tar"


@dataclass
class TarSample:
    """What the import keeps of one tar sample: never the image itself."""

    key: str
    meta: dict[str, Any]  # the .json member, or {}
    caption: str | None  # the .txt member
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    failure: tuple[str, str] | None = None  # (reason, message) when the image is missing or unreadable


def _absolute(uri: str) -> str:
    return uri if "://" in uri else os.path.abspath(uri)


def list_input_shards(uri: str) -> list[str]:
    """The input shards' URIs without ``.tar``, in name order: the ``*.tar`` of a folder, or one ``.tar``."""
    fs, path = storage.filesystem(uri)
    if uri.endswith(".tar"):
        if not fs.exists(path):
            raise FileNotFoundError(f"no shard at {uri}")
        return [_absolute(uri[: -len(".tar")])]
    if not fs.exists(path):
        raise FileNotFoundError(f"no shards at {uri}")
    if not fs.isdir(path):
        raise ShardFormatError(f"{uri} is neither a .tar shard nor a folder of them")
    tars = storage.glob(storage.join(uri, "*.tar"))
    if not tars:
        raise ShardFormatError(f"{uri} holds no .tar shards (give img2dataset's webdataset output folder or "
                               f"DataComp's shards/ folder)")
    return [_absolute(t[: -len(".tar")]) for t in tars]


def declared_count(prefix: str) -> int:
    """Samples the input shard says it has (its ``_stats.json`` count, else its parquet's rows); 0 for a
    tar alone, whose samples are counted as it is imported."""
    try:
        if storage.exists(stats_uri(prefix)):
            return int(json.loads(storage.read_text(stats_uri(prefix)))["count"])
        if storage.exists(f"{prefix}.parquet"):
            fs, path = storage.filesystem(f"{prefix}.parquet")
            return pq.read_metadata(path, filesystem=fs).num_rows
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowInvalid) as exc:
        if is_outage(exc):
            raise
    return 0  # an unreadable parquet fails its shard when it is imported, with the reason


def prepare_shards_job(shards_uri: str, job_root: str, *, job_id: str = "", images_blurred: bool = False,
                       input_shards: list[str] | None = None) -> JobManifest:
    """The manifest of a job that curates the shards at ``shards_uri`` in place (written once per job).

    ``input_shards``: the shards already listed (a service lists them to check each against its
    roots first). A job folder that already holds this job is resumed as it is.
    """
    if JobManifest.exists(job_root):
        existing = JobManifest.load(job_root)
        if job_id and existing.job_id != job_id:
            raise ValueError(f"{job_root} already holds job {existing.job_id}, not {job_id}")
        if existing.pool_uri != shards_uri or not existing.input_shards:
            raise ValueError(f"{job_root} already holds a job of {existing.pool_uri}, not of the shards {shards_uri}; "
                             f"give another output folder")
        return existing
    prefixes = input_shards if input_shards is not None else list_input_shards(shards_uri)
    with ThreadPoolExecutor(max_workers=8) as pool:  # object stores answer one small read at a time
        sizes = list(pool.map(declared_count, prefixes))
    manifest = JobManifest(job_id=job_id or uuid.uuid4().hex[:16], job_root=job_root, pool_uri=shards_uri,
                           shard_count=len(prefixes), sample_count=sum(sizes),
                           samples_per_shard=max(sizes, default=0), created=time.time(),
                           options={IMAGES_BLURRED_OPTION: bool(images_blurred)}, shard_sizes=sizes,
                           input_shards=prefixes)
    manifest.save()
    return manifest


def _read_tar(prefix: str) -> list[TarSample]:
    samples = []
    for key, files in iter_tar_samples(prefix):
        meta: dict[str, Any] = {}
        if "json" in files:
            try:
                meta = json.loads(files["json"])
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ShardFormatError(f"{prefix}.tar: the .json of sample {key} is not JSON: {exc}") from exc
            if not isinstance(meta, dict):
                raise ShardFormatError(f"{prefix}.tar: the .json of sample {key} is not an object")
        caption = files["txt"].decode("utf-8", errors="replace") if "txt" in files else None
        sample = TarSample(key, meta, caption)
        extension = next((e for e in IMAGE_EXTENSIONS if e in files), None)
        if extension is None:
            sample.failure = ("not_an_image", f"the tar holds no {', '.join(IMAGE_EXTENSIONS)} for {key} "
                                              f"(members: {', '.join(sorted(files))})")
        else:
            data = files[extension]
            sample.sha256 = hashlib.sha256(data).hexdigest()
            try:
                sample.width, sample.height = _decoded_size(data)
            except Exception as exc:  # any decoder error costs this sample, never the shard
                sample.failure = ("decode_error", f"{type(exc).__name__}: {exc}")
        samples.append(sample)
    return samples


def _decoded_size(data: bytes) -> tuple[int, int]:
    """The image's size, after decoding it whole (a JPEG at 1/8 scale: it still reads every byte)."""
    with Image.open(io.BytesIO(data)) as image:
        size = image.size
        image.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))
        image.load()
    return size


def _read_parquet(prefix: str) -> pa.Table | None:
    if not storage.exists(f"{prefix}.parquet"):
        return None
    try:
        return pq.ParquetFile(io.BytesIO(storage.read_bytes(f"{prefix}.parquet"))).read()
    except (pa.ArrowInvalid, OSError) as exc:
        if is_outage(exc):
            raise
        raise ShardFormatError(f"unreadable input parquet {prefix}.parquet: {exc}") from exc


def _check_in_step(prefix: str, table: pa.Table, samples: list[TarSample]) -> None:
    """The parquet's kept rows must be the tar's samples, in the tar's order."""
    missing = [n for n in ("key", "status") if n not in table.column_names]
    if missing:
        raise ShardFormatError(f"{prefix}.parquet lacks img2dataset's column(s) {missing}")
    kept = [k for k, s in zip(table["key"].to_pylist(), table["status"].to_pylist()) if s == SUCCESS]
    in_tar = [s.key for s in samples]
    if kept != in_tar:
        at = next((i for i, (a, b) in enumerate(zip(kept, in_tar)) if a != b), min(len(kept), len(in_tar)))
        found = lambda keys: keys[at] if at < len(keys) else "nothing"  # noqa: E731
        raise ShardFormatError(f"{prefix}.parquet is out of step with its tar: the parquet's kept sample {at} is "
                               f"{found(kept)}, the tar's is {found(in_tar)} ({len(kept)} kept rows, "
                               f"{len(in_tar)} samples in the tar)")


def _ledger_row(row: dict[str, Any], sample: TarSample | None) -> dict[str, Any]:
    """An input row (parquet or .json) as a winnow ledger row; ``sample`` is its tar sample (kept rows)."""
    row = dict(row)
    text = next((row.pop(c) for c in _CAPTION_COLUMNS if c in row and row[c] is not None), None)
    for column in _CAPTION_COLUMNS:
        row.pop(column, None)
    if text is None and sample is not None:
        text = sample.caption
    row["text"] = text
    uid = row.get("uid")
    if uid is None or not str(uid).strip():
        uid = (sample.meta.get("uid") if sample is not None else None) or generate_uid(row.get("url") or "", text)
    row["uid"] = str(uid)
    row.setdefault("reason", None)
    row.setdefault("dropped_by", None)
    if sample is None:  # a row the input failed: as it is, with its status as the reason where none is given
        row["reason"] = row["reason"] or row.get("status")
        return row
    row["key"] = sample.key
    if not (row.get("sha256") or sample.meta.get("sha256")):
        row[_HASHED_HERE] = True
    row["sha256"] = row.get("sha256") or sample.meta.get("sha256") or sample.sha256
    if sample.failure is not None:
        row["status"], row["reason"], row["error_message"] = FAILED_TO_RESIZE, *sample.failure
        return row
    row.update(status=SUCCESS, reason=None, error_message=None, width=sample.width, height=sample.height)
    return row


class ShardImportStage(ShardStage):
    """One input shard in, one ``source`` ledger out that names the input's tar as its image source."""

    name = SOURCE_STAGE
    input_columns = ()  # it reads the input's tar (and parquet, when there is one)
    output_columns = ("key", "uid", "url", "text", "status", "reason", "error_message", "sha256")

    def process_shard(self, ref: ShardRef, prefix: str) -> ShardStats:
        options = JobManifest.load(ref.job_root).options
        table = _read_parquet(ref.uri)
        samples = _read_tar(ref.uri)
        if table is not None:
            _check_in_step(ref.uri, table, samples)
            in_tar = iter(samples)
            rows = [_ledger_row(r, next(in_tar) if r.get("status") == SUCCESS else None) for r in table.to_pylist()]
        else:
            rows = [_ledger_row(s.meta, s) for s in samples]
        source = ImageSource(ref.uri, blurred=bool(options.get(IMAGES_BLURRED_OPTION, False)))
        writer = ShardWriter(prefix, stage=self.name, job_id=ref.job_id, shard_id=ref.shard_id,
                             extra_schema=table.schema if table is not None else None, members="none",
                             image_source=source)
        hashed_here = 0
        try:
            for row in rows:
                hashed_here += row.pop(_HASHED_HERE, False)
                try:
                    writer.add(row)
                except ValueError as exc:  # a status img2dataset does not write
                    raise ShardFormatError(f"{ref.uri}: sample {row.get('key')}: {exc}") from exc
        except BaseException:
            writer.abort()
            raise
        return writer.close(input_shard=ref.uri, sha256_from_tar=hashed_here)
