"""Image URLs and captions: the small rules every extracted pair goes through."""

from __future__ import annotations

import pytest

from winnow.services.extractor.captions import CaptionRules, caption_or_reason, normalise_caption
from winnow.services.extractor.urls import MAX_URL_CHARS, image_url, largest_srcset_url, page_base, parse_srcset, resolve_url

PAGE = "https://www.example.org/a/b/page.html?x=1"


@pytest.mark.parametrize(("raw", "expected"), [
    ("pic.jpg", "https://www.example.org/a/b/pic.jpg"),
    ("../pic.jpg", "https://www.example.org/a/pic.jpg"),
    ("/pic.jpg", "https://www.example.org/pic.jpg"),
    ("//cdn.example.net/pic.jpg", "https://cdn.example.net/pic.jpg"),
    ("?page=2", "https://www.example.org/a/b/page.html?page=2"),
    ("  \n http://other.example/p.png \t", "http://other.example/p.png"),
    ("HTTPS://Other.example/p.png", "https://Other.example/p.png"),
    ("my photo\n.jpg", "https://www.example.org/a/b/my%20photo.jpg"),
    ("pic.jpg#section", "https://www.example.org/a/b/pic.jpg"),
])
def test_references_resolve_to_fetchable_urls(raw, expected):
    assert resolve_url(raw, PAGE) == (expected, None)


@pytest.mark.parametrize(("raw", "reason"), [
    (None, "no_src"),
    ("   ", "no_src"),
    ("data:image/png;base64,iVBORw0KGgo=", "data_url"),
    (" DATA:image/gif;base64,R0lG", "data_url"),
    ("javascript:void(0)", "unsupported_scheme"),
    ("mailto:someone@example.org", "unsupported_scheme"),
    ("ftp://files.example.org/p.jpg", "unsupported_scheme"),
    ("http://[::1/broken", "invalid_url"),
    ("http:///no-host.jpg", "invalid_url"),
    ("https://example.org/" + "a" * MAX_URL_CHARS, "url_too_long"),
])
def test_unfetchable_references_say_why(raw, reason):
    assert resolve_url(raw, PAGE) == (None, reason)


def test_a_relative_reference_without_a_base_is_invalid():
    assert resolve_url("pic.jpg", "") == (None, "invalid_url")


def test_srcset_candidates_keep_commas_inside_urls():
    srcset = ("https://res.example.com/upload/w_400,h_300/cat.jpg 400w,"
              "https://res.example.com/upload/w_800,h_600/cat.jpg 800w, small.jpg,")
    assert parse_srcset(srcset) == [("https://res.example.com/upload/w_400,h_300/cat.jpg", "400w"),
                                    ("https://res.example.com/upload/w_800,h_600/cat.jpg", "800w"),
                                    ("small.jpg", "")]


@pytest.mark.parametrize(("srcset", "largest"), [
    ("a.jpg 480w, b.jpg 1200w, c.jpg 800w", "b.jpg"),
    ("a.jpg, b.jpg 2x, c.jpg 1.5x", "b.jpg"),
    ("a.jpg 2x, b.jpg 300w", "b.jpg"),  # widths say more than densities
    ("only.jpg", "only.jpg"),
    ("", None),
])
def test_the_largest_srcset_candidate_is_taken(srcset, largest):
    assert largest_srcset_url(srcset) == largest


def test_src_wins_over_srcset_and_srcset_replaces_a_placeholder():
    assert image_url("real.jpg", "big.jpg 2000w", PAGE) == ("https://www.example.org/a/b/real.jpg", None)
    assert image_url("data:image/gif;base64,R0", "big.jpg 2000w", PAGE) == ("https://www.example.org/a/b/big.jpg", None)
    assert image_url(None, "javascript:x 1x", PAGE) == (None, "no_src")


def test_the_first_usable_base_href_counts():
    assert page_base(PAGE, "/static/") == "https://www.example.org/static/"
    assert page_base(PAGE, "javascript:alert(1)") == PAGE
    assert page_base(PAGE, None) == PAGE


def test_captions_are_single_spaced_and_free_of_control_characters():
    assert normalise_caption("  A\tcat\n\n on\u00a0a\u3000mat\x00\x7f ") == "A cat on a mat"


def test_entities_are_decoded_only_when_asked():
    assert normalise_caption("Tom &amp; Jerry &lt;3") == "Tom &amp; Jerry &lt;3"
    assert normalise_caption("Tom &amp; Jerry &lt;3", decode_entities=True) == "Tom & Jerry <3"


@pytest.mark.parametrize(("alt", "expected"), [
    (None, ("", "missing_alt")),
    ("", ("", "empty_alt")),
    (" \n\t ", ("", "empty_alt")),
    ("a", ("", "caption_too_short")),
    ("ab", ("ab", None)),
    ("x" * 11, ("", "caption_too_long")),
    ("  ten chars ", ("ten chars", None)),
])
def test_caption_bounds(alt, expected):
    assert caption_or_reason(alt, CaptionRules(min_chars=2, max_chars=10)) == expected


def test_bounds_that_cannot_hold_are_refused():
    with pytest.raises(ValueError, match="min_chars"):
        CaptionRules(min_chars=5, max_chars=4)
    with pytest.raises(ValueError, match="min_chars"):
        CaptionRules(min_chars=0)
