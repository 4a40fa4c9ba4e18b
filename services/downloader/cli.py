"""``winnow download`` and ``winnow redownload``: img2dataset's command line, on winnow's downloader.

Every option of img2dataset's ``download()`` is taken with its meaning and its default (see
``services.downloader.options``); shards are written in the output folder as img2dataset writes
them. The job records its options in ``OUTPUT_FOLDER/job.json``: rerunning the same command
resumes (finished shards are skipped, and said so); other output-changing options are refused
unless ``--incremental_mode overwrite`` (start again) or ``extend`` (new shards after the last).
``winnow redownload`` fetches again only the samples that failed for a transient reason, with
the job's own options.
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor

import structlog
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from services.downloader import datacomp_upstream
from services.downloader.fetch import DEFAULT_USER_AGENT, FetchOptions, ProxySettings
from services.downloader.layout import ShardLayout
from services.downloader.options import (DATACOMP, IMG2DATASET, add_job_options, add_shared_options,
                                         option_differences, parse_bool, recorded_options)
from services.downloader.pool import prepare_job
from services.downloader.redownload import redownload_failed
from services.downloader.resize import ResizeOptions
from services.downloader.stage import TRANSIENT_REASONS, DownloadOptions, DownloadStage
from services.downloader.summary import failure_hints
from shared import storage
from shared.jobs import JobManifest, StageTotals
from shared.messages import ShardRef
from shared.shards import ShardStats, is_complete
from shared.summary import print_stage_summary

log = structlog.get_logger("winnow.download")
_bool = parse_bool  # kept for callers of the old name
IMG2DATASET_PROFILE = "img2dataset"
DATACOMP_PROFILE = "datacomp"


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """``--help`` shows every option's default, and the description as written."""

    def _format_action(self, action: argparse.Action) -> str:
        if not action.help and action.option_strings and action.default is not argparse.SUPPRESS:
            action = copy.copy(action)
            action.help = "(default: %(default)s)"  # argparse shows defaults only beside help text
        return super()._format_action(action)


def add_download_options(parser: argparse.ArgumentParser) -> None:
    """The fetch and resize options with DataComp's defaults (``winnow run``, ``winnow train``)."""
    add_shared_options(parser, DATACOMP)


def layout_for(args: argparse.Namespace, profile: str) -> ShardLayout:
    if profile == IMG2DATASET_PROFILE:
        return ShardLayout(shard_dir="", shard_digits=args.oom_shard_count, output_format=args.output_format,
                           img2dataset_columns=True, save_caption=args.caption_col is not None,
                           extract_exif=args.extract_exif, compute_hash=args.compute_hash,
                           encode_format=args.encode_format, saved_columns=_kept_columns(args))
    return ShardLayout(extract_exif=False, compute_hash=getattr(args, "compute_hash", "sha256"))


