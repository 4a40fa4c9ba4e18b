"""Writing a crawl file's kept pairs as a pool shard the downloader takes as it is.

``{job_root}/pool/{shard:08d}.parquet`` has DataComp's ``uid``, ``url``, ``text`` and, riding
along into every later stage's ledger, ``page_url`` and ``source_file``.
``{shard:08d}_stats.json`` is written last (the completion marker): ``count`` is the images
seen, ``successes`` the pairs kept, ``reasons`` why the rest went, and the file's record
counts beside them (``records``, ``pages``, ``skipped``, ``issues``).
"""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from winnow.services.extractor.extract import FileStats, ImageText
from winnow.shared import storage
from winnow.shared.jobs import POOL_STAGE
from winnow.shared.shards import DROPPED, SUCCESS, ShardStats, stats_uri

POOL_SCHEMA = pa.schema([(name, pa.string()) for name in ImageText._fields])
STAGE_NAME = "extractor"


def pool_table(rows: Sequence[ImageText]) -> pa.Table:
    columns = list(zip(*rows)) if rows else [[] for _ in ImageText._fields]
    return pa.Table.from_arrays([pa.array(column, pa.string()) for column in columns], schema=POOL_SCHEMA)


def pool_parquet(rows: Sequence[ImageText]) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pool_table(rows), buffer, compression="zstd")
    return buffer.getvalue()


def shard_stats(stats: FileStats, *, job_id: str, shard_id: int, started: float) -> ShardStats:
    """The completion marker's content for one crawl file's shard."""
    dropped = stats.images - stats.kept
    return ShardStats(stage=STAGE_NAME, job_id=job_id, shard_id=shard_id, count=stats.images,
                      successes=stats.kept, status_counts=Counter({SUCCESS: stats.kept, DROPPED: dropped}),
                      reasons=stats.reasons.copy(), start_time=started, end_time=time.time(),
                      extra={k: v for k, v in stats.to_json().items() if k not in ("images", "kept", "reasons")})


def write_pool_shard(prefix: str, rows: Sequence[ImageText], stats: ShardStats) -> None:
    """Parquet first, the completion marker last; both atomically."""
    storage.remove_partial_writes(prefix)
    storage.write_bytes(f"{prefix}.parquet", pool_parquet(rows))
    storage.write_text(stats_uri(prefix), json.dumps(stats.to_json(), indent=1, default=str))


def file_stats_from_shard(stats: ShardStats) -> FileStats:
    """A pool shard's completion marker read back as the stats of the crawl file it came from."""
    extra = stats.extra
    return FileStats(source_file=str(extra.get("source_file", "")), records=int(extra.get("records", 0)),
                     pages=int(extra.get("pages", 0)), images=stats.count, kept=stats.successes,
                     reasons=Counter(stats.reasons), skipped=Counter(extra.get("skipped", {})),
                     issues=Counter(extra.get("issues", {})), seconds=float(extra.get("seconds", 0.0)))


def job_file_stats(job_root: str) -> list[FileStats]:
    """The stats of every crawl file of a job that is a finished pool shard, in shard order."""
    return [file_stats_from_shard(ShardStats.from_json(json.loads(storage.read_text(uri))))
            for uri in storage.glob(storage.join(job_root, POOL_STAGE, "*_stats.json"))]


def sum_file_stats(stats: Sequence[FileStats], source_file: str = "") -> FileStats:
    total = FileStats(source_file=source_file)
    for one in stats:
        total.records += one.records
        total.pages += one.pages
        total.images += one.images
        total.kept += one.kept
        total.reasons.update(one.reasons)
        total.skipped.update(one.skipped)
        total.issues.update(one.issues)
        total.seconds += one.seconds
    return total
