"""Where and how the downloader writes a shard: DataComp's job layout or img2dataset's own.

- ``ShardLayout.datacomp()`` (``winnow run``, the service): ``{job}/downloader/{shard:08d}.*``,
  the ledger with winnow's core columns first (``uid``, ``url``, ``text``, ...).
- ``ShardLayout.img2dataset(...)`` (``winnow download``): img2dataset's files straight in the
  output folder, ``{shard:0{oom_shard_count}d}.tar|.parquet|_stats.json`` (or a ``{shard}/``
  folder for ``files``), and its parquet columns, named and typed as img2dataset writes them
  (the saved columns, ``url``, ``caption``, ``key``, ``status``, ``error_message``, sizes as
  int32, ``exif``, the hash column), then winnow's ``uid``, ``reason`` and ``dropped_by``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from winnow.shared import storage
from winnow.shared.shards import CORE_SCHEMA, sample_key

OUTPUT_FORMATS = ("webdataset", "files", "parquet")
HASH_TYPES = ("md5", "sha256", "sha512")
WINNOW_COLUMNS = (("uid", pa.string()), ("reason", pa.string()), ("dropped_by", pa.string()))
SIZE_COLUMNS = ("width", "height", "original_width", "original_height")


@dataclass(frozen=True)
class ShardLayout:
    shard_dir: str = "downloader"  # under the job root; "" is the job root itself (img2dataset)
    shard_digits: int = 8  # img2dataset's oom_shard_count
    output_format: str = "webdataset"
    img2dataset_columns: bool = False  # name and type the ledger as img2dataset does
    save_caption: bool = True  # img2dataset writes .txt and ``caption`` only with a caption_col
    extract_exif: bool = False
    compute_hash: str | None = "sha256"
    encode_format: str = "jpg"
    saved_columns: tuple[str, ...] = ()  # img2dataset's save_additional_columns, which lead its parquet

    def __post_init__(self) -> None:
        if self.output_format not in OUTPUT_FORMATS:
            raise ValueError(f"output_format must be one of {OUTPUT_FORMATS}, got {self.output_format!r}")
        if self.compute_hash is not None and self.compute_hash not in HASH_TYPES:
            raise ValueError(f"compute_hash must be one of {HASH_TYPES} or None, got {self.compute_hash!r}")
        if not 1 <= self.shard_digits <= 12:
            raise ValueError(f"oom_shard_count must be between 1 and 12, got {self.shard_digits}")

    @classmethod
    def datacomp(cls) -> ShardLayout:
        return cls()

    def stage_dir(self, job_root: str) -> str:
        return storage.join(job_root, self.shard_dir) if self.shard_dir else job_root.rstrip("/")

    def prefix(self, job_root: str, shard_id: int) -> str:
        return storage.join(self.stage_dir(job_root), f"{shard_id:0{self.shard_digits}d}")

    def stats_glob(self, job_root: str) -> str:
        return storage.join(self.stage_dir(job_root), "*_stats.json")

    def key(self, shard_id: int, index: int, samples_per_shard: int) -> str:
        return sample_key(shard_id, index, samples_per_shard, self.shard_digits)

    @property
    def members(self) -> str:
        return {"webdataset": "tar", "files": "files", "parquet": "none"}[self.output_format]

    def core_schema(self, pool_schema: pa.Schema) -> pa.Schema:
        """The ledger's leading columns."""
        if not self.img2dataset_columns:
            return CORE_SCHEMA
        # img2dataset's order: the saved columns, the caption, the url, then what it adds.
        saved = [pool_schema.field(n) for n in self.saved_columns if n in pool_schema.names]
        saved += [f for f in pool_schema if f.name not in ("uid", "url", "text", *self.saved_columns)]
        fields = list(saved)
        if self.save_caption:
            fields.append(pa.field("caption", pa.string()))
        fields.append(pa.field("url", pa.string()))
        fields += [pa.field("key", pa.string()), pa.field("status", pa.string()), pa.field("error_message", pa.string())]
        fields += [pa.field(name, pa.int32()) for name in SIZE_COLUMNS]
        if self.extract_exif:
            fields.append(pa.field("exif", pa.string()))
        if self.compute_hash is not None and self.compute_hash not in pool_schema.names:
            fields.append(pa.field(self.compute_hash, pa.string()))
        if self.output_format == "parquet":
            fields.append(pa.field(self.encode_format, pa.binary()))
        fields += [pa.field(name, kind) for name, kind in WINNOW_COLUMNS if name not in self.saved_columns]
        return pa.schema(fields)

    def shaped_row(self, row: dict) -> dict:
        """The ledger row under img2dataset's names (``caption`` for ``text``); unchanged for DataComp."""
        if not self.img2dataset_columns:
            return row
        shaped = dict(row)
        text = shaped.pop("text", None)
        if self.save_caption:
            shaped["caption"] = shaped.get("caption", text)
        return shaped