def download_options(args: argparse.Namespace, profile: str = DATACOMP_PROFILE) -> DownloadOptions:
    """The stage's options from parsed command-line options (download, run or train)."""
    get = lambda name, default=None: getattr(args, name, default)  # noqa: E731
    try:
        resize = ResizeOptions(
            image_size=args.image_size, resize_mode=args.resize_mode, resize_only_if_bigger=args.resize_only_if_bigger,
            encode_format=args.encode_format, encode_quality=args.encode_quality, skip_reencode=args.skip_reencode,
            disable_all_reencoding=get("disable_all_reencoding", False), min_image_size=args.min_image_size,
            max_image_area=get("max_image_area", float("inf")), max_aspect_ratio=args.max_aspect_ratio,
            max_image_pixels=args.max_image_pixels)
        directives = get("disallowed_header_directives")
        fetch = FetchOptions(timeout=args.timeout, total_timeout=args.total_timeout, retries=args.retries,
                             max_bytes=args.max_bytes, per_domain_concurrency=args.per_domain_concurrency,
                             user_agent=get("user_agent") or DEFAULT_USER_AGENT,
                             user_agent_token=get("user_agent_token") or "",
                             disallowed_header_directives=tuple(d.lower() for d in directives or ()),
                             allow_networks=tuple(args.allow_networks),
                             ignore_ssl_certificate=get("ignore_ssl_certificate", False),
                             respect_robots_txt=get("respect_robots_txt", False),
                             proxies=ProxySettings.from_environment())
        bbox_col = None if get("skip_bbox_blurring", False) else get("bbox_col")
        verify = get("verify_hash")
        return DownloadOptions(fetch=fetch, resize=resize, layout=layout_for(args, profile),
                               thread_count=args.thread_count, verify_hash=tuple(verify) if verify else None,
                               bbox_col=bbox_col)
    except ValueError as exc:
        raise SystemExit(f"winnow: {exc}") from exc


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("download", help="download a pool as img2dataset does (its options, its defaults)",
                                   description=__doc__, formatter_class=Formatter)
    add_job_options(parser)
    add_shared_options(parser, IMG2DATASET)
    datacomp_upstream.add_arguments(parser)
    parser.set_defaults(func=run_download)

    retry = subparsers.add_parser("redownload", help="fetch again only the samples that failed for a transient reason",
                                  description="Fetch again the samples of a job that failed for one of --reasons, "
                                  "with the options the job recorded; an option given here overrides the job's.",
                                  formatter_class=Formatter)
    retry.add_argument("--output_folder", required=True, help="the output folder of an earlier download or run")
    retry.add_argument("--reasons", nargs="*", default=sorted(TRANSIENT_REASONS),
                       help="failure reasons to retry (default: the transient ones)")
    add_shared_options(retry, IMG2DATASET)
    # Only the options given on this command line override the job's; the rest come from job.json.
    for action in retry._actions:
        if action.dest not in ("help", "output_folder", "reasons"):
            action.default = argparse.SUPPRESS
    retry.set_defaults(func=run_redownload)


# Each worker process builds its stage once and counts its samples into shared counters.
_process_stage: DownloadStage | None = None


def _init_process(options: DownloadOptions, done, kept) -> None:
    global _process_stage
    _process_stage = DownloadStage(options)
    _process_stage.on_sample = lambda ok: _count(done, kept, ok)
    _process_stage.setup()


def _count(done, kept, ok: bool) -> None:
    with done.get_lock():
        done.value += 1
    if ok:
        with kept.get_lock():
            kept.value += 1


def _process_ref(serialized: bytes) -> bytes:
    return _process_stage.process(ShardRef.FromString(serialized)).SerializeToString()


def progress_columns() -> list:
    """The download bar: samples done, images/s (kept), success rate, elapsed and ETA."""
    return [TextColumn("[bold]download"), BarColumn(), MofNCompleteColumn(), TextColumn("samples"),
            TextColumn("{task.fields[rate]:>7.1f} img/s"), TextColumn("{task.fields[success]:>6.1%} ok"),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]


def download_refs(refs: list[ShardRef], options: DownloadOptions, processes: int, show_progress: bool,
                  max_shard_retry: int = 0, console: Console | None = None, on_shard=None) -> list[tuple[int, str]]:
    """Download every shard, ``processes`` at a time, with a live bar of images/s, success rate and ETA.

    A shard that raises is tried again up to ``max_shard_retry`` times (img2dataset's option);
    returns ``(shard id, error)`` of the shards that still failed.
    """
    started = time.monotonic()
    with Progress(*progress_columns(), console=console, disable=not show_progress, transient=False) as progress:
        task = progress.add_task("download", total=sum(r.sample_count for r in refs), rate=0.0, success=0.0)

        def show(done: int, kept: int) -> None:
            elapsed = max(time.monotonic() - started, 1e-6)
            progress.update(task, completed=done, rate=kept / elapsed, success=kept / done if done else 0.0)

        failed: list[tuple[int, str]] = []
        pending = list(refs)
        for attempt in range(max_shard_retry + 1):
            if not pending:
                break
            if attempt:
                log.warning("retrying failed shards", shards=[r.shard_id for r in pending], attempt=attempt)
            pending, failed = _download_round(pending, options, processes, show, on_shard)
        return failed


