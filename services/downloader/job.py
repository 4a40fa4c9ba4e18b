"""A download, typed: what it fetches and writes, the job around it, and the work of ``winnow download``.

``DownloadSpec`` holds the fetch, resize and layout options that ``winnow download``, ``run``,
``train`` and ``redownload`` share; ``spec.stage_options(profile)`` makes the stage's
``DownloadOptions``. ``DownloadJob`` adds img2dataset's job options (input, output folder, shard
size, processes, resuming); ``download_job`` prepares the job, downloads its unfinished shards
with a live bar and returns what the job holds. The command line (``winnow.services.downloader.cli``)
and ``winnow.download`` only build these and report; a bad value is a ``ValueError`` here.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, fields

import structlog
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from winnow.services.downloader.fetch import DEFAULT_USER_AGENT, FetchOptions, ProxySettings
from winnow.services.downloader.layout import OUTPUT_FORMATS, ShardLayout
from winnow.services.downloader.options import (DATACOMP, IMG2DATASET, Defaults, only, option_differences,
                                                parse_directives, parse_distributor, parse_hash,
                                                parse_incremental_mode, parse_output_format,
                                                parse_verify_hash, recorded_options)
from winnow.services.downloader.pool import FORMATS, prepare_job
from winnow.services.downloader.resize import ENCODE_FORMATS, ResizeMode, ResizeOptions
from winnow.services.downloader.stage import DownloadOptions, DownloadStage
from winnow.shared import storage
from winnow.shared.jobs import JobManifest, StageTotals
from winnow.shared.messages import ShardRef
from winnow.shared.option_flags import option, parse_list
from winnow.shared.shards import ShardStats, is_complete

log = structlog.get_logger("winnow.download")

IMG2DATASET_PROFILE = "img2dataset"
DATACOMP_PROFILE = "datacomp"


def _checked(parse: Callable, value, name: str):
    """A command-line type's check on a typed value: its refusal becomes a ``ValueError``."""
    try:
        return parse(value)
    except argparse.ArgumentTypeError as exc:
        raise ValueError(f"{name}: {exc}") from exc


def _frozen(value):
    return tuple(value) if isinstance(value, list) else value


