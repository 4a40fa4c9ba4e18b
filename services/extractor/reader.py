"""Opening a crawl file from any fsspec location and iterating its WARC records with FastWARC.

Local paths, ``s3://``, ``http(s)://`` and the rest of fsspec; gzip'd (per record, as Common
Crawl writes them, or whole-file) or plain. Gzip is inflated here, member by member, rather
than by FastWARC, whose reader ends a cut-off member silently: here a file that ends inside a
member, or whose WARC data does not end where a record ends, is flagged ``truncated``. Other
compressions (zstd, lz4) are left to FastWARC's detection.

Two kinds of failure are kept apart: the storage failing mid-read (``CrawlReadError``: another
attempt may succeed) and the file itself being corrupt or cut short (``CorruptCrawlFile`` or a
FastWARC ``OSError``: the records read so far count, the rest of the file is lost).
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator

from fastwarc.warc import ArchiveIterator, WarcRecord

from winnow.shared import storage
from winnow.shared.shards import ShardFormatError

RAW_CHUNK = 1 << 16
MAX_INFLATE_CHUNK = 1 << 22  # bytes inflated per step: a gzip bomb cannot take the memory
GZIP_MAGIC = b"\x1f\x8b"
RECORD_END = b"\r\n\r\n"  # every WARC record ends with it


class CrawlReadError(RuntimeError):
    """Reading the crawl file from its storage failed (network, throttling, permissions)."""


class CrawlFileMissing(ShardFormatError):
    """The crawl file does not exist; retrying cannot help."""


class CorruptCrawlFile(OSError):
    """The file's bytes are not valid gzip where they should be."""


class CrawlStream:
    """The WARC bytes of a crawl file: inflated when gzip'd, with truncation noticed.

    Storage failures surface as ``CrawlReadError``, never as ``OSError``, so that FastWARC's
    own errors (corrupt data) and the storage's stay apart.
    """

    def __init__(self, raw, uri: str) -> None:
        self._raw = raw
        self.uri = uri
        self.raw_bytes = 0
        self.truncated = False
        first = self._raw_read(RAW_CHUNK)
        self.gzipped = first.startswith(GZIP_MAGIC)
        # Only plain WARC can be checked for its last record's end; zstd & co. pass through.
        self.checkable = self.gzipped or first.startswith(b"WARC/")
        self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS) if self.gzipped else None
        self._member_open = False
        self._pending = first if self.gzipped else b""
        self._out = b"" if self.gzipped else first
        self._pos = 0
        self._eof = False
        self._tail = self._out[-4:]

    def _raw_read(self, size: int) -> bytes:
        try:
            data = self._raw.read(size)
        except Exception as exc:
            raise CrawlReadError(f"reading {self.uri} failed after {self.raw_bytes} bytes: {exc}") from exc
        self.raw_bytes += len(data)
        return data

    def _inflate_more(self) -> bytes:
        inflater = self._inflater
        if inflater.unconsumed_tail:
            data = inflater.unconsumed_tail
        elif self._pending:
            data, self._pending = self._pending, b""
        else:
            data = self._raw_read(RAW_CHUNK)
            if not data:
                self._eof = True
                self.truncated = self.truncated or self._member_open
                return b""
        self._member_open = True
        try:
            out = inflater.decompress(data, MAX_INFLATE_CHUNK)
        except zlib.error as exc:
            raise CorruptCrawlFile(f"{self.uri}: bad gzip data after {self.raw_bytes} bytes: {exc}") from exc
        if inflater.eof:  # one member done (Common Crawl gzips every record alone): the next may follow
            self._pending = inflater.unused_data
            self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            self._member_open = False
        return out

    def _more(self) -> bytes:
        if self.gzipped:
            return self._inflate_more()
        data = self._raw_read(RAW_CHUNK)
        self._eof = not data
        return data

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(RAW_CHUNK), b""))
        while self._pos >= len(self._out):
            if self._eof:
                return b""
            self._out, self._pos = self._more(), 0
            if self._out:
                self._tail = (self._tail + self._out[-4:])[-4:]
        chunk = self._out[self._pos:self._pos + size]
        self._pos += len(chunk)
        return chunk

    def tell(self) -> int:
        return self.raw_bytes

    def finish(self) -> bool:
        """Read to the end; True when the file ended where a record ends (no cut noticed)."""
        try:
            while self.read(RAW_CHUNK):
                pass
        except CorruptCrawlFile:
            self.truncated = True
        if self.checkable and self._tail and not self._tail.endswith(RECORD_END):
            self.truncated = True
        return not self.truncated

    def close(self) -> None:
        self._raw.close()


@contextlib.contextmanager
def open_crawl_file(uri: str) -> Iterator[CrawlStream]:
    """The WARC bytes of ``uri`` as a stream (inflated when gzip'd)."""
    fs, path = storage.filesystem(uri)
    # HTTP: one streaming GET; the file is read front to back once, so no range requests.
    options = {"block_size": 0} if uri.startswith(("http://", "https://")) else {}
    try:
        handle = fs.open(path, "rb", **options)
    except FileNotFoundError as exc:
        raise CrawlFileMissing(f"no crawl file at {uri}") from exc
    except Exception as exc:
        raise CrawlReadError(f"cannot open {uri}: {exc}") from exc
    try:
        stream = CrawlStream(handle, uri)
    except BaseException:
        handle.close()
        raise
    try:
        yield stream
    finally:
        with contextlib.suppress(Exception):
            stream.close()


def iter_records(stream: CrawlStream) -> Iterator[WarcRecord]:
    """Every record of a WARC (or WAT, WET) stream, HTTP headers parsed and payloads decoded.

    Raises ``OSError`` when the stream stops being a WARC (corrupt data), ``CrawlReadError``
    when the storage fails.
    """
    yield from ArchiveIterator(stream, parse_http=True, auto_decode="all", stream_detect=not stream.gzipped)