def _download_round(refs, options, processes, show, on_shard):
    failed_refs, failures = [], []
    if processes <= 1:
        counts = {"done": 0, "kept": 0}

        def count(ok: bool) -> None:
            counts["done"] += 1
            counts["kept"] += ok
            if counts["done"] % 16 == 0:
                show(counts["done"], counts["kept"])

        stage = DownloadStage(options)
        stage.on_sample = count
        stage.setup()
        try:
            for ref in refs:
                try:
                    out = stage.process(ref)
                except Exception as exc:  # a failed shard is retried, then reported; the others go on
                    failed_refs.append(ref)
                    failures.append((ref.shard_id, f"{type(exc).__name__}: {exc}"))
                    continue
                if on_shard is not None:
                    on_shard(out)
                show(counts["done"], counts["kept"])
        finally:
            stage.teardown()
        return failed_refs, failures
    context = multiprocessing.get_context("spawn")
    done, kept = context.Value("q", 0), context.Value("q", 0)
    with ProcessPoolExecutor(processes, mp_context=context, initializer=_init_process,
                             initargs=(options, done, kept)) as pool:
        futures = {pool.submit(_process_ref, r.SerializeToString()): r for r in refs}
        remaining = set(futures)
        while remaining:
            finished = [f for f in remaining if f.done()]
            for future in finished:
                remaining.discard(future)
                ref = futures[future]
                try:
                    out = ShardRef.FromString(future.result())
                except Exception as exc:
                    failed_refs.append(ref)
                    failures.append((ref.shard_id, f"{type(exc).__name__}: {exc}"))
                    continue
                if on_shard is not None:
                    on_shard(out)
            show(done.value, kept.value)
            if remaining:
                time.sleep(0.2)
    return failed_refs, failures


def _wanted_options(args: argparse.Namespace) -> dict:
    return recorded_options(args, IMG2DATASET_PROFILE)


def prepare_download_job(args: argparse.Namespace, console: Console) -> JobManifest:
    """The job to download: a new one, the same one resumed, or refused when the options differ."""
    wanted = _wanted_options(args)
    root = args.output_folder
    exists = JobManifest.exists(root)
    if args.incremental_mode == "overwrite" and storage.exists(root):
        # As img2dataset does: the output folder is removed and written again.
        console.print(f"--incremental_mode overwrite: removing the previous output in {root}")
        fs, path = storage.filesystem(root)
        fs.rm(path, recursive=True)
        exists = False
    elif not exists and storage.glob(storage.join(root, "*_stats.json")):
        raise ValueError(f"{root} holds shards that no winnow job.json describes (img2dataset's?); choose another "
                         "--output_folder, or pass --incremental_mode overwrite to replace them")
    if exists:
        recorded = JobManifest.load(root).options
        if args.incremental_mode == "incremental":
            if not recorded:
                raise ValueError(f"{root} holds a job made without recorded options; pass --incremental_mode "
                                 "overwrite to start again")
            differences = option_differences(recorded, wanted)
            if differences:
                raise ValueError(
                    f"{root} was downloaded with other options, which would mix two kinds of shards:\n  "
                    + "\n  ".join(differences)
                    + "\nrerun with the job's options to resume it, pass --incremental_mode overwrite to start "
                    "again, or --incremental_mode extend to add this pool as new shards; to fetch failed samples "
                    "again, winnow redownload --output_folder ... --reasons REASON takes the options it names")
    return prepare_job(args.url_list, root, job_id=args.job_id, input_format=args.input_format or "",
                       url_col=args.url_col, caption_col=args.caption_col,
                       samples_per_shard=args.number_sample_per_shard, max_samples=args.max_samples,
                       keep_columns=_kept_columns(args), options=wanted,
                       extend=exists and args.incremental_mode == "extend")


