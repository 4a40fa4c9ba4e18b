"""``winnow run --shards DIR_OR_URI``: curate shards one already has, where they are.

img2dataset's webdataset output (tars with or without their parquets) or DataComp's shards, local
or ``s3://``: nothing is downloaded and no image is copied. The job's first stage, ``source``,
writes a ledger per input shard that names the input's tar (``winnow.services.downloader.shards_import``);
safety, dedup, blur and embed then read the images from there, and the filter and the resharder
follow as for a downloaded pool.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from winnow.services.downloader.shards_import import prepare_shards_job
from winnow.shared.jobs import JobManifest
from winnow.shared.topics import CURATION_STAGES

DOWNLOAD = "download"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", default="", metavar="DIR_OR_URI",
                        help="curate these shards in place instead of a pool: a folder (or s3:// prefix) of .tar "
                             "shards, img2dataset's webdataset output or DataComp's shards/, or one .tar")
    parser.add_argument("--images_blurred", action="store_true",
                        help="with --shards: the shards' faces are blurred already (DataComp's download blurs its "
                             "face_bboxes), so the resharder does not blur them again")


def shards_job(shards: str, out: str, *, stages: Sequence[str] | None, images_blurred: bool,
               clip_models: Sequence[str], say: Callable[[str], object]) -> tuple[JobManifest, list[str]]:
    """The job over ``shards`` (written once, resumed after) and the curation stages to run on it
    after the import: ``stages`` as given (without ``download``), or by default all of them (embed
    only with a CLIP model)."""
    if stages is not None and DOWNLOAD in stages:
        raise ValueError("--stages: with --shards the images are there already; leave out 'download'")
    chosen = list(stages) if stages is not None else list(CURATION_STAGES[1:])
    manifest = prepare_shards_job(shards, out, images_blurred=images_blurred)
    declared = f"{manifest.sample_count} samples declared" if manifest.sample_count else "samples counted on import"
    say(f"job {manifest.job_id}: {manifest.shard_count} shards of {shards} ({declared}), curated in "
        f"place -> {manifest.job_root}")
    if stages is None and not clip_models and "embed" in chosen:
        chosen.remove("embed")
        say("embed skipped: no CLIP model given (--clip_model b32=ViT-B-32:openai, or a checkpoint)")
    return manifest, chosen
