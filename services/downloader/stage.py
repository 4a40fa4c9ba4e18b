"""The download stage: one pool slice in, one img2dataset/DataComp shard out.

A row that cannot be a sample is recorded without being fetched, and costs only itself:
``invalid_uid`` (no uid), ``duplicate_uid`` (an earlier row of the pool has the same uid, as
``prepare_job`` marked it; the first is kept), ``invalid_caption`` and ``invalid_url`` (not valid UTF-8).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from winnow.services.downloader.fetch import FetchError, FetchOptions, HttpFetcher
from winnow.services.downloader.layout import HASH_TYPES, ShardLayout
from winnow.services.downloader.pool import DUPLICATE_OF_COLUMN, ROW_COLUMNS, first_invalid_utf8, read_pool_slice
from winnow.shared.jobs import SHARDS_INPUT, JobManifest
from winnow.services.downloader.resize import ResizeError, ResizeOptions, resize_image
from winnow.services.downloader.shards_import import ShardImportStage
from winnow.shared.messages import ShardRef
from winnow.shared.shards import (CORE_SCHEMA, FAILED_TO_DOWNLOAD, FAILED_TO_RESIZE, SUCCESS, ShardFormatError, ShardStats,
                           ShardWriter)
from winnow.shared.stage import ShardStage

STAGE_NAME = "downloader"
# Failures worth another try later; opt-outs, blocked addresses and 404s are final.
TRANSIENT_REASONS = frozenset({"timeout", "connection_error", "connection_refused", "truncated", "rate_limited", "dns_error",
                               "http_429", "http_500", "http_502", "http_503", "http_504"})
# What invalid UTF-8 in each of a row's own columns costs that row.
INVALID_UTF8_REASONS = {"uid": "invalid_uid", "url": "invalid_url", "text": "invalid_caption"}


@dataclass(frozen=True)
class DownloadOptions:
    """Everything that decides what a download writes. The defaults are DataComp's flow
    (``winnow run``, the service); ``winnow download`` starts from img2dataset's."""

    fetch: FetchOptions = field(default_factory=FetchOptions)
    resize: ResizeOptions = field(default_factory=ResizeOptions)
    layout: ShardLayout = field(default_factory=ShardLayout)
    thread_count: int = 32  # concurrent requests per shard
    # [column, hash type]: that column must match the downloaded bytes' digest (img2dataset's
    # verify_hash; off by default there and in DataComp's download_upstream).
    verify_hash: tuple[str, str] | None = None
    bbox_col: str | None = None  # blur these [x0, y0, x1, y1] boxes (normalised) before resizing

    def __post_init__(self) -> None:
        if self.verify_hash is not None:
            if len(self.verify_hash) != 2 or self.verify_hash[1] not in HASH_TYPES:
                raise ValueError(f"verify_hash is [COLUMN, HASH_TYPE] with a type of {HASH_TYPES}, "
                                 f"got {list(self.verify_hash)!r}")
            object.__setattr__(self, "verify_hash", tuple(self.verify_hash))

    def hash_types(self) -> tuple[str, ...]:
        wanted = [] if self.layout.img2dataset_columns else ["sha256"]  # DataComp's ledger column
        for kind in (self.layout.compute_hash, self.verify_hash[1] if self.verify_hash else None):
            if kind and kind not in wanted:
                wanted.append(kind)
        return tuple(wanted)


@dataclass(frozen=True)
class SampleOutcome:
    """What became of one URL: the ledger's columns, and the image when it succeeded."""

    status: str
    reason: str | None = None
    error_message: str | None = None
    image: bytes | None = None
    extension: str | None = None
    width: int | None = None
    height: int | None = None
    original_width: int | None = None
    original_height: int | None = None
    hashes: dict[str, str] = field(default_factory=dict)
    exif: str | None = None

    @property
    def sha256(self) -> str | None:
        return self.hashes.get("sha256")


def exif_json(data: bytes) -> str | None:
    """The image's EXIF tags as img2dataset stores them (exifread, values as stripped strings)."""
    import exifread  # only with extract_exif

    try:
        tags = exifread.process_file(io.BytesIO(data), details=False)
        return json.dumps({k: str(v).strip() for k, v in tags.items() if v is not None})
    except Exception:  # a malformed EXIF block costs the tags, never the sample (as in img2dataset)
        return None


