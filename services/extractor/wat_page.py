"""The image links of one Common Crawl WAT record (a JSON description of one WARC record).

WAT files hold, per crawled page, ``Envelope.Payload-Metadata.HTTP-Response-Metadata
.HTML-Metadata.Links``: every link of the page with its ``path`` (``IMG@/src`` for an image's
``src``), its ``url`` as written (relative references unresolved) and, for images, its ``alt``
when the tag had one. ``HTML-Metadata.Head.Base`` is the page's ``<base href>``. Attribute
values are kept as written, so the alt text still has its HTML entities. WAT records carry no
``srcset``: only ``src`` is known.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from winnow.services.extractor.html_page import FoundImage
from winnow.services.extractor.urls import page_base

IMAGE_PATH = "IMG@/src"


class NotAPage(Exception):
    """A WAT record that describes no HTML page (a request, a non-HTML response, warcinfo)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class WatImages:
    page_url: str
    base: str
    images: list[FoundImage]


def _base_href(head: dict) -> str | None:
    base = head.get("Base") if isinstance(head, dict) else None
    if isinstance(base, dict):  # some producers write the tag's attributes
        base = base.get("href") or base.get("url")
    return base if isinstance(base, str) else None


def wat_images(payload: bytes) -> WatImages:
    """The page URL, base and image links of one WAT JSON payload.

    Raises ``ValueError`` when the payload is not JSON of a WAT record, ``NotAPage`` when it is
    but describes no HTML response.
    """
    record = json.loads(payload)
    envelope = record.get("Envelope") if isinstance(record, dict) else None
    if not isinstance(envelope, dict):
        raise ValueError("a WAT record needs a JSON object with an Envelope")
    header = envelope.get("WARC-Header-Metadata") or {}
    if header.get("WARC-Type", "response") != "response":
        raise NotAPage("not_a_page")
    response = (envelope.get("Payload-Metadata") or {}).get("HTTP-Response-Metadata")
    if not isinstance(response, dict):
        raise NotAPage("not_a_page")
    status = str((response.get("Response-Message") or {}).get("Status", "200"))
    if not status.startswith("2"):
        raise NotAPage("http_status")
    metadata = response.get("HTML-Metadata")
    if not isinstance(metadata, dict):
        raise NotAPage("not_html")
    page_url = header.get("WARC-Target-URI") or ""
    images = []
    for link in metadata.get("Links") or ():
        if isinstance(link, dict) and link.get("path") == IMAGE_PATH:
            alt = link.get("alt")
            images.append(FoundImage(link.get("url"), None, alt if isinstance(alt, str) else None))
    return WatImages(page_url, page_base(page_url, _base_href(metadata.get("Head") or {})), images)
