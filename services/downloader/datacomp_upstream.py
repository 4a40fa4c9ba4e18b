"""``winnow download --scale SCALE --data_dir DIR``: DataComp's ``download_upstream.py`` on winnow's downloader.

What DataComp's script does, step for step:

1. the pool metadata of the scale from the Hugging Face hub, dataset ``mlfoundations/datacomp_{scale}``
   (``mlfoundations/datacomp_1b`` for DataComp-1B): its ``*.parquet`` files (``*/*.parquet`` at
   xlarge, flattened), and with ``--download_npz`` the ``.npz`` embeddings beside them, into
   ``--metadata_dir`` (default ``DIR/metadata``) with ``huggingface_hub.snapshot_download``. When
   the folder exists the metadata is not fetched again unless ``--overwrite_metadata``;
2. unless ``--skip_shards``, the images into ``DIR/shards`` with img2dataset's settings as DataComp
   passes them: 512 px, ``keep_ratio_largest``, resize only if bigger, jpg, webdataset,
   10,000 samples a shard, ``url``/``text`` columns, no hash verification, the pool's columns
   (``uid`` first of all) kept, and the faces of ``face_bboxes`` blurred unless
   ``--skip_bbox_blurring``.

Resuming: winnow marks finished metadata with ``.winnow_metadata_complete`` in the metadata folder;
an interrupted fetch (no marker) is resumed on the next run (``huggingface_hub`` keeps what it
fetched, byte ranges included), and finished shards are skipped as in every winnow download. The
hub is ``HF_ENDPOINT`` when set (read on each call), else huggingface.co; ``HF_TOKEN`` as usual.

Shards land in ``DIR/shards`` (tar, ledger parquet and ``_stats.json`` per shard, as img2dataset
writes them), winnow's pool slices in ``DIR/pool`` and the job manifest in ``DIR/job.json``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from winnow.services.downloader.stage import DownloadOptions

log = logging.getLogger(__name__)

SCALES = ("small", "medium", "large", "xlarge", "datacomp_1b")
METADATA_MARKER = ".winnow_metadata_complete"
SHARDS_DIRNAME = "shards"
DATACOMP_BBOX_COL = "face_bboxes"  # img2dataset's bbox_col as download_upstream.py sets it
DATACOMP_SAMPLES_PER_SHARD = 10_000


def hub_repo(scale: str) -> str:
    """The Hugging Face dataset that holds a scale's pool metadata."""
    if scale not in SCALES:
        raise ValueError(f"--scale must be one of {', '.join(SCALES)}; got {scale!r}")
    return "mlfoundations/datacomp_1b" if scale == "datacomp_1b" else f"mlfoundations/datacomp_{scale}"


@dataclass(frozen=True)
class UpstreamConfig:
    scale: str
    data_dir: str
    metadata_dir: str | None = None  # default: DATA_DIR/metadata
    download_npz: bool = False
    skip_shards: bool = False
    overwrite_metadata: bool = False
    skip_bbox_blurring: bool = False
    endpoint: str | None = None  # the hub; default HF_ENDPOINT, else huggingface.co

    @property
    def metadata_path(self) -> Path:
        return Path(self.metadata_dir) if self.metadata_dir else Path(self.data_dir) / "metadata"


def _patterns(scale: str, suffix: str) -> list[str]:
    return [f"*/*{suffix}"] if scale == "xlarge" else [f"*{suffix}"]


def _flatten(folder: Path) -> None:
    """xlarge's ``part_*/`` subfolders: files moved up, as DataComp does."""
    for path in sorted(list(folder.rglob("*.parquet")) + list(folder.rglob("*.npz"))):
        if path.parent != folder and ".cache" not in path.relative_to(folder).parts:
            path.replace(folder / path.name)
    for sub in folder.glob("part_*"):
        if sub.is_dir() and not any(sub.iterdir()):
            sub.rmdir()


