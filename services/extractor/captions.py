"""Alt text to caption: entities decoded once, control characters and runs of whitespace
collapsed to single spaces, then checked against length bounds.

HTML parsed by Lexbor arrives with its entities already decoded (as a browser shows them);
Common Crawl's WAT files keep attribute values as they were written, so their alt text is
decoded here. Decoding twice would turn a page's literal ``&amp;lt;`` into ``<``.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

# C0 and C1 control characters become spaces (tab, newline and friends are whitespace anyway).
_CONTROLS = {code: " " for code in (*range(0x00, 0x20), *range(0x7F, 0xA0))}

MISSING_ALT = "missing_alt"
EMPTY_ALT = "empty_alt"
CAPTION_TOO_SHORT = "caption_too_short"
CAPTION_TOO_LONG = "caption_too_long"


@dataclass(frozen=True)
class CaptionRules:
    """Length bounds of a kept caption, in characters after normalisation."""

    min_chars: int = 2  # one-character alts ("*", "|", "x") are never captions
    max_chars: int = 1000  # longer ones are keyword stuffing or whole paragraphs

    def __post_init__(self) -> None:
        if self.min_chars < 1 or self.max_chars < self.min_chars:
            raise ValueError(f"caption bounds must satisfy 1 <= min_chars <= max_chars, "
                             f"got {self.min_chars} and {self.max_chars}")


def normalise_caption(alt: str, *, decode_entities: bool = False) -> str:
    """The caption an alt attribute stands for: decoded, control-free, single-spaced, trimmed."""
    if decode_entities and "&" in alt:
        alt = html.unescape(alt)
    return " ".join(alt.translate(_CONTROLS).split())


def caption_or_reason(alt: str | None, rules: CaptionRules, *, decode_entities: bool = False) -> tuple[str, str | None]:
    """``(caption, None)`` when the alt text makes a usable caption, else ``("", reason)``."""
    if alt is None:
        return "", MISSING_ALT
    caption = normalise_caption(alt, decode_entities=decode_entities)
    if not caption:
        return "", EMPTY_ALT
    if len(caption) < rules.min_chars:
        return "", CAPTION_TOO_SHORT
    if len(caption) > rules.max_chars:
        return "", CAPTION_TOO_LONG
    return caption, None