def download_sample(fetcher: HttpFetcher, url: str | None, options: DownloadOptions,
                    expected_hash: str | None = None, boxes: list | None = None) -> SampleOutcome:
    """Fetch, hash, check and resize one URL; every failure becomes an outcome, never an exception.

    ``expected_hash`` is the row's ``verify_hash`` column; it is checked only when
    ``options.verify_hash`` is set. ``boxes`` are blurred before resizing.
    """
    url = url.strip() if isinstance(url, str) else url  # pools carry stray spaces and newlines
    if not url:
        return SampleOutcome(FAILED_TO_DOWNLOAD, "invalid_url", "empty url")
    try:
        data = fetcher.fetch(url)
    except FetchError as exc:
        return SampleOutcome(FAILED_TO_DOWNLOAD, exc.reason, str(exc))
    hashes = {kind: hashlib.new(kind, data).hexdigest() for kind in options.hash_types()}
    if options.verify_hash and expected_hash:
        kind = options.verify_hash[1]
        if expected_hash != hashes[kind]:
            return SampleOutcome(FAILED_TO_DOWNLOAD, "hash_mismatch", f"{kind} {hashes[kind]} differs from the "
                                 f"pool's {options.verify_hash[0]}", hashes=hashes)
    try:
        resized = resize_image(data, options.resize, boxes=boxes or None)
    except ResizeError as exc:
        return SampleOutcome(FAILED_TO_RESIZE, exc.reason, str(exc), hashes=hashes)
    except Exception as exc:  # a decoder bug must cost one sample, not the shard
        return SampleOutcome(FAILED_TO_RESIZE, "decode_error", f"{type(exc).__name__}: {exc}", hashes=hashes)
    exif = exif_json(data) if options.layout.extract_exif else None
    return SampleOutcome(SUCCESS, image=resized.data, extension=resized.extension, width=resized.width,
                         height=resized.height, original_width=resized.original_width,
                         original_height=resized.original_height, hashes=hashes, exif=exif)