def fetch_metadata(config: UpstreamConfig, *, show_progress: bool = True) -> Path:
    """The scale's metadata in ``config.metadata_path`` (fetched, resumed, or left as it is)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import disable_progress_bars

    if not show_progress:
        disable_progress_bars()

    folder = config.metadata_path
    marker = folder / METADATA_MARKER
    if folder.exists() and config.overwrite_metadata:
        log.info("removing %s (--overwrite_metadata)", folder)
        shutil.rmtree(folder)
    elif marker.exists():
        log.info("metadata already in %s; --overwrite_metadata fetches it again", folder)
        return folder
    elif folder.exists() and not (folder / ".cache").exists() and any(folder.glob("*.parquet")):
        # DataComp's own download left this folder: use it, as download_upstream.py would.
        log.info("metadata already in %s (not fetched by winnow); --overwrite_metadata fetches it again", folder)
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    repo = hub_repo(config.scale)
    endpoint = config.endpoint or os.environ.get("HF_ENDPOINT") or None
    suffixes = [".parquet"] + ([".npz"] if config.download_npz else [])
    for suffix in suffixes:
        log.info("fetching %s files of %s into %s", suffix, repo, folder)
        try:
            snapshot_download(repo_id=repo, repo_type="dataset", allow_patterns=_patterns(config.scale, suffix),
                              local_dir=folder, endpoint=endpoint)
        except Exception as exc:  # the hub client's errors have many types (HTTP, connection, offline)
            raise RuntimeError(f"fetching the {suffix} files of {repo} from {endpoint or 'the Hugging Face hub'} "
                               f"failed ({type(exc).__name__}: {exc}); run the same command again to resume") from exc
    if config.scale == "xlarge":
        _flatten(folder)
    if not any(folder.glob("*.parquet")):
        raise FileNotFoundError(f"{repo} gave no .parquet files for scale {config.scale!r}")
    marker.write_text(f"{repo}\n")
    return folder


def datacomp_download_options(args: argparse.Namespace) -> DownloadOptions:
    """The download options DataComp's script passes img2dataset, with those given on the command line
    on top: DataComp's defaults (512 px, ``keep_ratio_largest``, resize only if bigger, no hash
    verification, the faces of ``face_bboxes`` blurred unless ``--skip_bbox_blurring``), not
    ``winnow download``'s img2dataset defaults; shards in ``DIR/shards``, named ``{shard:08d}``."""
    from winnow.services.downloader.cli import DATACOMP_PROFILE, download_options
    from winnow.services.downloader.flags import add_shared_options
    from winnow.services.downloader.options import DATACOMP

    given = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    add_shared_options(given, DATACOMP)
    for action in given._actions:
        action.default = argparse.SUPPRESS
    explicit = vars(given.parse_known_args(getattr(args, "argv", []))[0])
    defaults = argparse.ArgumentParser(add_help=False)
    add_shared_options(defaults, DATACOMP)
    merged = vars(defaults.parse_args([]))
    merged.update(explicit)
    merged["skip_bbox_blurring"] = args.skip_bbox_blurring
    if args.no_resize_only_if_bigger:
        merged["resize_only_if_bigger"] = False
    options = download_options(argparse.Namespace(**merged), DATACOMP_PROFILE)
    return replace(options, layout=replace(options.layout, shard_dir=SHARDS_DIRNAME), verify_hash=None)


def download_upstream(config: UpstreamConfig, options: DownloadOptions, *, processes: int = 1,
                      show_progress: bool = True, samples_per_shard: int = DATACOMP_SAMPLES_PER_SHARD):
    """DataComp's ``download_upstream.py``: the metadata, then (unless ``skip_shards``) the shards.

    Returns the job manifest, or None when only the metadata was fetched.
    """
    from winnow.services.downloader.job import download_refs
    from winnow.services.downloader.pool import prepare_job

    metadata = fetch_metadata(config, show_progress=show_progress)
    if config.skip_shards:
        log.info("--skip_shards: metadata only, in %s", metadata)
        return None
    manifest = prepare_job(str(metadata), config.data_dir, input_format="parquet", url_col="url",
                           caption_col="text", samples_per_shard=samples_per_shard)
    failed = download_refs(manifest.pool_refs(), options, processes, show_progress)
    for shard_id, error in failed:
        log.error("shard %d failed: %s", shard_id, error)
    return manifest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``download_upstream.py``'s options that ``winnow download`` does not already have."""
    group = parser.add_argument_group("DataComp (download_upstream.py): with --scale")
    group.add_argument("--scale", choices=SCALES, default=None,
                       help="fetch this DataComp pool's metadata from the Hugging Face hub, then its images")
    group.add_argument("--data_dir", default=None, help="with --scale: shards go to DATA_DIR/shards")
    group.add_argument("--metadata_dir", default=None, help="with --scale: default DATA_DIR/metadata")
    group.add_argument("--download_npz", action="store_true", help="with --scale: also the .npz embeddings")
    group.add_argument("--skip_shards", action="store_true", help="with --scale: only the metadata")
    group.add_argument("--overwrite_metadata", action="store_true", help="with --scale: fetch the metadata again")
    group.add_argument("--skip_bbox_blurring", action="store_true",
                       help="with --scale: do not blur the pool's face_bboxes at download")
    group.add_argument("--no_resize_only_if_bigger", action="store_true",
                       help="resize small images up too (DataComp's spelling of --resize_only_if_bigger false)")


def run(args: argparse.Namespace) -> int:
    """``winnow download --scale ...``."""
    from rich.console import Console

    from winnow.services.downloader.job import download_totals
    from winnow.shared.summary import print_stage_summary

    if not args.data_dir:
        raise SystemExit("winnow download: --scale needs --data_dir (shards go to DATA_DIR/shards)")
    if args.url_list or "--output_folder" in getattr(args, "argv", []):
        raise SystemExit("winnow download: --scale fetches the pool itself; leave out --url_list and --output_folder")
    config = UpstreamConfig(scale=args.scale, data_dir=args.data_dir, metadata_dir=args.metadata_dir,
                            download_npz=args.download_npz, skip_shards=args.skip_shards,
                            overwrite_metadata=args.overwrite_metadata, skip_bbox_blurring=args.skip_bbox_blurring)
    console = Console()
    options = datacomp_download_options(args)
    manifest = download_upstream(config, options, processes=args.processes_count,
                                 show_progress=not args.disable_progress,
                                 samples_per_shard=args.number_sample_per_shard)
    if manifest is None:
        console.print(f"metadata of {hub_repo(args.scale)} in {config.metadata_path} (--skip_shards: no images)")
        return 0
    print_stage_summary(console, [download_totals(manifest.job_root, options.layout)])
    return 0
