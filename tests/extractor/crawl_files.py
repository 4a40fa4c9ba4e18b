"""Writing real crawl files for the tests: WARC files of HTML pages and WAT files describing them.

Everything goes through warcio, the reference writer: WARC files with ``warcinfo``, ``request``,
``response`` and ``metadata`` records as Common Crawl's crawler writes them, gzip'd per record
(or plain); WAT files with ``metadata`` records whose payload is the JSON envelope Common
Crawl's WAT generator writes (``Envelope.Payload-Metadata.HTTP-Response-Metadata.HTML-Metadata``).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter


@dataclass(frozen=True)
class Page:
    """One crawled HTTP response."""

    url: str
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    status: str = "200 OK"

    @classmethod
    def html(cls, url: str, html: str, charset: str = "utf-8", header_charset: bool = True) -> Page:
        content_type = f"text/html; charset={charset}" if header_charset else "text/html"
        return cls(url, html.encode(charset), content_type)


@dataclass
class WatLink:
    """A link as Common Crawl's WAT lists it."""

    path: str
    url: str
    alt: str | None = None
    text: str | None = None

    def to_json(self) -> dict:
        entry = {"path": self.path, "url": self.url}
        if self.alt is not None:
            entry["alt"] = self.alt
        if self.text is not None:
            entry["text"] = self.text
        return entry


@dataclass
class WatPage:
    url: str
    links: list[WatLink] = field(default_factory=list)
    base: str | None = None
    title: str = ""
    status: str = "200"
    html: bool = True


def _writer(handle, gzip: bool) -> WARCWriter:
    writer = WARCWriter(handle, gzip=gzip)
    info = writer.create_warcinfo_record("test.warc.gz", {"software": "winnow-tests", "format": "WARC/1.0"})
    writer.write_record(info)
    return writer


def write_warc(path: Path, pages: list[Page], *, gzip: bool = True, extra_records: bool = True) -> Path:
    """A WARC file of ``pages``; with ``extra_records`` each response gets its request and
    metadata records, as Common Crawl's WARC files have them."""
    with open(path, "wb") as handle:
        writer = _writer(handle, gzip)
        for page in pages:
            if extra_records:
                request = StatusAndHeaders(f"GET {page.url} HTTP/1.1", [("Host", "example"), ("User-Agent", "CCBot")],
                                           is_http_request=True)
                writer.write_record(writer.create_warc_record(page.url, "request", payload=io.BytesIO(b""),
                                                              http_headers=request))
            headers = StatusAndHeaders(page.status, [("Content-Type", page.content_type),
                                                     ("Content-Length", str(len(page.body)))], protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(page.url, "response", payload=io.BytesIO(page.body),
                                                          http_headers=headers))
            if extra_records:
                fetch = b"fetchTimeMs: 112\ncharset-detected: UTF-8\n"
                writer.write_record(writer.create_warc_record(page.url, "metadata", payload=io.BytesIO(fetch),
                                                              warc_content_type="application/warc-fields"))
    return path


def wat_envelope(page: WatPage, container: str = "test.warc.gz", warc_type: str = "response") -> dict:
    html_metadata = {"Head": {"Title": page.title, "Metas": [], "Link": []},
                     "Links": [link.to_json() for link in page.links]}
    if page.base is not None:
        html_metadata["Head"]["Base"] = page.base
    response = {"Response-Message": {"Version": "HTTP/1.1", "Status": page.status, "Reason": "OK"},
                "Headers": {"Content-Type": "text/html; charset=UTF-8" if page.html else "image/jpeg"},
                "Entity-Length": "1234"}
    if page.html:
        response["HTML-Metadata"] = html_metadata
    payload = {"Actual-Content-Type": "application/http; msgtype=response", "Actual-Content-Length": "5149"}
    if warc_type == "response":
        payload["HTTP-Response-Metadata"] = response
    else:
        payload["HTTP-Request-Metadata"] = {"Request-Message": {"Method": "GET", "Path": "/"}}
    return {"Container": {"Filename": container, "Compressed": True, "Offset": "0"},
            "Envelope": {"Format": "WARC", "WARC-Header-Length": "512",
                         "WARC-Header-Metadata": {"WARC-Type": warc_type, "WARC-Target-URI": page.url,
                                                  "WARC-Date": "2024-02-21T04:12:01Z"},
                         "Payload-Metadata": payload}}


def write_wat(path: Path, pages: list[WatPage], *, gzip: bool = True, with_requests: bool = True,
              raw_payloads: list[bytes] = ()) -> Path:
    """A WAT file: one JSON ``metadata`` record per described WARC record (requests too)."""
    with open(path, "wb") as handle:
        writer = _writer(handle, gzip)
        for page in pages:
            kinds = ("request", "response") if with_requests else ("response",)
            for kind in kinds:
                body = json.dumps(wat_envelope(page, warc_type=kind)).encode()
                writer.write_record(writer.create_warc_record(page.url, "metadata", payload=io.BytesIO(body),
                                                              warc_content_type="application/json"))
        for raw in raw_payloads:
            writer.write_record(writer.create_warc_record("http://broken.example/", "metadata",
                                                          payload=io.BytesIO(raw),
                                                          warc_content_type="application/json"))
    return path
