"""img2dataset's options on winnow's downloader: parsing, the two sets of defaults, and refusals.

``winnow download`` takes every option of img2dataset's ``download()`` (1.47.0) with its meaning
and its default, or refuses a value it cannot honour with a message that says why and what to
use instead. ``winnow run`` (and ``winnow train``'s pool download) take the same options with
DataComp's defaults. ``IMG2DATASET_OPTIONS`` is the table the README shows and the tests hold
against img2dataset's own signature.
"""

from __future__ import annotations

import argparse
import ast
import json
from dataclasses import dataclass

from winnow.services.downloader.fetch import DISALLOWED_DIRECTIVES
from winnow.services.downloader.layout import HASH_TYPES, OUTPUT_FORMATS
from winnow.services.downloader.pool import FORMATS
from winnow.services.downloader.resize import ENCODE_FORMATS, ResizeMode

# img2dataset's X-Robots-Tag directives (winnow's DataComp flow adds "none").
IMG2DATASET_DIRECTIVES = ("noai", "noimageai", "noindex", "noimageindex")
KNOWN_DIRECTIVES = (*DISALLOWED_DIRECTIVES, "noml")


def parse_bool(text: str) -> bool:
    """img2dataset's spellings (``True``/``False``) and the usual ones."""
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes", "y", "on"):
        return True
    if lowered in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (True or False), got {text!r}")


