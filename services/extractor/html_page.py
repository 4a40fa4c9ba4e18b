"""The ``<img>`` elements of an HTML page, read with Resiliparse's Lexbor parser.

Lexbor parses any input the way a browser would (unclosed tags, stray markup, truncated
documents), so a page either yields its images or is reported as unparseable; it never stops
the file. A page without the bytes ``<img`` anywhere is not parsed at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from resiliparse.parse.html import HTMLTree

from winnow.services.extractor.charset import decode_html
from winnow.services.extractor.urls import page_base

_HAS_IMG = re.compile(rb"<img", re.IGNORECASE)


@dataclass(frozen=True)
class FoundImage:
    """One ``<img>`` as written: its attributes (None when absent), alt text entity-decoded."""

    src: str | None
    srcset: str | None
    alt: str | None


@dataclass(frozen=True)
class HtmlImages:
    base: str  # the URL relative references resolve against
    images: list[FoundImage]
    clean_decode: bool  # False when bytes had to be replaced or decoded by a fallback


def has_img_tag(body: bytes) -> bool:
    return _HAS_IMG.search(body) is not None


def html_images(body: bytes, page_url: str, http_charset: str | None = None) -> HtmlImages:
    """Every ``<img>`` of the page, in document order, and the page's base URL.

    Raises ``resiliparse.parse.html.HTMLParserException`` only when Lexbor itself fails.
    """
    page = decode_html(body, http_charset)
    document = HTMLTree.parse(page.text).document
    base_href = None
    for element in document.get_elements_by_tag_name("base"):
        base_href = element.getattr("href")
        if base_href:
            break  # only the first <base> with an href counts
    images = [FoundImage(element.getattr("src"), element.getattr("srcset"), element.getattr("alt"))
              for element in document.get_elements_by_tag_name("img")]
    return HtmlImages(page_base(page_url, base_href), images, page.clean)