@dataclass(frozen=True)
class DownloadSpec:
    """What a download fetches and writes. The defaults are DataComp's (``winnow run``);
    ``DownloadSpec.with_defaults(IMG2DATASET)`` starts from img2dataset's. The command lines'
    flags and the downloader service's settings are made from these fields
    (``winnow.services.downloader.flags``, ``winnow.services.downloader.settings``)."""

    image_size: int = option(DATACOMP.image_size)
    resize_mode: str = option(DATACOMP.resize_mode, choices=[m.value for m in ResizeMode])
    resize_only_if_bigger: bool = option(DATACOMP.resize_only_if_bigger)
    upscale_interpolation: str = option("lanczos", parse=only("lanczos", "winnow upscales with Lanczos"))
    downscale_interpolation: str = option("area", parse=only("area", "winnow downscales with an area (box) filter"))
    encode_format: str = option("jpg", choices=sorted(ENCODE_FORMATS))
    encode_quality: int = option(95, help="jpg/webp quality; png compression 0-9")
    skip_reencode: bool = option(False)
    disable_all_reencoding: bool = option(False, help="keep the downloaded bytes as they are")
    min_image_size: int = option(0)
    max_image_area: float = option(float("inf"))
    max_aspect_ratio: float = option(float("inf"))
    max_image_pixels: int = option(89_478_485, help="decompression-bomb cap")
    thread_count: int = option(DATACOMP.thread_count, help="concurrent requests per process")
    timeout: float = option(10.0, help="seconds per connect and per read")
    total_timeout: float = option(60.0, help="seconds for a whole request")
    retries: int = option(DATACOMP.retries, help="retries of transient failures (429, 5xx, timeouts)")
    max_bytes: int = option(32 * 1024 * 1024, help="largest image body fetched")
    per_domain_concurrency: int = option(8, help="requests at once to one host")
    user_agent: str | None = option(None, help="User-Agent header (None: winnow's own)")
    user_agent_token: str | None = option(DATACOMP.user_agent_token,
                                          help="X-Robots-Tag lines addressed to this token apply")
    disallowed_header_directives: tuple[str, ...] | None = option(
        DATACOMP.disallowed_header_directives, parse=parse_directives,
        help="X-Robots-Tag directives that opt an image out; '[]' switches the check off")
    allow_networks: tuple[str, ...] = option((), help="CIDRs exempt from the private-address guard, e.g. 127.0.0.0/8")
    compute_hash: str | None = option(DATACOMP.compute_hash, parse=parse_hash, help="md5, sha256, sha512 or None")
    verify_hash: tuple[str, str] | None = option(
        None, parse=parse_verify_hash, help="'[COLUMN, HASH_TYPE]': that column must match the downloaded bytes' digest")
    extract_exif: bool = option(DATACOMP.extract_exif)
    bbox_col: str | None = option(DATACOMP.bbox_col, help="blur the [x0, y0, x1, y1] boxes of this column before resizing")
    skip_bbox_blurring: bool = option(False, help="do not blur the pool's face_bboxes (DataComp's download_upstream "
                                                  "option; bbox_col=None)")
    ignore_ssl_certificate: bool = option(False)
    respect_robots_txt: bool = option(False, help="read each host's robots.txt and skip what it disallows "
                                                  "(robots_disallowed)")
    # The layout of img2dataset's output (the img2dataset profile only; DataComp's is fixed).
    output_format: str = option("files", parse=parse_output_format, help=", ".join(OUTPUT_FORMATS))
    oom_shard_count: int = option(5, help="digits of the shard names")
    url_col: str = option("url")
    caption_col: str | None = option(None)
    save_additional_columns: tuple[str, ...] | None = option(
        None, parse=parse_list, help="pool columns kept in the output, e.g. '[\"uid\",\"face_bboxes\"]'")

    def __post_init__(self) -> None:
        for item in fields(self):  # lists from callers; the spec stays hashable and frozen
            object.__setattr__(self, item.name, _frozen(getattr(self, item.name)))

    @classmethod
    def with_defaults(cls, defaults: Defaults, **values) -> DownloadSpec:
        """A spec from one set of defaults (``IMG2DATASET`` or ``DATACOMP``), with ``values`` on top."""
        base = {item.name: getattr(defaults, item.name) for item in fields(Defaults)}
        return cls(**{**base, **values})

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> DownloadSpec:
        """The spec from parsed command-line options (download, run, train or redownload)."""
        return cls(**{item.name: getattr(args, item.name) for item in fields(cls) if hasattr(args, item.name)})

    def validate(self) -> None:
        """The values the command line's types refuse, refused with the same words."""
        _checked(only("lanczos", "winnow upscales with Lanczos"), self.upscale_interpolation, "upscale_interpolation")
        _checked(only("area", "winnow downscales with an area (box) filter"), self.downscale_interpolation,
                 "downscale_interpolation")
        _checked(parse_output_format, self.output_format, "output_format")
        if self.disallowed_header_directives:
            _checked(parse_directives, json.dumps(list(self.disallowed_header_directives)),
                     "disallowed_header_directives")

    def kept_columns(self) -> tuple[str, ...]:
        """img2dataset's saved columns: the listed ones, plus bbox_col and verify_hash's column."""
        columns = list(self.save_additional_columns or [])
        for extra in (self.bbox_col, self.verify_hash[0] if self.verify_hash else None):
            if extra and extra not in columns and extra not in (self.url_col, self.caption_col):
                columns.append(extra)
        return tuple(columns)

    def layout(self, profile: str) -> ShardLayout:
        if profile == IMG2DATASET_PROFILE:
            return ShardLayout(shard_dir="", shard_digits=self.oom_shard_count, output_format=self.output_format,
                               img2dataset_columns=True, save_caption=self.caption_col is not None,
                               extract_exif=self.extract_exif, compute_hash=self.compute_hash,
                               encode_format=self.encode_format, saved_columns=self.kept_columns())
        return ShardLayout(extract_exif=False, compute_hash=self.compute_hash)

    def stage_options(self, profile: str = DATACOMP_PROFILE) -> DownloadOptions:
        """The download stage's options; ``ValueError`` names a value it cannot take."""
        self.validate()
        resize = ResizeOptions(
            image_size=self.image_size, resize_mode=self.resize_mode, resize_only_if_bigger=self.resize_only_if_bigger,
            encode_format=self.encode_format, encode_quality=self.encode_quality, skip_reencode=self.skip_reencode,
            disable_all_reencoding=self.disable_all_reencoding, min_image_size=self.min_image_size,
            max_image_area=self.max_image_area, max_aspect_ratio=self.max_aspect_ratio,
            max_image_pixels=self.max_image_pixels)
        fetch = FetchOptions(timeout=self.timeout, total_timeout=self.total_timeout, retries=self.retries,
                             max_bytes=self.max_bytes, per_domain_concurrency=self.per_domain_concurrency,
                             user_agent=self.user_agent or DEFAULT_USER_AGENT,
                             user_agent_token=self.user_agent_token or "",
                             disallowed_header_directives=tuple(d.lower() for d in
                                                                self.disallowed_header_directives or ()),
                             allow_networks=tuple(self.allow_networks),
                             ignore_ssl_certificate=self.ignore_ssl_certificate,
                             respect_robots_txt=self.respect_robots_txt, proxies=ProxySettings.from_environment())
        return DownloadOptions(fetch=fetch, resize=resize, layout=self.layout(profile), thread_count=self.thread_count,
                               verify_hash=self.verify_hash or None,
                               bbox_col=None if self.skip_bbox_blurring else self.bbox_col)