def parse_list(text: str) -> list[str] | None:
    """A list as img2dataset's command line (python-fire) takes it: ``'["a","b"]'``, ``[a,b]``,
    ``a,b``, ``a``; ``None`` is no list and ``[]`` an empty one."""
    stripped = str(text).strip()
    if stripped in ("None", "none", "null"):
        return None
    if stripped.startswith("["):
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError:
            try:
                value = ast.literal_eval(stripped)
            except (ValueError, SyntaxError):
                value = [part.strip().strip("'\"") for part in stripped[1:-1].split(",") if part.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise argparse.ArgumentTypeError(f"expected a list of names, got {text!r}")
        return value
    return [part.strip() for part in stripped.split(",") if part.strip()]


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


def add_shared_options(parser: argparse.ArgumentParser, defaults: Defaults) -> None:
    """The fetch and resize options, shared by ``download``, ``redownload``, ``run`` and ``train``."""
    group = parser.add_argument_group("download")
    group.add_argument("--image_size", type=int, default=defaults.image_size)
    group.add_argument("--resize_mode", choices=[m.value for m in ResizeMode], default=defaults.resize_mode)
    group.add_argument("--resize_only_if_bigger", type=parse_bool, nargs="?", const=True,
                       default=defaults.resize_only_if_bigger)
    group.add_argument("--upscale_interpolation", default="lanczos",
                       type=only("lanczos", "winnow upscales with Lanczos"))
    group.add_argument("--downscale_interpolation", default="area",
                       type=only("area", "winnow downscales with an area (box) filter"))
    group.add_argument("--encode_format", choices=sorted(ENCODE_FORMATS), default="jpg")
    group.add_argument("--encode_quality", type=int, default=95, help="jpg/webp quality; png compression 0-9")
    group.add_argument("--skip_reencode", type=parse_bool, nargs="?", const=True, default=False)
    group.add_argument("--disable_all_reencoding", type=parse_bool, nargs="?", const=True, default=False,
                       help="keep the downloaded bytes as they are")
    group.add_argument("--min_image_size", type=int, default=0)
    group.add_argument("--max_image_area", type=float, default=float("inf"))
    group.add_argument("--max_aspect_ratio", type=float, default=float("inf"))
    group.add_argument("--max_image_pixels", type=int, default=89_478_485, help="decompression-bomb cap")
    group.add_argument("--thread_count", type=int, default=defaults.thread_count, help="concurrent requests per process")
    group.add_argument("--timeout", type=float, default=10.0, help="seconds per connect and per read")
    group.add_argument("--total_timeout", type=float, default=60.0, help="seconds for a whole request")
    group.add_argument("--retries", type=int, default=defaults.retries,
                       help="retries of transient failures (429, 5xx, timeouts)")
    group.add_argument("--max_bytes", type=int, default=32 * 1024 * 1024)
    group.add_argument("--per_domain_concurrency", type=int, default=8)
    group.add_argument("--user_agent", default=None, help="User-Agent header (None: winnow's own)")
    group.add_argument("--user_agent_token", type=parse_optional, default=defaults.user_agent_token,
                       help="X-Robots-Tag lines addressed to this token apply")
    group.add_argument("--disallowed_header_directives", type=parse_directives,
                       default=list(defaults.disallowed_header_directives),
                       help="X-Robots-Tag directives that opt an image out; '[]' switches the check off")
    group.add_argument("--allow_networks", nargs="*", default=[],
                       help="CIDRs exempt from the private-address guard, e.g. 127.0.0.0/8")
    group.add_argument("--compute_hash", type=parse_hash, default=defaults.compute_hash,
                       help="md5, sha256, sha512 or None")
    group.add_argument("--verify_hash", type=parse_verify_hash, default=None,
                       help="'[COLUMN, HASH_TYPE]': that column must match the downloaded bytes' digest")
    group.add_argument("--extract_exif", type=parse_bool, nargs="?", const=True, default=defaults.extract_exif)
    group.add_argument("--bbox_col", type=parse_optional, default=defaults.bbox_col,
                       help="blur the [x0, y0, x1, y1] boxes of this column before resizing")
    group.add_argument("--ignore_ssl_certificate", type=parse_bool, nargs="?", const=True, default=False)
    group.add_argument("--respect_robots_txt", type=parse_bool, nargs="?", const=True, default=False,
                       help="read each host's robots.txt and skip what it disallows (robots_disallowed)")
    if defaults is DATACOMP:
        group.add_argument("--skip_bbox_blurring", action="store_true",
                           help="do not blur the pool's face_bboxes (DataComp's download_upstream option)")


def add_job_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``winnow download`` alone: img2dataset's input, output and job options."""
    parser.add_argument("--url_list", help="pool file or folder (txt, csv, tsv, json, jsonl, "
                        "parquet; the text ones also .gz); required unless --scale")
    parser.add_argument("--output_folder", default="images", help="where the shards go, as img2dataset writes them")
    parser.add_argument("--input_format", choices=FORMATS, default=None,
                        help="img2dataset's default is txt; without the option winnow reads the file name")
    parser.add_argument("--output_format", type=parse_output_format, default="files",
                        help=f"{', '.join(OUTPUT_FORMATS)}")
    parser.add_argument("--url_col", default="url")
    parser.add_argument("--caption_col", type=parse_optional, default=None)
    parser.add_argument("--save_additional_columns", type=parse_list, default=None,
                        help="pool columns kept in the output, e.g. '[\"uid\",\"face_bboxes\"]'")
    parser.add_argument("--number_sample_per_shard", type=int, default=10_000)
    parser.add_argument("--oom_shard_count", type=int, default=5, help="digits of the shard names")
    parser.add_argument("--processes_count", type=int, default=1)
    parser.add_argument("--distributor", type=parse_distributor, default="multiprocessing")
    parser.add_argument("--subjob_size", type=int, default=1000, help="pyspark's; changes nothing here")
    parser.add_argument("--incremental_mode", type=parse_incremental_mode, default="incremental",
                        help="incremental (resume), overwrite (start again) or extend (add new shards)")
    parser.add_argument("--max_shard_retry", type=int, default=1, help="tries again for a shard that failed")
    parser.add_argument("--enable_wandb", type=parse_bool, nargs="?", const=True, default=False)
    parser.add_argument("--wandb_project", default="img2dataset")
    parser.add_argument("--max_samples", type=int, default=0, help="only the first N rows (0 = all)")
    parser.add_argument("--job_id", default="")
    parser.add_argument("--disable_progress", type=parse_bool, nargs="?", const=True, default=False)


# Options that change nothing in what a job writes; a rerun may change them freely.
RUNTIME_OPTIONS = frozenset({
    "processes_count", "thread_count", "distributor", "subjob_size", "incremental_mode", "max_shard_retry",
    "enable_wandb", "wandb_project", "disable_progress", "job_id", "timeout", "total_timeout", "retries",
    "per_domain_concurrency", "log_level", "command", "func", "output_folder", "workers", "no_progress",
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
