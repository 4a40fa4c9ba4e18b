"""The extract stage: one crawl file in (a ShardRef whose uri is the file), one pool shard out.

The ShardRef it returns is the very one ``SubmitPool`` would have queued for that slice
(stage ``pool``, ``{job_root}/pool/{shard:08d}``, the job's shard count), so the downloader
takes it unchanged. A file whose shard is complete is not read again.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

import structlog

from winnow.services.extractor.claims import ClaimLog
from winnow.services.extractor.crawl_job import CRAWL_STAGE, CrawlJob
from winnow.services.extractor.extract import ExtractOptions, extract_file
from winnow.services.extractor.pool_shard import STAGE_NAME, shard_stats, write_pool_shard
from winnow.shared import storage
from winnow.shared.jobs import POOL_STAGE
from winnow.shared.messages import ShardRef, make_ref
from winnow.shared.service.metrics import record_shard_stats
from winnow.shared.shards import ShardFormatError, ShardStats, is_complete, read_stats, shard_prefix
from winnow.shared.stage import ShardStage

log = structlog.get_logger(__name__)

DUPLICATE_IN_JOB = "duplicate_in_job"
CACHED_JOBS = 8  # claim logs held in memory: one per job this replica works on


class ExtractStage(ShardStage):
    """Extracts crawl files into pool shards; the options apply to refs of jobs without ``crawl.json``."""

    name = STAGE_NAME

    def __init__(self, options: ExtractOptions | None = None, dedup_across_files: bool = True) -> None:
        self.options = options or ExtractOptions()
        self.dedup_across_files = dedup_across_files
        #: Called with the number of records read since the last call (progress bars).
        self.on_records: Callable[[int], None] | None = None
        self._jobs: OrderedDict[tuple[str, str], tuple[CrawlJob | None, ClaimLog | None]] = OrderedDict()

    def output_prefix(self, ref: ShardRef) -> str:
        return shard_prefix(storage.join(ref.job_root, POOL_STAGE), ref.shard_id)

    def process(self, ref: ShardRef) -> ShardRef:
        if ref.stage and ref.stage != CRAWL_STAGE:
            raise ShardFormatError(f"the extractor takes crawl-file refs (stage {CRAWL_STAGE!r}), got stage "
                                   f"{ref.stage!r} for {ref.uri}")
        prefix = self.output_prefix(ref)
        if is_complete(prefix):
            stats = read_stats(prefix)
        else:
            stats = self.process_shard(ref, prefix)
            record_shard_stats(stats)
        return make_ref(job_id=ref.job_id, shard_id=ref.shard_id, stage=POOL_STAGE, uri=prefix,
                        sample_count=stats.successes, job_root=ref.job_root, shard_count=ref.shard_count)

    def _job(self, ref: ShardRef) -> tuple[CrawlJob | None, ClaimLog | None]:
        key = (ref.job_root, ref.job_id)
        if key not in self._jobs:
            job = CrawlJob.load(ref.job_root) if CrawlJob.exists(ref.job_root) else None
            dedup = job.dedup_across_files if job is not None else self.dedup_across_files
            self._jobs[key] = (job, ClaimLog(ref.job_root) if dedup else None)
            while len(self._jobs) > CACHED_JOBS:
                self._jobs.popitem(last=False)
        self._jobs.move_to_end(key)
        return self._jobs[key]

    def process_shard(self, ref: ShardRef, prefix: str) -> ShardStats:
        started = time.time()
        job, claims = self._job(ref)
        if job is not None and (ref.shard_id >= len(job.files) or job.files[ref.shard_id] != ref.uri):
            raise ShardFormatError(f"shard {ref.shard_id} of job {ref.job_id} is not {ref.uri} in its crawl.json")
        extraction = extract_file(ref.uri, job.options if job is not None else self.options, self.on_records)
        rows, stats = extraction.rows, extraction.stats
        if claims is not None and rows:
            keep = claims.claim(ref.shard_id, ref.uri, [row.uid for row in rows])
            duplicates = len(rows) - sum(keep)
            if duplicates:
                rows = [row for row, kept in zip(rows, keep) if kept]
                stats.kept -= duplicates
                stats.reasons[DUPLICATE_IN_JOB] += duplicates
        shard = shard_stats(stats, job_id=ref.job_id, shard_id=ref.shard_id, started=started)
        write_pool_shard(prefix, rows, shard)
        log.info("crawl_file_extracted", job_id=ref.job_id, shard_id=ref.shard_id, uri=ref.uri,
                 records=stats.records, pages=stats.pages, images=stats.images, kept=stats.kept,
                 seconds=round(stats.seconds, 2))
        return shard
