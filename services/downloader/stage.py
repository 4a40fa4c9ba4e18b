"""The download stage: one pool slice in, one img2dataset/DataComp shard out."""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from services.downloader.fetch import FetchError, FetchOptions, HttpFetcher
from services.downloader.pool import read_pool_slice
from shared.jobs import JobManifest
from services.downloader.resize import ResizeError, ResizeOptions, resize_image
from shared.messages import ShardRef
from shared.shards import FAILED_TO_DOWNLOAD, FAILED_TO_RESIZE, SUCCESS, ShardStats, ShardWriter, sample_key
from shared.stage import Stage

STAGE_NAME = "downloader"
# Failures worth another try later; opt-outs, blocked addresses and 404s are final.
TRANSIENT_REASONS = frozenset({"timeout", "connection_error", "truncated", "rate_limited", "dns_error",
                               "http_429", "http_500", "http_502", "http_503", "http_504"})


@dataclass(frozen=True)
class DownloadOptions:
    fetch: FetchOptions = field(default_factory=FetchOptions)
    resize: ResizeOptions = field(default_factory=ResizeOptions)
    thread_count: int = 32  # concurrent requests per shard
    verify_hash: bool = True  # a pool's sha256 column must match the downloaded bytes


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
    sha256: str | None = None


def download_sample(fetcher: HttpFetcher, url: str | None, options: DownloadOptions,
                    expected_sha256: str | None = None) -> SampleOutcome:
    """Fetch, hash, check and resize one URL; every failure becomes an outcome, never an exception."""
    if not url:
        return SampleOutcome(FAILED_TO_DOWNLOAD, "invalid_url", "empty url")
    try:
        data = fetcher.fetch(url)
    except FetchError as exc:
        return SampleOutcome(FAILED_TO_DOWNLOAD, exc.reason, str(exc))
    digest = hashlib.sha256(data).hexdigest()
    if options.verify_hash and expected_sha256 and expected_sha256 != digest:
        return SampleOutcome(FAILED_TO_DOWNLOAD, "hash_mismatch", f"sha256 {digest} differs from the pool's",
                             sha256=digest)
    try:
        resized = resize_image(data, options.resize)
    except ResizeError as exc:
        return SampleOutcome(FAILED_TO_RESIZE, exc.reason, str(exc), sha256=digest)
    except Exception as exc:  # a decoder bug must cost one sample, not the shard
        return SampleOutcome(FAILED_TO_RESIZE, "decode_error", f"{type(exc).__name__}: {exc}", sha256=digest)
    return SampleOutcome(SUCCESS, image=resized.data, extension=resized.extension, width=resized.width,
                         height=resized.height, original_width=resized.original_width,
                         original_height=resized.original_height, sha256=digest)


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


def ledger_row(row: dict[str, Any], key: str, outcome: SampleOutcome) -> dict[str, Any]:
    """The pool row with the download's columns set (the pool's own columns ride along)."""
    return {
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
        "sha256": outcome.sha256 or row.get("sha256"),
    }


def sample_files(row: dict[str, Any], outcome: SampleOutcome) -> dict[str, bytes]:
    """The webdataset members of a kept sample: image, caption, and the ledger row as JSON."""
    files = {outcome.extension: outcome.image}
    if row.get("text") is not None:
        files["txt"] = row["text"].encode("utf-8")
    files["json"] = json.dumps(row, default=str, ensure_ascii=False, sort_keys=True).encode("utf-8")
    return files


class DownloadStage(Stage):
    """Downloads one pool slice with a thread pool and writes it as a shard."""

    name = STAGE_NAME

    def __init__(self, options: DownloadOptions | None = None) -> None:
        self.options = options or DownloadOptions()
        self.fetcher: HttpFetcher | None = None

    def setup(self) -> None:
        self.fetcher = HttpFetcher(self.options.fetch)

    def teardown(self) -> None:
        if self.fetcher is not None:
            self.fetcher.close()
            self.fetcher = None

    def fetch_one(self, url: str) -> SampleOutcome:
        if self.fetcher is None:
            self.setup()
        return download_sample(self.fetcher, url, self.options)

    def process_shard(self, ref: ShardRef, prefix: str) -> ShardStats:
        if self.fetcher is None:
            self.setup()
        table = read_pool_slice(ref)
        rows = table.to_pylist()
        per_shard = JobManifest.load(ref.job_root).samples_per_shard
        writer = ShardWriter(prefix, stage=self.name, job_id=ref.job_id, shard_id=ref.shard_id,
                             extra_schema=table.schema)
        try:
            outcomes = ordered_map(
                lambda row: download_sample(self.fetcher, row.get("url"), self.options, row.get("sha256")),
                rows, self.options.thread_count)
            for index, (row, outcome) in enumerate(zip(rows, outcomes)):
                key = sample_key(ref.shard_id, index, per_shard)
                ledger = ledger_row(row, key, outcome)
                writer.add(ledger, sample_files(ledger, outcome) if outcome.status == SUCCESS else None)
        except BaseException:
            writer.abort()
            raise
        return writer.close()

