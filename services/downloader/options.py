"""img2dataset's options on winnow's downloader: reading values, the two sets of defaults, and refusals.

``winnow download`` takes every option of img2dataset's ``download()`` (1.47.0) with its meaning
and its default, or refuses a value it cannot honour with a message that says why and what to
use instead. ``winnow run`` (and ``winnow train``'s pool download) take the same options with
DataComp's defaults. The options themselves are the fields of ``DownloadSpec`` and ``DownloadJob``
(``winnow.services.downloader.job``), whose flags ``winnow.services.downloader.flags`` makes.
``IMG2DATASET_OPTIONS`` is the table the README shows and the tests hold against img2dataset's
own signature.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from winnow.services.downloader.fetch import DISALLOWED_DIRECTIVES
from winnow.services.downloader.layout import HASH_TYPES, OUTPUT_FORMATS
from winnow.shared.option_flags import parse_bool, parse_list

__all__ = ["DATACOMP", "IMG2DATASET", "IMG2DATASET_OPTIONS", "Defaults", "parse_bool", "recorded_options"]

# img2dataset's X-Robots-Tag directives (winnow's DataComp flow adds "none").
IMG2DATASET_DIRECTIVES = ("noai", "noimageai", "noindex", "noimageindex")
KNOWN_DIRECTIVES = (*DISALLOWED_DIRECTIVES, "noml")


def parse_optional(text: str) -> str | None:
    return None if str(text).strip() in ("None", "none", "null", "") else str(text)


def parse_output_format(text: str) -> str:
    if text in OUTPUT_FORMATS:
        return text
    if text == "tfrecord":
        raise argparse.ArgumentTypeError(
            "tfrecord is not written by winnow (it would need TensorFlow); use webdataset, which TensorFlow "
            "reads through tf.data and webdataset's loaders, or parquet")
    if text == "dummy":
        raise argparse.ArgumentTypeError("dummy (img2dataset's benchmark writer) is not offered; use webdataset")
    raise argparse.ArgumentTypeError(f"output_format must be one of {', '.join(OUTPUT_FORMATS)}, got {text!r}")


def parse_distributor(text: str) -> str:
    if text == "multiprocessing":
        return text
    if text in ("pyspark", "ray"):
        raise argparse.ArgumentTypeError(
            f"{text} is not used by winnow; to spread a download over machines, run the downloader service "
            "(python -m winnow.services.downloader) as replicas of one Kafka consumer group and submit the pool with "
            "'winnow submit' (or its SubmitPool gRPC call); on one machine use --distributor multiprocessing "
            "with --processes_count")
    raise argparse.ArgumentTypeError(f"distributor must be multiprocessing, got {text!r}")


def parse_hash(text: str) -> str | None:
    value = parse_optional(text)
    if value is not None and value not in HASH_TYPES:
        raise argparse.ArgumentTypeError(f"compute_hash must be one of {', '.join(HASH_TYPES)} or None, got {text!r}")
    return value


def parse_verify_hash(text: str) -> list[str] | None:
    value = parse_list(text)
    if value is None:
        return None
    if len(value) != 2 or value[1] not in HASH_TYPES:
        raise argparse.ArgumentTypeError(
            f"verify_hash is [COLUMN, HASH_TYPE], e.g. '[\"sha256\",\"sha256\"]', with a type of "
            f"{', '.join(HASH_TYPES)}; got {text!r}")
    return value


def parse_directives(text: str) -> list[str] | None:
    value = parse_list(text)
    for directive in value or ():
        if directive.lower() not in KNOWN_DIRECTIVES:
            raise argparse.ArgumentTypeError(
                f"unknown X-Robots-Tag directive {directive!r}; known: {', '.join(KNOWN_DIRECTIVES)}")
    return value


def only(value: str, why: str):
    """A type that accepts one value and refuses others with ``why``."""

    def parse(text: str) -> str:
        if text != value:
            raise argparse.ArgumentTypeError(f"only {value!r} is supported: {why}")
        return text

    parse.__name__ = value
    return parse


def parse_incremental_mode(text: str) -> str:
    if text not in ("incremental", "overwrite", "extend"):
        raise argparse.ArgumentTypeError(f"incremental_mode must be incremental, overwrite or extend, got {text!r}")
    return text


@dataclass(frozen=True)
class Defaults:
    """One set of defaults for the shared download options."""

    image_size: int
    resize_mode: str
    resize_only_if_bigger: bool
    thread_count: int
    retries: int
    compute_hash: str | None
    extract_exif: bool
    disallowed_header_directives: tuple[str, ...]
    user_agent_token: str | None
    bbox_col: str | None


IMG2DATASET = Defaults(image_size=256, resize_mode="border", resize_only_if_bigger=False, thread_count=256, retries=0,
                       compute_hash="sha256", extract_exif=True, disallowed_header_directives=IMG2DATASET_DIRECTIVES,
                       user_agent_token=None, bbox_col=None)
# DataComp's download_upstream: 512 px, keep_ratio_largest, resize_only_if_bigger; its pool's
# face_bboxes blurred unless --skip_bbox_blurring; no hash verification.
DATACOMP = Defaults(image_size=512, resize_mode="keep_ratio_largest", resize_only_if_bigger=True, thread_count=32,
                    retries=2, compute_hash="sha256", extract_exif=False,
                    disallowed_header_directives=DISALLOWED_DIRECTIVES, user_agent_token="winnow", bbox_col="face_bboxes")


# Every option of img2dataset's download() and what winnow does with it (README table, tests).
IMG2DATASET_OPTIONS: dict[str, str] = {
    "url_list": "same: a file or a folder of files",
    "image_size": "same (default 256)",
    "output_folder": "same; winnow adds `job.json` (the options) and `pool/` (the input cut in shards)",
    "processes_count": "same",
    "resize_mode": "same: no, keep_ratio, keep_ratio_largest, center_crop, border",
    "resize_only_if_bigger": "same",
    "upscale_interpolation": "lanczos only (what winnow upscales with); others are refused",
    "downscale_interpolation": "area only (box filter; libjpeg DCT scaling first for large JPEGs); others are refused",
    "encode_quality": "same",
    "encode_format": "same: jpg, png, webp",
    "skip_reencode": "same",
    "output_format": "webdataset, files, parquet (images in the parquet); tfrecord and dummy refused",
    "input_format": "txt, csv, tsv, json, jsonl, parquet and the .gz of each text format; a folder of them; "
                    "without the option, the file name decides",
    "url_col": "same",
    "caption_col": "same",
    "bbox_col": "same: those boxes are blurred before resizing (DataComp's blur); the column is kept",
    "thread_count": "same: concurrent requests per process",
    "number_sample_per_shard": "same",
    "extract_exif": "same (exifread, as img2dataset)",
    "save_additional_columns": "same; `uid` is always kept (generated when the pool has none)",
    "timeout": "same: seconds per connect and per read (`--total_timeout` caps a whole request)",
    "enable_wandb": "same: img2dataset's `total/*` figures, once per finished shard; needs wandb "
                    "(`pip install wandb`; in the test extra); `WANDB_MODE=offline` works without an account",
    "wandb_project": "same",
    "oom_shard_count": "same: digits of shard names (and of keys)",
    "compute_hash": "same: md5, sha256, sha512 or None",
    "verify_hash": "same: `[COLUMN, HASH_TYPE]`; a mismatch is `hash_mismatch`",
    "distributor": "multiprocessing; pyspark and ray are refused, pointing to the Kafka services",
    "subjob_size": "accepted; used by img2dataset's pyspark distributor only, so it changes nothing here",
    "retries": "same: retries of transient failures (429, 5xx, timeouts, broken connections) with backoff",
    "disable_all_reencoding": "same: the bytes are kept as they came",
    "min_image_size": "same",
    "max_image_area": "same",
    "max_aspect_ratio": "same",
    "incremental_mode": "incremental, overwrite, extend; a rerun with other options is refused unless "
                        "overwrite or extend",
    "max_shard_retry": "same: a shard that fails is tried again up to this many times",
    "user_agent_token": "same: X-Robots-Tag lines addressed to this token apply",
    "disallowed_header_directives": "same: a list, `[]` to switch off; `noml` and `none` known too",
}


# Options that change nothing in what a job writes; a rerun may change them freely.
RUNTIME_OPTIONS = frozenset({
    "processes_count", "thread_count", "distributor", "subjob_size", "incremental_mode", "max_shard_retry",
    "enable_wandb", "wandb_project", "disable_progress", "job_id", "timeout", "total_timeout", "retries",
    "per_domain_concurrency", "log_level", "command", "func", "output_folder", "workers", "no_progress", "model_threads",
})


def recorded_options(args: argparse.Namespace, profile: str) -> dict:
    """The options to record in ``job.json``: every download option, as JSON values."""
    recorded = {"profile": profile}
    for name, value in sorted(vars(args).items()):
        if callable(value) or name == "argv":  # argv: the command line itself (see winnow.cli.main)
            continue
        if isinstance(value, float) and value == float("inf"):
            value = "inf"
        recorded[name] = value
    return recorded


def option_differences(recorded: dict, wanted: dict) -> list[str]:
    """``name: old -> new`` for every output-changing option that differs."""
    differences = []
    for name in sorted(set(recorded) | set(wanted)):
        if name in RUNTIME_OPTIONS or name not in recorded or name not in wanted:
            continue
        if recorded[name] != wanted[name]:
            differences.append(f"--{name}: {recorded[name]!r} -> {wanted[name]!r}")
    return differences
