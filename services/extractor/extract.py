"""One crawl file in, its ``(uid, url, text, page_url, source_file)`` image-text pairs out.

A WARC file's ``response`` records are HTML pages (parsed with Lexbor); a WAT file's
``metadata`` records are JSON link lists. Both may sit in one file. Every ``<img>`` is judged
in this order, and the first failing check is its reason: alt text present (``missing_alt``)
and non-empty after normalisation (``empty_alt``), a fetchable URL (``no_src``, ``data_url``,
``unsupported_scheme``, ``invalid_url``, ``url_too_long``), caption length
(``caption_too_short``, ``caption_too_long``), then the pair's first occurrence in the file
(``duplicate_in_file``). Records that are no page are counted by why (``not_a_page``,
``http_status``, ``not_html``, ``parse_error``, ``bad_wat_json``, ``record_error``, ...);
problems that were handled without losing the page are counted as ``issues``.

The uid is the downloader's own (``winnow.services.downloader.pool.generate_uid``): the 128-bit
BLAKE2b hash of url and caption, so a pool keeps its uids whichever service computed them.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import structlog
from fastwarc.warc import WarcRecord, WarcRecordType
from resiliparse.parse.html import HTMLParserException

from winnow.services.downloader.pool import generate_uid
from winnow.services.extractor.captions import CaptionRules, caption_or_reason
from winnow.services.extractor.html_page import FoundImage, has_img_tag, html_images
from winnow.services.extractor.reader import CrawlReadError, iter_records, open_crawl_file
from winnow.services.extractor.urls import image_url
from winnow.services.extractor.wat_page import NotAPage, wat_images

log = structlog.get_logger(__name__)

DUPLICATE_IN_FILE = "duplicate_in_file"
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
PROGRESS_EVERY = 1000  # records between progress callbacks


class ImageText(NamedTuple):
    """One kept image and its caption: a pool row."""

    uid: str
    url: str
    text: str
    page_url: str
    source_file: str


@dataclass(frozen=True)
class ExtractOptions:
    """How captions are judged; the same for every file of a job."""

    min_caption_chars: int = CaptionRules.min_chars
    max_caption_chars: int = CaptionRules.max_chars

    def __post_init__(self) -> None:
        CaptionRules(self.min_caption_chars, self.max_caption_chars)  # validates the bounds

    @property
    def captions(self) -> CaptionRules:
        return CaptionRules(self.min_caption_chars, self.max_caption_chars)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExtractOptions:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass
class FileStats:
    """What one crawl file held and what became of it."""

    source_file: str
    records: int = 0  # WARC records read, of every type
    pages: int = 0  # HTML pages (or WAT page descriptions) whose images were judged
    images: int = 0  # <img> elements (WAT: IMG@/src links) on those pages
    kept: int = 0
    reasons: Counter = field(default_factory=Counter)  # images not kept, by reason
    skipped: Counter = field(default_factory=Counter)  # records that were not pages, by reason
    issues: Counter = field(default_factory=Counter)  # problems handled without losing the page
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"source_file": self.source_file, "records": self.records, "pages": self.pages,
                "images": self.images, "kept": self.kept, "reasons": dict(sorted(self.reasons.items())),
                "skipped": dict(sorted(self.skipped.items())), "issues": dict(sorted(self.issues.items())),
                "seconds": round(self.seconds, 3)}


@dataclass
class FileExtraction:
    rows: list[ImageText]
    stats: FileStats


class _Judge:
    """Turns found images into kept pairs, counting every drop; remembers the file's pairs."""

    def __init__(self, rules: CaptionRules, stats: FileStats, source_file: str) -> None:
        self.rules = rules
        self.stats = stats
        self.source_file = source_file
        self.seen: set[str] = set()

    def __call__(self, images: Iterable[FoundImage], base: str, page_url: str,
                 decode_entities: bool) -> Iterator[ImageText]:
        stats = self.stats
        for image in images:
            stats.images += 1
            caption, reason = caption_or_reason(image.alt, self.rules, decode_entities=decode_entities)
            if reason is None:
                url, reason = image_url(image.src, image.srcset, base)
            if reason is not None:
                stats.reasons[reason] += 1
                continue
            uid = generate_uid(url, caption)
            if uid in self.seen:
                stats.reasons[DUPLICATE_IN_FILE] += 1
                continue
            self.seen.add(uid)
            stats.kept += 1
            yield ImageText(uid, url, caption, page_url, self.source_file)


