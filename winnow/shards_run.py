"""``winnow run --shards DIR_OR_URI``: curate shards one already has, where they are.

img2dataset's webdataset output (tars with or without their parquets) or DataComp's shards, local
or ``s3://``: nothing is downloaded and no image is copied. The job's first stage, ``source``,
writes a ledger per input shard that names the input's tar (``services.downloader.shards_import``);
safety, dedup, blur and embed then read the images from there, and the filter and the resharder
follow as for a downloaded pool.
"""

from __future__ import annotations

import argparse

from rich.console import Console

from services.downloader.shards_import import ShardImportStage, prepare_shards_job
from shared.jobs import JobManifest
from shared.stage import Stage

DOWNLOAD = "download"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", default="", metavar="DIR_OR_URI",
                        help="curate these shards in place instead of a pool: a folder (or s3:// prefix) of .tar "
                             "shards, img2dataset's webdataset output or DataComp's shards/, or one .tar")
    parser.add_argument("--images_blurred", action="store_true",
                        help="with --shards: the shards' faces are blurred already (DataComp's download blurs its "
                             "face_bboxes), so the resharder does not blur them again")


def shards_job(args: argparse.Namespace, console: Console) -> tuple[JobManifest, list[Stage]]:
    """The job over ``args.shards`` (written once, resumed after) and its stages: the import, then the
    curation stages ``--stages`` names (by default all of them; embed only with a ``--clip_model``)."""
    from winnow.pipeline import build_stages

    given = "--stages" in (getattr(args, "argv", None) or [])
    if DOWNLOAD in args.stages:
        if given:
            raise ValueError("--stages: with --shards the images are there already; leave out 'download'")
        args.stages = [s for s in args.stages if s != DOWNLOAD]
    manifest = prepare_shards_job(args.shards, args.out, images_blurred=args.images_blurred)
    declared = f"{manifest.sample_count} samples declared" if manifest.sample_count else "samples counted on import"
    console.print(f"job {manifest.job_id}: {manifest.shard_count} shards of {args.shards} ({declared}), curated in "
                  f"place -> {manifest.job_root}")
    if not given and not args.clip_model and "embed" in args.stages:
        args.stages = [s for s in args.stages if s != "embed"]
        console.print("embed skipped: no CLIP model given (--clip_model b32=ViT-B-32:openai, or a checkpoint)")
    return manifest, [ShardImportStage(), *build_stages(args)]