def _kept_columns(args: argparse.Namespace) -> tuple[str, ...]:
    """img2dataset's saved columns: the listed ones, plus bbox_col and verify_hash's column."""
    columns = list(args.save_additional_columns or [])
    for extra in (args.bbox_col, args.verify_hash[0] if args.verify_hash else None):
        if extra and extra not in columns and extra not in (args.url_col, args.caption_col):
            columns.append(extra)
    return tuple(columns)


def run_download(args: argparse.Namespace) -> int:
    if args.scale:
        return datacomp_upstream.run(args)
    if not args.url_list:
        raise SystemExit("winnow download: --url_list is required (or --scale and --data_dir, DataComp's download)")
    console = Console()
    options = download_options(args, IMG2DATASET_PROFILE)
    wandb_run = None
    if args.enable_wandb:
        from services.downloader.wandb_log import start_wandb

        wandb_run = start_wandb(args.wandb_project, recorded_options(args, IMG2DATASET_PROFILE))
    manifest = prepare_download_job(args, console)
    refs = manifest.pool_refs()
    layout = options.layout
    finished = [r.shard_id for r in refs if is_complete(layout.prefix(manifest.job_root, r.shard_id))]
    if finished:
        console.print(f"skipping {len(finished)} of {len(refs)} shards already finished in {manifest.job_root} "
                      "(--incremental_mode overwrite starts again)")
    todo = [r for r in refs if r.shard_id not in set(finished)]
    on_shard = wandb_run.shard_done if wandb_run is not None else None
    failed = download_refs(todo, options, args.processes_count, not args.disable_progress,
                           max_shard_retry=args.max_shard_retry, console=console, on_shard=on_shard)
    if wandb_run is not None:
        wandb_run.finish()
    totals = download_totals(manifest.job_root, layout)
    print_stage_summary(console, [totals])
    for hint in failure_hints(totals):
        console.print(hint)
    for shard_id, error in failed:
        console.print(f"[red]shard {shard_id} failed after {args.max_shard_retry + 1} tries: {error}")
    return 1 if failed else 0


def download_totals(job_root: str, layout: ShardLayout) -> StageTotals:
    totals = StageTotals(DownloadStage.name)
    for uri in storage.glob(layout.stats_glob(job_root)):
        totals.add(ShardStats.from_json(json.loads(storage.read_text(uri))))
    return totals


def job_download_options(job_root: str, overrides: argparse.Namespace) -> DownloadOptions:
    """The options a job was made with, with those given on the command line on top."""
    recorded = dict(JobManifest.load(job_root).options)
    profile = recorded.pop("profile", DATACOMP_PROFILE)
    defaults = argparse.ArgumentParser(add_help=False)
    add_shared_options(defaults, IMG2DATASET if profile == IMG2DATASET_PROFILE else DATACOMP)
    if profile == IMG2DATASET_PROFILE:
        add_job_options(defaults)
    base = vars(defaults.parse_args([] if profile != IMG2DATASET_PROFILE else ["--url_list", "-"]))
    base.update({k: (float("inf") if v == "inf" else v) for k, v in recorded.items()})
    base.update({k: v for k, v in vars(overrides).items() if k in base})
    return download_options(argparse.Namespace(**base), profile)


def run_redownload(args: argparse.Namespace) -> int:
    options = job_download_options(args.output_folder, args)
    result = redownload_failed(args.output_folder, options, reasons=set(args.reasons))
    console = Console()
    console.print(f"retried {result.retried} samples in {result.shards} shards: {result.recovered} recovered")
    totals = download_totals(args.output_folder, options.layout)
    print_stage_summary(console, [totals])
    for hint in failure_hints(totals):
        console.print(hint)
    return 0