def _html_record(record: WarcRecord, judge: _Judge) -> Iterator[ImageText]:
    stats = judge.stats
    headers = record.http_headers if record.is_http else None
    if headers is None or headers.status_code is None:
        stats.skipped["malformed_record"] += 1
        return
    if not 200 <= headers.status_code < 300:
        stats.skipped["http_status"] += 1
        return
    content_type = (record.http_content_type or "").lower()
    if content_type and content_type not in HTML_TYPES:
        stats.skipped["not_html"] += 1
        return
    body = record.reader.read()
    if len(body) < record.content_length:
        stats.issues["truncated_record"] += 1
    page_url = record.headers.get("WARC-Target-URI") or ""
    if not has_img_tag(body):
        stats.pages += 1
        return
    try:
        found = html_images(body, page_url, record.http_charset)
    except HTMLParserException:
        stats.skipped["parse_error"] += 1
        return
    stats.pages += 1
    if not found.clean_decode:
        stats.issues["undecodable_bytes"] += 1
    yield from judge(found.images, found.base, page_url, decode_entities=False)


def _wat_record(record: WarcRecord, judge: _Judge) -> Iterator[ImageText]:
    stats = judge.stats
    if "json" not in (record.headers.get("Content-Type") or "").lower():
        stats.skipped["not_a_page"] += 1  # a WARC's own metadata records (fetch times, languages)
        return
    payload = record.reader.read()
    if len(payload) < record.content_length:
        stats.issues["truncated_record"] += 1
    try:
        found = wat_images(payload)
    except NotAPage as exc:
        stats.skipped[exc.reason] += 1
        return
    except ValueError:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        stats.skipped["bad_wat_json"] += 1
        return
    stats.pages += 1
    yield from judge(found.images, found.base, found.page_url, decode_entities=True)


def iter_image_texts(uri: str, options: ExtractOptions, stats: FileStats,
                     on_records: Callable[[int], None] | None = None) -> Iterator[ImageText]:
    """Yield the file's kept pairs in file order, first occurrence only, filling ``stats``.

    A corrupt or truncated file ends the iteration early (``issues["truncated_file"]``); a
    storage failure raises ``CrawlReadError``; a missing file raises ``CrawlFileMissing``.
    """
    judge = _Judge(options.captions, stats, uri)
    started = time.perf_counter()
    reported = 0
    with open_crawl_file(uri) as stream:
        records = iter_records(stream)
        while True:
            try:
                record = next(records)
            except StopIteration:
                break
            except CrawlReadError:
                raise
            except Exception as exc:  # corrupt data: the rest of the file is lost
                stream.truncated = True
                log.warning("crawl_file_corrupt", uri=uri, records=stats.records, error=str(exc))
                break
            stats.records += 1
            try:
                record_type = record.record_type
                if record_type == WarcRecordType.response:
                    yield from _html_record(record, judge)
                elif record_type == WarcRecordType.metadata:
                    yield from _wat_record(record, judge)
                else:
                    stats.skipped["not_a_page"] += 1
            except CrawlReadError:
                raise
            except Exception as exc:  # one bad record must not cost the file
                stats.skipped["record_error"] += 1
                log.debug("crawl_record_failed", uri=uri, record=stats.records, error=repr(exc))
            if on_records is not None and stats.records - reported >= PROGRESS_EVERY:
                on_records(stats.records - reported)
                reported = stats.records
        if stream.truncated or not stream.finish():
            stats.issues["truncated_file"] += 1
            log.warning("crawl_file_truncated", uri=uri, records=stats.records, bytes=stream.raw_bytes)
    if on_records is not None and stats.records > reported:
        on_records(stats.records - reported)
    stats.seconds = time.perf_counter() - started


def extract_file(uri: str, options: ExtractOptions | None = None,
                 on_records: Callable[[int], None] | None = None) -> FileExtraction:
    """Every kept pair of one crawl file, and the file's stats."""
    stats = FileStats(source_file=uri)
    rows = list(iter_image_texts(uri, options or ExtractOptions(), stats, on_records))
    return FileExtraction(rows, stats)