def ordered_map(fn: Callable[[Any], Any], items: Iterable[Any], workers: int) -> Iterator[Any]:
    """``map`` over a thread pool, in input order, with at most ``4 * workers`` results held."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch") as pool:
        window: deque[Future] = deque()
        for item in items:
            window.append(pool.submit(fn, item))
            if len(window) >= 4 * workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


def ledger_row(row: dict[str, Any], key: str, outcome: SampleOutcome,
               layout: ShardLayout | None = None) -> dict[str, Any]:
    """The pool row with the download's columns set (the pool's own columns ride along)."""
    layout = layout or ShardLayout()
    ledger = {
        **row,
        "key": key,
        "status": outcome.status,
        "reason": outcome.reason,
        "error_message": outcome.error_message,
        "dropped_by": None,
        "width": outcome.width,
        "height": outcome.height,
        # A failed sample keeps the sizes the pool declared, if any (DataComp pools have them).
        "original_width": outcome.original_width if outcome.original_width is not None else row.get("original_width"),
        "original_height": (outcome.original_height if outcome.original_height is not None
                            else row.get("original_height")),
    }
    if layout.img2dataset_columns:
        if layout.extract_exif:
            ledger["exif"] = outcome.exif
        if layout.compute_hash:
            ledger[layout.compute_hash] = outcome.hashes.get(layout.compute_hash) or row.get(layout.compute_hash)
        if layout.output_format == "parquet":
            ledger[layout.encode_format] = outcome.image
    else:
        ledger["sha256"] = outcome.sha256 or row.get("sha256")
        for kind, digest in outcome.hashes.items():
            if kind != "sha256":
                ledger[kind] = digest
    return layout.shaped_row(ledger)


def sample_files(row: dict[str, Any], outcome: SampleOutcome, layout: ShardLayout | None = None) -> dict[str, bytes]:
    """The webdataset members of a kept sample: image, caption, and the ledger row as JSON."""
    layout = layout or ShardLayout()
    if layout.output_format == "parquet":
        return {}
    files = {outcome.extension: outcome.image}
    caption = row.get("caption", row.get("text"))
    if layout.save_caption or not layout.img2dataset_columns:  # an empty .txt for no caption, as img2dataset
        files["txt"] = ("" if caption is None else str(caption)).encode("utf-8")
    files["json"] = json.dumps(row, default=str, ensure_ascii=False, sort_keys=True).encode("utf-8")
    if layout.img2dataset_columns:  # img2dataset's member order: by extension
        return dict(sorted(files.items()))
    return files


def pool_rows(table: pa.Table) -> tuple[list[dict[str, Any]], dict[int, SampleOutcome]]:
    """The slice's rows, and the refusal of each row whose uid, url or caption is not valid UTF-8
    (that value is read as null). Invalid UTF-8 in any other column fails the shard, naming it."""
    try:
        return table.to_pylist(), {}
    except UnicodeDecodeError:
        pass
    refusals: dict[int, SampleOutcome] = {}
    for name in table.column_names:
        column = table[name]
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            continue
        found = first_invalid_utf8(column)
        if found is None:
            continue
        if name not in ROW_COLUMNS:
            raise ShardFormatError(f"pool slice column {name!r}, row {found[0]}, is not valid UTF-8 "
                                   f"({found[1][:40]!r})")
        values = []
        for index, value in enumerate(pc.cast(column, pa.binary()).to_pylist()):
            try:
                values.append(None if value is None else value.decode("utf-8"))
            except UnicodeDecodeError as exc:
                values.append(None)
                refusals.setdefault(index, SampleOutcome(FAILED_TO_DOWNLOAD, INVALID_UTF8_REASONS[name],
                                                         f"{name} is not valid UTF-8 ({exc.reason} at byte "
                                                         f"{exc.start}): {value[:80]!r}"))
        table = table.set_column(table.column_names.index(name), name, pa.array(values, pa.string()))
    return table.to_pylist(), refusals


def row_refusals(rows: list[dict[str, Any]], duplicate_of: list[int | None]) -> dict[int, SampleOutcome]:
    """Rows that are not fetched: no uid, or a uid an earlier row of the pool already has
    (``prepare_job`` marked it; the first is kept)."""
    refusals = {}
    for index, (row, earlier) in enumerate(zip(rows, duplicate_of)):
        uid = row.get("uid")
        if uid is None or not str(uid).strip():
            refusals[index] = SampleOutcome(FAILED_TO_DOWNLOAD, "invalid_uid", f"uid {uid!r} is empty")
        elif earlier is not None:
            refusals[index] = SampleOutcome(FAILED_TO_DOWNLOAD, "duplicate_uid",
                                            f"uid {uid} is also pool row {earlier}, which is kept")
    return refusals


def row_boxes(row: dict[str, Any], options: DownloadOptions) -> list | None:
    return row.get(options.bbox_col) if options.bbox_col else None


def row_expected_hash(row: dict[str, Any], options: DownloadOptions) -> str | None:
    return row.get(options.verify_hash[0]) if options.verify_hash else None


class DownloadStage(ShardStage):
    """Downloads one pool slice with a thread pool and writes it as a shard.

    The service brings every job's images in: a reference to a shard the user already has (a job
    of ``SubmitShards``) is imported in place instead (``shards_import``), into the job's ``source``.
    """

    name = STAGE_NAME
    input_columns = ("url",)  # of the pool slice; a row without a uid is recorded as invalid_uid
    output_columns = tuple(CORE_SCHEMA.names)  # DataComp's layout; __init__ follows the options' layout

    def __init__(self, options: DownloadOptions | None = None) -> None:
        self.options = options or DownloadOptions()
        # The ledger's columns (the pool's other columns ride along after them): DataComp's core
        # columns (uid, text, sha256, ...), or img2dataset's names under its layout.
        row_schema = pa.schema([(column, pa.string()) for column in ROW_COLUMNS])
        self.output_columns = tuple(self.options.layout.core_schema(row_schema).names)
        self.fetcher: HttpFetcher | None = None
        self.on_sample: Callable[[bool], None] | None = None  # told of each sample as it is written (progress)
        self.importer = ShardImportStage()

    def process(self, ref: ShardRef) -> ShardRef:
        if ref.stage == SHARDS_INPUT:
            return self.importer.process(ref)
        return super().process(ref)

    def setup(self) -> None:
        self.fetcher = HttpFetcher(self.options.fetch)

    def teardown(self) -> None:
        if self.fetcher is not None:
            self.fetcher.close()
            self.fetcher = None

    def output_prefix(self, ref: ShardRef) -> str:
        return self.options.layout.prefix(ref.job_root, ref.shard_id)

    def process_shard(self, ref: ShardRef, prefix: str) -> ShardStats:
        if self.fetcher is None:
            self.setup()
        table = read_pool_slice(ref)
        duplicate_of = [None] * len(table)
        if DUPLICATE_OF_COLUMN in table.column_names:  # marked by prepare_job; not a ledger column
            duplicate_of = table[DUPLICATE_OF_COLUMN].to_pylist()
            table = table.drop_columns([DUPLICATE_OF_COLUMN])
        rows, refusals = pool_rows(table)
        for index, outcome in row_refusals(rows, duplicate_of).items():
            refusals.setdefault(index, outcome)
        per_shard = JobManifest.load(ref.job_root).samples_per_shard
        layout = self.options.layout
        writer = ShardWriter(prefix, stage=self.name, job_id=ref.job_id, shard_id=ref.shard_id,
                             extra_schema=table.schema, core_schema=layout.core_schema(table.schema),
                             members=layout.members,
                             images_blurred=bool(self.options.bbox_col) and self.options.bbox_col in table.column_names)
        try:
            outcomes = ordered_map(
                lambda item: refusals.get(item[0]) or download_sample(
                    self.fetcher, item[1].get("url"), self.options, row_expected_hash(item[1], self.options),
                    row_boxes(item[1], self.options)),
                enumerate(rows), self.options.thread_count)
            for index, (row, outcome) in enumerate(zip(rows, outcomes)):
                key = layout.key(ref.shard_id, index, per_shard)
                ledger = ledger_row(row, key, outcome, layout)
                writer.add(ledger, sample_files(ledger, outcome, layout) if outcome.status == SUCCESS else None)
                if self.on_sample is not None:
                    self.on_sample(outcome.status == SUCCESS)
        except BaseException:
            writer.abort()
            raise
        return writer.close()
