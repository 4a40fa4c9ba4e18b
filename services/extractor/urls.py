"""Image URLs as a downloader needs them: absolute http(s), resolved against the page's base.

What an ``<img>`` contributes: its ``src`` when that is a fetchable URL; otherwise (no ``src``,
an empty one, a ``data:`` placeholder, a ``javascript:`` link...) the largest candidate of its
``srcset`` (the widest ``w`` descriptor, else the highest ``x`` density), because lazy-loading
pages often put the real image only there. One URL per ``<img>``: the candidates of a
``srcset`` are one picture at several sizes, not several pictures. ``data-src`` and other
script conventions are not read, nor ``<picture><source>``; the ``<img>`` inside a picture is.

Resolution follows the URL standard where it matters here: surrounding whitespace is trimmed,
tabs and newlines inside are removed, spaces become ``%20``, relative references are joined to
the base (``<base href>`` resolved against the page URL, else the page URL), the fragment is
dropped (it is never sent to a server, and would split one image into several uids).
"""

from __future__ import annotations

from urllib.parse import urljoin, urlsplit

MAX_URL_CHARS = 2048

NO_SRC = "no_src"
DATA_URL = "data_url"
UNSUPPORTED_SCHEME = "unsupported_scheme"
INVALID_URL = "invalid_url"
URL_TOO_LONG = "url_too_long"

_FETCHABLE = ("http", "https")
_INNER_WHITESPACE = str.maketrans({"\t": None, "\n": None, "\r": None, " ": "%20"})


def resolve_url(raw: str | None, base: str) -> tuple[str | None, str | None]:
    """``(absolute_url, None)`` for a fetchable reference, else ``(None, reason)``."""
    if raw is None:
        return None, NO_SRC
    text = raw.strip()
    if not text:
        return None, NO_SRC
    if text[:5].lower() == "data:":
        return None, DATA_URL
    text = text.translate(_INNER_WHITESPACE)
    try:
        url = text if text.startswith(("http://", "https://")) else urljoin(base, text)
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # e.g. an unclosed IPv6 literal or a bad port
        return None, INVALID_URL
    if parts.scheme not in _FETCHABLE:
        return None, UNSUPPORTED_SCHEME if parts.scheme else INVALID_URL
    if not host:
        return None, INVALID_URL
    if "#" in url:
        url = url.split("#", 1)[0]
    if len(url) > MAX_URL_CHARS:
        return None, URL_TOO_LONG
    return url, None


def parse_srcset(srcset: str) -> list[tuple[str, str]]:
    """``(url, descriptor)`` pairs of a ``srcset``, as the HTML standard splits them.

    A URL is a run of non-whitespace; commas at its end separate candidates, commas inside it
    belong to it (image CDNs put them in paths, e.g. ``w_400,h_300``).
    """
    candidates = []
    position, length = 0, len(srcset)
    while position < length:
        while position < length and (srcset[position].isspace() or srcset[position] == ","):
            position += 1
        start = position
        while position < length and not srcset[position].isspace():
            position += 1
        url = srcset[start:position]
        descriptor = ""
        if url.endswith(","):
            url = url.rstrip(",")
        else:
            start, depth = position, 0
            while position < length and (srcset[position] != "," or depth):
                depth += {"(": 1, ")": -1}.get(srcset[position], 0)
                position += 1
            descriptor = srcset[start:position].strip()
        if url:
            candidates.append((url, descriptor))
    return candidates


def _size(descriptor: str) -> tuple[int, float]:
    """Sort key of a candidate: width descriptors outrank densities; no descriptor means 1x."""
    token = descriptor.split()[0].lower() if descriptor else "1x"
    try:
        if token.endswith("w"):
            return 1, float(token[:-1])
        if token.endswith("x"):
            return 0, float(token[:-1])
    except ValueError:
        pass
    return -1, 0.0


def largest_srcset_url(srcset: str) -> str | None:
    """The candidate of ``srcset`` with the widest ``w`` (else the highest ``x``) descriptor."""
    candidates = parse_srcset(srcset)
    if not candidates:
        return None
    return max(candidates, key=lambda candidate: _size(candidate[1]))[0]


def image_url(src: str | None, srcset: str | None, base: str) -> tuple[str | None, str | None]:
    """The URL one ``<img>`` contributes, or the reason it has none (the ``src``'s reason)."""
    url, reason = resolve_url(src, base)
    if url is None and srcset:
        fallback = largest_srcset_url(srcset)
        if fallback is not None:
            from_srcset, _ = resolve_url(fallback, base)
            if from_srcset is not None:
                return from_srcset, None
    return url, reason


def page_base(page_url: str, base_href: str | None) -> str:
    """The base URL of a page: its ``<base href>`` when that resolves to http(s), else its URL."""
    if base_href:
        resolved, _ = resolve_url(base_href, page_url)
        if resolved is not None:
            return resolved
    return page_url