def build_stage(spec: DownloadSpec, profile: str = DATACOMP_PROFILE) -> DownloadStage:
    """The download stage that fetches and writes what ``spec`` says, for the service and
    ``winnow run`` alike (``ValueError`` names a value it cannot take)."""
    return DownloadStage(spec.stage_options(profile))


@dataclass(frozen=True)
class DownloadJob:
    """img2dataset's ``download()``: a pool, an output folder, what to write, and how to run the job."""

    url_list: str  # pool file or folder
    output_folder: str = option("images", help="where the shards go, as img2dataset writes them")
    spec: DownloadSpec = field(default_factory=lambda: DownloadSpec.with_defaults(IMG2DATASET))
    input_format: str | None = option(None, choices=FORMATS,
                                      help="img2dataset's default is txt; without the option winnow reads the file name")
    number_sample_per_shard: int = option(10_000)
    processes_count: int = option(1)
    distributor: str = option("multiprocessing", parse=parse_distributor,
                              help="multiprocessing; the services spread a download over machines")
    subjob_size: int = option(1000, help="pyspark's; changes nothing here")
    incremental_mode: str = option("incremental", parse=parse_incremental_mode,
                                   help="incremental (resume), overwrite (start again) or extend (add new shards)")
    max_shard_retry: int = option(1, help="tries again for a shard that failed")
    enable_wandb: bool = option(False)
    wandb_project: str = option("img2dataset")
    max_samples: int = option(0, help="only the first N rows (0 = all)")
    job_id: str = option("")
    disable_progress: bool = option(False)

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> DownloadJob:
        """The job from ``winnow download``'s parsed options."""
        values = {item.name: getattr(args, item.name) for item in fields(cls) if item.name != "spec"}
        return cls(spec=DownloadSpec.from_namespace(args), **values)

    def validate(self) -> None:
        _checked(parse_distributor, self.distributor, "distributor")
        _checked(parse_incremental_mode, self.incremental_mode, "incremental_mode")
        if self.input_format is not None and self.input_format not in FORMATS:
            raise ValueError(f"input_format must be one of {', '.join(FORMATS)}; got {self.input_format!r}")
        if self.processes_count < 1:
            raise ValueError(f"processes_count must be positive, got {self.processes_count}")

    def recorded(self) -> dict:
        """The options ``job.json`` records (as JSON values), by their command-line names."""
        values = {item.name: getattr(self.spec, item.name) for item in fields(DownloadSpec)}
        values.update({item.name: getattr(self, item.name) for item in fields(self) if item.name != "spec"})
        values = {name: list(value) if isinstance(value, tuple) else value for name, value in values.items()}
        return recorded_options(argparse.Namespace(**values), IMG2DATASET_PROFILE)


