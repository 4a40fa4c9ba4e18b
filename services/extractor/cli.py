"""``winnow extract``: image URLs and alt text from Common Crawl WARC/WAT files, as a pool.

    winnow extract CC-MAIN-...warc.gz --out DIR                  one file, here and now
    winnow extract wat.paths.gz --max_files 10 --out DIR         the first ten files of a segment list
    winnow extract warc.paths.gz --out s3://bucket/jobs/cc --submit --kafka HOST:9092

Arguments are crawl files (local paths or URIs) or Common Crawl segment lists (names ending in
``.paths`` or ``.paths.gz``), whose relative paths are joined to ``--paths_prefix``. ``DIR`` is a
job directory: one pool shard per crawl file in ``DIR/pool/`` (parquet with ``uid``, ``url``,
``text``, ``page_url``, ``source_file``, and its ``_stats.json``), the job manifest the
downloader reads, and ``crawl.json``. Rerunning the same command resumes: finished files are
skipped. With ``--submit`` nothing is extracted here: the files are queued for the extractor
service on Kafka, and ``DIR`` must be storage the service can reach.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from winnow.services.extractor.crawl_job import CrawlJob, prepare_crawl_job
from winnow.shared.jobs import publish_refs
from winnow.services.extractor.extract import ExtractOptions, FileStats
from winnow.services.extractor.captions import CaptionRules
from winnow.services.extractor.pool_shard import job_file_stats, sum_file_stats
from winnow.services.extractor.segments import COMMON_CRAWL_PREFIX, expand_inputs, is_segment_list
from winnow.services.extractor.stage import ExtractStage
from winnow.shared.messages import ShardRef
from winnow.shared.topics import CRAWL_TOPIC, TOPIC_PARTITIONS


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("extract", help="image URLs and alt text from Common Crawl WARC/WAT files",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="FILE_OR_PATHS",
                        help="crawl files (WARC or WAT, gzip'd or not) and segment lists (*.paths[.gz])")
    parser.add_argument("--out", required=True, help="job directory (local or a URI); pool shards go to OUT/pool")
    parser.add_argument("--paths_prefix", default=COMMON_CRAWL_PREFIX,
                        help="what relative paths in segment lists are joined to")
    parser.add_argument("--max_files", type=int, default=0, help="only the first N crawl files (0 = all)")
    parser.add_argument("--job_id", default="")
    parser.add_argument("--min_caption_chars", type=int, default=CaptionRules.min_chars)
    parser.add_argument("--max_caption_chars", type=int, default=CaptionRules.max_chars)
    parser.add_argument("--no_dedup_across_files", action="store_true",
                        help="keep a pair in every file it occurs in (it is still dropped within a file)")
    parser.add_argument("--processes", type=int, default=1, help="crawl files extracted at once")
    parser.add_argument("--no_progress", action="store_true")
    submit = parser.add_argument_group("submit to the extractor service instead of extracting here")
    submit.add_argument("--submit", action="store_true", help="queue the files on Kafka for the extractor service")
    submit.add_argument("--kafka", default="", help="Kafka bootstrap servers (host:port)")
    submit.add_argument("--topic", default=CRAWL_TOPIC, help="the extractor's input topic")
    parser.set_defaults(func=run_extract)


def _absolute(item: str) -> str:
    return item if "://" in item else os.path.abspath(item)


def run_extract(args: argparse.Namespace) -> int:
    if args.max_files < 0 or args.processes < 1:
        raise ValueError("--max_files must not be negative and --processes must be at least 1")
    if args.submit and not args.kafka:
        raise ValueError("--submit needs --kafka HOST:PORT")
    options = ExtractOptions(min_caption_chars=args.min_caption_chars, max_caption_chars=args.max_caption_chars)
    files = expand_inputs([_absolute(item) for item in args.inputs], args.paths_prefix, args.max_files)
    lists = [item for item in args.inputs if is_segment_list(item)]
    job = prepare_crawl_job(files, _absolute(args.out), job_id=args.job_id, options=options,
                            dedup_across_files=not args.no_dedup_across_files,
                            source=_absolute(lists[0]) if len(lists) == 1 else "")
    console = Console()
    if args.submit:
        from winnow.shared.bus import open_bus

        bus = open_bus(args.kafka, client_id="winnow-extract", partitions=TOPIC_PARTITIONS)
        try:
            sent = publish_refs(bus, args.topic, job.refs())
        finally:
            bus.close()
        console.print(f"job {job.job_id}: {sent} crawl files queued on {args.topic} -> {job.job_root}")
        return 0
    console.print(f"job {job.job_id}: {len(job.files)} crawl files -> {job.job_root}")
    extract_job(job, processes=args.processes, show_progress=not args.no_progress, console=console)
    print_extract_summary(console, job_file_stats(job.job_root), len(job.files))
    return 0


# Each worker process builds its stage once.
_process_stage: ExtractStage | None = None


def _init_process() -> None:
    global _process_stage
    _process_stage = ExtractStage()


def _process_ref(serialized: bytes) -> tuple[int, int]:
    out = _process_stage.process(ShardRef.FromString(serialized))
    return out.shard_id, out.sample_count


def extract_job(job: CrawlJob, *, processes: int = 1, show_progress: bool = True, console: Console | None = None) -> None:
    """Extract every file of a job that is not a finished shard yet, with a progress bar over files."""
    columns = [TextColumn("[bold]extract"), BarColumn(), MofNCompleteColumn(), TextColumn("files"),
               TextColumn("{task.fields[records]:,} records"), TextColumn("{task.fields[kept]:,} pairs kept"),
               TimeElapsedColumn(), TimeRemainingColumn()]
    refs = job.refs()
    with Progress(*columns, disable=not show_progress, console=console) as progress:
        task = progress.add_task("extract", total=len(refs), records=0, kept=0)
        totals = {"records": 0, "kept": 0}

        def add(field: str, count: int) -> None:
            totals[field] += count
            progress.update(task, **totals)

        if processes <= 1:
            stage = ExtractStage()
            stage.on_records = lambda count: add("records", count)
            for ref in refs:
                add("kept", stage.process(ref).sample_count)
                progress.advance(task)
            return
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(processes, mp_context=context, initializer=_init_process) as pool:
            futures = [pool.submit(_process_ref, ref.SerializeToString()) for ref in refs]
            for future in as_completed(futures):
                _, kept = future.result()
                add("kept", kept)
                progress.advance(task)


def print_extract_summary(console: Console, stats: list[FileStats], file_count: int) -> None:
    """What the job's files held, and why every image that was not kept went."""
    total = sum_file_stats(stats)
    console.print(f"{len(stats)}/{file_count} crawl files: {total.records:,} records, {total.pages:,} pages, "
                  f"{total.images:,} images -> {total.kept:,} image-text pairs kept")
    table = Table(title="winnow extract: what was not kept, and why")
    table.add_column("what")
    table.add_column("reason")
    table.add_column("count", justify="right")
    for what, counts in (("images dropped", total.reasons), ("records skipped", total.skipped),
                         ("issues handled", total.issues)):
        for reason, count in counts.most_common():
            table.add_row(what, reason, f"{count:,}")
    if table.row_count:
        console.print(table)
