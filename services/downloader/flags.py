"""The download options' command-line flags, made from ``DownloadSpec`` and ``DownloadJob``.

``winnow download`` takes img2dataset's flags with img2dataset's defaults; ``winnow run``,
``winnow train`` and ``winnow download --scale`` take the fetch and resize flags with DataComp's.
Each flag is a field of those dataclasses (name, type, help, how its value is read); only the
second set of defaults (``IMG2DATASET`` or ``DATACOMP``) is given here.
"""

from __future__ import annotations

import argparse
import dataclasses

from winnow.services.downloader.job import DownloadJob, DownloadSpec
from winnow.services.downloader.options import DATACOMP, Defaults
from winnow.shared.option_flags import OptionItem, add_option_flags, option_items

#: DownloadSpec's img2dataset output layout: flags of ``winnow download`` alone (DataComp's layout is fixed).
LAYOUT_OPTIONS = ("output_format", "oom_shard_count", "url_col", "caption_col", "save_additional_columns")


def shared_items(defaults: Defaults) -> list[OptionItem]:
    """The fetch and resize options; ``skip_bbox_blurring`` (DataComp's spelling) with DataComp's defaults only."""
    exclude = LAYOUT_OPTIONS if defaults is DATACOMP else (*LAYOUT_OPTIONS, "skip_bbox_blurring")
    return option_items(DownloadSpec, exclude=exclude)


def add_shared_options(parser: argparse.ArgumentParser, defaults: Defaults) -> None:
    """The fetch and resize flags, shared by ``download``, ``redownload``, ``run`` and ``train``."""
    add_option_flags(parser.add_argument_group("download"), shared_items(defaults),
                     defaults=dataclasses.asdict(defaults))


def add_job_options(parser: argparse.ArgumentParser) -> None:
    """The flags of ``winnow download`` alone: img2dataset's input, output and job options."""
    parser.add_argument("--url_list", help="pool file or folder (txt, csv, tsv, json, jsonl, "
                        "parquet; the text ones also .gz); required unless --scale")
    add_option_flags(parser, option_items(DownloadJob, exclude=("url_list", "spec")))
    layout = {item.name: item for item in option_items(DownloadSpec)}
    add_option_flags(parser, [layout[name] for name in LAYOUT_OPTIONS])