@dataclass
class DownloadResult:
    """What a download job holds once it has run: its manifest, the downloader's totals over every
    shard, the shards finished by an earlier run (skipped), and the shards that failed every try."""

    manifest: JobManifest
    totals: StageTotals
    skipped_shards: int
    failed_shards: list[tuple[int, str]]  # (shard id, error)

    @property
    def output_folder(self) -> str:
        return self.manifest.job_root


def download_job(job: DownloadJob, options: DownloadOptions | None = None, *, console: Console | None = None,
                 say: Callable[[str], None] = lambda line: log.info(line)) -> DownloadResult:
    """Download ``job``: a new job, the same one resumed, or refused (``ValueError``) when its options differ.

    ``options`` are the stage's, when the caller has made them from ``job.spec`` already; ``say``
    receives the lines a user should read (a resumed or replaced job).
    """
    job.validate()
    options = options or job.spec.stage_options(IMG2DATASET_PROFILE)
    wandb_run = None
    if job.enable_wandb:
        from winnow.services.downloader.wandb_log import start_wandb

        wandb_run = start_wandb(job.wandb_project, job.recorded())
    manifest = prepare_download_job(job, say)
    refs = manifest.pool_refs()
    finished = {r.shard_id for r in refs if is_complete(options.layout.prefix(manifest.job_root, r.shard_id))}
    if finished:
        say(f"skipping {len(finished)} of {len(refs)} shards already finished in {manifest.job_root} "
            "(--incremental_mode overwrite starts again)")
    todo = [r for r in refs if r.shard_id not in finished]
    on_shard = wandb_run.shard_done if wandb_run is not None else None
    failed = download_refs(todo, options, job.processes_count, not job.disable_progress,
                           max_shard_retry=job.max_shard_retry, console=console, on_shard=on_shard)
    if wandb_run is not None:
        wandb_run.finish()
    return DownloadResult(manifest, download_totals(manifest.job_root, options.layout), len(finished), failed)


def prepare_download_job(job: DownloadJob, say: Callable[[str], None]) -> JobManifest:
    """The job to download: a new one, the same one resumed, or refused when the options differ."""
    wanted = job.recorded()
    root = job.output_folder
    exists = JobManifest.exists(root)
    if job.incremental_mode == "overwrite" and storage.exists(root):
        # As img2dataset does: the output folder is removed and written again.
        say(f"--incremental_mode overwrite: removing the previous output in {root}")
        fs, path = storage.filesystem(root)
        fs.rm(path, recursive=True)
        exists = False
    elif not exists and storage.glob(storage.join(root, "*_stats.json")):
        raise ValueError(f"{root} holds shards that no winnow job.json describes (img2dataset's?); choose another "
                         "--output_folder, or pass --incremental_mode overwrite to replace them")
    if exists:
        recorded = JobManifest.load(root).options
        if job.incremental_mode == "incremental":
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
    return prepare_job(job.url_list, root, job_id=job.job_id, input_format=job.input_format or "",
                       url_col=job.spec.url_col, caption_col=job.spec.caption_col,
                       samples_per_shard=job.number_sample_per_shard, max_samples=job.max_samples,
                       keep_columns=job.spec.kept_columns(), options=wanted,
                       extend=exists and job.incremental_mode == "extend")


def download_totals(job_root: str, layout: ShardLayout) -> StageTotals:
    """The downloader's totals over every finished shard of a job, from their ``_stats.json``."""
    totals = StageTotals(DownloadStage.name)
    for uri in storage.glob(layout.stats_glob(job_root)):
        totals.add(ShardStats.from_json(json.loads(storage.read_text(uri))))
    return totals


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

