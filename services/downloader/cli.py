"""``winnow download`` and ``winnow redownload``: img2dataset's command line, on winnow's downloader.

Option names follow img2dataset where they apply (``--url_list``, ``--output_folder``,
``--processes_count``, ...). Shards land in ``OUTPUT_FOLDER/downloader/``; rerunning the same
command resumes: finished shards are skipped. ``winnow redownload`` fetches again only the
samples that failed for a transient reason.
"""

from __future__ import annotations

import argparse
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from services.downloader import datacomp_upstream
from services.downloader.fetch import DEFAULT_USER_AGENT, FetchOptions
from services.downloader.pool import FORMATS, prepare_job
from services.downloader.redownload import redownload_failed
from services.downloader.resize import ENCODE_FORMATS, ResizeMode, ResizeOptions
from services.downloader.stage import TRANSIENT_REASONS, DownloadOptions, DownloadStage
from shared.jobs import stage_totals
from shared.messages import ShardRef
from shared.summary import print_stage_summary


def _bool(text: str) -> bool:
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes", "y", "on"):
        return True
    if lowered in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {text!r}")


def add_download_options(parser: argparse.ArgumentParser) -> None:
    """The fetch and resize options, shared by ``download``, ``redownload`` and ``run``."""
    group = parser.add_argument_group("download")
    group.add_argument("--image_size", type=int, default=512)
    group.add_argument("--resize_mode", choices=[m.value for m in ResizeMode], default="keep_ratio_largest")
    group.add_argument("--resize_only_if_bigger", type=_bool, nargs="?", const=True, default=True)
    group.add_argument("--encode_format", choices=sorted(ENCODE_FORMATS), default="jpg")
    group.add_argument("--encode_quality", type=int, default=95)
    group.add_argument("--skip_reencode", type=_bool, nargs="?", const=True, default=False)
    group.add_argument("--min_image_size", type=int, default=0)
    group.add_argument("--max_aspect_ratio", type=float, default=float("inf"))
    group.add_argument("--max_image_pixels", type=int, default=89_478_485, help="decompression-bomb cap")
    group.add_argument("--thread_count", type=int, default=32, help="concurrent requests per process")
    group.add_argument("--timeout", type=float, default=10.0, help="seconds per connect and per read")
    group.add_argument("--total_timeout", type=float, default=60.0, help="seconds for a whole request")
    group.add_argument("--retries", type=int, default=2, help="retries of transient failures (429, 5xx, timeouts)")
    group.add_argument("--max_bytes", type=int, default=32 * 1024 * 1024)
    group.add_argument("--per_domain_concurrency", type=int, default=8)
    group.add_argument("--user_agent", default=DEFAULT_USER_AGENT)
    group.add_argument("--user_agent_token", default="winnow", help="X-Robots-Tag lines for this token apply")
    group.add_argument("--allow_networks", nargs="*", default=[],
                       help="CIDRs exempt from the private-address guard, e.g. 127.0.0.0/8")
    group.add_argument("--verify_hash", type=_bool, nargs="?", const=True, default=True,
                       help="check the pool's sha256 column against the downloaded bytes")


