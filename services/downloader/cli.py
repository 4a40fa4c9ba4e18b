"""``winnow download`` and ``winnow redownload``: img2dataset's command line, on winnow's downloader.

Every option of img2dataset's ``download()`` is taken with its meaning and its default (see
``winnow.services.downloader.options``); shards are written in the output folder as img2dataset writes
them. The job records its options in ``OUTPUT_FOLDER/job.json``: rerunning the same command
resumes (finished shards are skipped, and said so); other output-changing options are refused
unless ``--incremental_mode overwrite`` (start again) or ``extend`` (new shards after the last).
``winnow redownload`` fetches again only the samples that failed for a transient reason, with
the job's own options.
"""

from __future__ import annotations

import argparse
import copy

from rich.console import Console

from winnow.services.downloader import datacomp_upstream
from winnow.services.downloader.job import (DATACOMP_PROFILE, IMG2DATASET_PROFILE, DownloadJob, DownloadSpec,
                                     download_job, download_refs, download_totals)
from winnow.services.downloader.flags import add_job_options, add_shared_options
from winnow.services.downloader.options import DATACOMP, IMG2DATASET, parse_bool
from winnow.services.downloader.redownload import redownload_failed
from winnow.services.downloader.stage import TRANSIENT_REASONS, DownloadOptions
from winnow.services.downloader.summary import failure_hints
from winnow.shared.jobs import JobManifest
from winnow.shared.summary import print_stage_summary

_bool = parse_bool  # kept for callers of the old name
# download_refs and download_totals are imported from here by older callers.
__all__ = ["DATACOMP_PROFILE", "IMG2DATASET_PROFILE", "download_options", "download_refs", "download_totals"]


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


def download_options(args: argparse.Namespace, profile: str = DATACOMP_PROFILE) -> DownloadOptions:
    """The stage's options from parsed command-line options (download, run or train)."""
    try:
        return DownloadSpec.from_namespace(args).stage_options(profile)
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


def run_download(args: argparse.Namespace) -> int:
    if args.scale:
        return datacomp_upstream.run(args)
    if not args.url_list:
        raise SystemExit("winnow download: --url_list is required (or --scale and --data_dir, DataComp's download)")
    console = Console()
    options = download_options(args, IMG2DATASET_PROFILE)
    result = download_job(DownloadJob.from_namespace(args), options, console=console, say=console.print)
    print_stage_summary(console, [result.totals])
    for hint in failure_hints(result.totals):
        console.print(hint)
    for shard_id, error in result.failed_shards:
        console.print(f"[red]shard {shard_id} failed after {args.max_shard_retry + 1} tries: {error}")
    return 1 if result.failed_shards else 0


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
