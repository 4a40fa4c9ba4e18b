"""Bytes of an HTML page to text, choosing the encoding the way a browser does.

Order (the HTML standard's, with a cheap guess before the detector): a byte-order mark; the
``charset`` of the HTTP ``Content-Type``; a ``<meta charset>`` or ``<meta http-equiv>`` in the
first 4 KiB; strict UTF-8 when the bytes are valid UTF-8; then uchardet (Resiliparse's
``detect_encoding``). Labels are mapped with the WHATWG table (``iso-8859-1`` is read as
windows-1252, as browsers do); an unknown label is ignored. Bytes the chosen encoding cannot
decode fall back to UTF-8, then windows-1252, then replacement characters: a page never fails
on its encoding, and ``DecodedPage.clean`` says whether anything was replaced or guessed again.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from resiliparse.parse.encoding import bytes_to_str, detect_encoding, map_encoding_to_html5

META_SCAN_BYTES = 4096
_META_CHARSET = re.compile(rb"""<meta\b[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]+)""", re.IGNORECASE)
_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))


@dataclass(frozen=True)
class DecodedPage:
    text: str
    encoding: str  # the Python codec the page was read with
    source: str  # bom | http | meta | utf8 | detected
    clean: bool  # False when bytes had to be decoded by a fallback or replaced


def _label(name: str | None) -> str | None:
    if not name:
        return None
    return map_encoding_to_html5(name.strip().strip("\"'"), fallback_utf8=False)


def meta_charset(body: bytes) -> str | None:
    """The encoding a ``<meta>`` in the first bytes declares, WHATWG-mapped; None if none or unknown."""
    match = _META_CHARSET.search(body, 0, META_SCAN_BYTES)
    if match is None:
        return None
    encoding = _label(match.group(1).decode("ascii"))
    # A meta tag readable as ASCII cannot sit in a UTF-16 document: the standard reads UTF-8.
    return "utf-8" if encoding and encoding.startswith("utf-16") else encoding


def choose_encoding(body: bytes, http_charset: str | None) -> tuple[str, str]:
    """``(codec, source)`` for a page's bytes."""
    for bom, encoding in _BOMS:
        if body.startswith(bom):
            return encoding, "bom"
    encoding = _label(http_charset)
    if encoding:
        return encoding, "http"
    encoding = meta_charset(body)
    if encoding:
        return encoding, "meta"
    try:
        body.decode("utf-8")
        return "utf-8", "utf8"
    except UnicodeDecodeError:
        return detect_encoding(body), "detected"


def decode_html(body: bytes, http_charset: str | None = None) -> DecodedPage:
    """The page as text; never raises on bad bytes or bad labels."""
    encoding, source = choose_encoding(body, http_charset)
    try:
        text = body.decode(encoding)
        if source == "bom":
            text = text.removeprefix("\ufeff")
        return DecodedPage(text, encoding, source, True)
    except (UnicodeDecodeError, LookupError):
        text = bytes_to_str(body, encoding, errors="replace", fallback_encodings=("utf-8", "cp1252"))
        return DecodedPage(text, encoding, source, False)