def download_options(args: argparse.Namespace) -> DownloadOptions:
    try:
        resize = ResizeOptions(
            image_size=args.image_size, resize_mode=args.resize_mode, resize_only_if_bigger=args.resize_only_if_bigger,
            encode_format=args.encode_format, encode_quality=args.encode_quality, skip_reencode=args.skip_reencode,
            min_image_size=args.min_image_size, max_aspect_ratio=args.max_aspect_ratio,
            max_image_pixels=args.max_image_pixels)
    except ValueError as exc:
        raise SystemExit(f"winnow: {exc}") from exc
    fetch = FetchOptions(timeout=args.timeout, total_timeout=args.total_timeout, retries=args.retries,
                         max_bytes=args.max_bytes, per_domain_concurrency=args.per_domain_concurrency,
                         user_agent=args.user_agent, user_agent_token=args.user_agent_token,
                         allow_networks=tuple(args.allow_networks))
    return DownloadOptions(fetch=fetch, resize=resize, thread_count=args.thread_count, verify_hash=args.verify_hash)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("download", help="download a pool into webdataset shards (img2dataset's options)",
                                   description=__doc__)
    parser.add_argument("--url_list", help="pool file or directory (parquet, csv, tsv, json, jsonl, txt); "
                        "required unless --scale")
    parser.add_argument("--output_folder", help="job directory; shards go to OUTPUT_FOLDER/downloader; "
                        "required unless --scale")
    parser.add_argument("--input_format", choices=FORMATS, default="")
    parser.add_argument("--url_col", default="url")
    parser.add_argument("--caption_col", default="text")
    parser.add_argument("--number_sample_per_shard", type=int, default=10_000)
    parser.add_argument("--processes_count", type=int, default=1)
    parser.add_argument("--max_samples", type=int, default=0, help="only the first N rows (0 = all)")
    parser.add_argument("--job_id", default="")
    parser.add_argument("--disable_progress", action="store_true")
    add_download_options(parser)
    datacomp_upstream.add_arguments(parser)
    parser.set_defaults(func=run_download)

    retry = subparsers.add_parser("redownload", help="fetch again only the samples that failed for a transient reason")
    retry.add_argument("--output_folder", required=True, help="the job directory of an earlier download")
    retry.add_argument("--reasons", nargs="*", default=sorted(TRANSIENT_REASONS),
                       help="failure reasons to retry (default: the transient ones)")
    add_download_options(retry)
    retry.set_defaults(func=run_redownload)


# Each worker process builds its stage once.
_process_stage: DownloadStage | None = None


def _init_process(options: DownloadOptions, stage_class: type[DownloadStage] = DownloadStage) -> None:
    global _process_stage
    _process_stage = stage_class(options)
    _process_stage.setup()


def _process_ref(serialized: bytes) -> tuple[int, int, int]:
    ref = ShardRef.FromString(serialized)
    out = _process_stage.process(ref)
    return ref.shard_id, out.sample_count, ref.sample_count


def download_refs(refs: list[ShardRef], options: DownloadOptions, processes: int, show_progress: bool,
                  stage_class: type[DownloadStage] = DownloadStage) -> None:
    """Download every shard, ``processes`` at a time, with a progress bar over samples."""
    columns = [TextColumn("[bold]download"), BarColumn(), MofNCompleteColumn(), TextColumn("samples"),
               TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, disable=not show_progress, transient=False) as progress:
        task = progress.add_task("download", total=sum(r.sample_count for r in refs))
        if processes <= 1:
            stage = stage_class(options)
            stage.setup()
            try:
                for ref in refs:
                    stage.process(ref)
                    progress.advance(task, ref.sample_count)
            finally:
                stage.teardown()
            return
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(processes, mp_context=context, initializer=_init_process,
                                 initargs=(options, stage_class)) as pool:
            futures = [pool.submit(_process_ref, r.SerializeToString()) for r in refs]
            for future in as_completed(futures):
                _, _, count = future.result()
                progress.advance(task, count)


def run_download(args: argparse.Namespace) -> int:
    if args.no_resize_only_if_bigger:
        args.resize_only_if_bigger = False
    options = download_options(args)
    if args.scale:
        return datacomp_upstream.run(args, options)
    if not args.url_list or not args.output_folder:
        raise SystemExit("winnow download: --url_list and --output_folder are required (or --scale and --data_dir)")
    manifest = prepare_job(args.url_list, args.output_folder, job_id=args.job_id, input_format=args.input_format,
                           url_col=args.url_col, caption_col=args.caption_col or None,
                           samples_per_shard=args.number_sample_per_shard, max_samples=args.max_samples)
    download_refs(manifest.pool_refs(), options, args.processes_count, not args.disable_progress)
    print_stage_summary(Console(), [stage_totals(manifest.job_root, DownloadStage.name)])
    return 0


def run_redownload(args: argparse.Namespace) -> int:
    result = redownload_failed(args.output_folder, download_options(args), reasons=set(args.reasons))
    console = Console()
    console.print(f"retried {result.retried} samples in {result.shards} shards: {result.recovered} recovered")
    print_stage_summary(console, [stage_totals(args.output_folder, DownloadStage.name)])
    return 0

