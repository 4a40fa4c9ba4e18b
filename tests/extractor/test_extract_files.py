"""Extraction from real WARC and WAT files that warcio wrote, read from disk, HTTP and S3."""

from __future__ import annotations

import gzip
import shutil

import pytest

from winnow.services.downloader.pool import generate_uid
from winnow.services.extractor.extract import ExtractOptions, extract_file
from winnow.services.extractor.reader import CrawlFileMissing
from tests.extractor import pages
from tests.extractor.crawl_files import Page, WatLink, WatPage, write_warc, write_wat
from tests.infra.image_server import ImageServer


def pairs(extraction) -> list[tuple[str, str]]:
    return [(row.url, row.text) for row in extraction.rows]


def assert_accounted_for(stats) -> None:
    """Every image is kept or has a reason; every record is a page or was skipped for one."""
    assert stats.images == stats.kept + sum(stats.reasons.values())
    assert stats.records == stats.pages + sum(stats.skipped.values())


def test_a_warc_of_real_pages_yields_what_a_reader_of_the_pages_sees(tmp_path):
    path = write_warc(tmp_path / "crawl.warc.gz", pages.all_pages())
    extraction = extract_file(str(path))
    assert pairs(extraction) == pages.ALL_PAIRS
    first = extraction.rows[0]
    assert first.uid == generate_uid(first.url, first.text)  # the downloader's uid for the same pair
    assert (first.page_url, first.source_file) == (pages.GALLERY_URL, str(path))
    assert {row.page_url for row in extraction.rows} == {pages.GALLERY_URL, pages.BASE_URL, pages.BROKEN_URL,
                                                        pages.CP1252_URL, pages.SJIS_URL}


def test_every_image_and_record_is_counted_with_its_reason(tmp_path):
    extraction = extract_file(str(write_warc(tmp_path / "gallery.warc.gz", [pages.gallery(), pages.not_found(),
                                                                           pages.jpeg()])))
    stats = extraction.stats
    assert stats.reasons == pages.GALLERY_REASONS
    assert (stats.pages, stats.kept) == (1, len(pages.GALLERY_PAIRS))
    # warcinfo + a request and a metadata record per response; the 404 and the JPEG are no pages.
    assert stats.skipped == {"not_a_page": 7, "http_status": 1, "not_html": 1}
    assert_accounted_for(stats)


def test_gzipped_per_record_whole_file_gzipped_and_plain_files_read_the_same(tmp_path):
    per_record = write_warc(tmp_path / "a.warc.gz", pages.all_pages(), gzip=True)
    plain = write_warc(tmp_path / "b.warc", pages.all_pages(), gzip=False)
    whole = tmp_path / "c.warc.gz"
    whole.write_bytes(gzip.compress(plain.read_bytes()))
    assert pairs(extract_file(str(per_record))) == pairs(extract_file(str(plain))) == \
        pairs(extract_file(str(whole))) == pages.ALL_PAIRS


def _many_pages(count: int) -> list[Page]:
    return [Page.html(f"http://blog.example.com/post/{i}", f"<html><body><p>{'words ' * 300}</p>"
                      f"<img src='/img/{i}.jpg' alt='Picture number {i}'></body></html>") for i in range(count)]


@pytest.mark.parametrize("compressed", [True, False])
def test_a_truncated_file_keeps_the_pairs_before_the_cut(tmp_path, compressed):
    full = write_warc(tmp_path / "full.warc", _many_pages(40), gzip=compressed)
    complete = pairs(extract_file(str(full)))
    data = full.read_bytes()
    cut = tmp_path / "cut.warc"
    cut.write_bytes(data[:int(len(data) * 0.6)])
    extraction = extract_file(str(cut))
    got = pairs(extraction)
    assert 10 <= len(got) < len(complete)
    assert got == complete[:len(got)]  # what was read is right; nothing is invented
    assert extraction.stats.issues, "the cut is counted"
    assert_accounted_for(extraction.stats)


def test_a_file_that_is_no_warc_at_all_yields_nothing_and_says_so(tmp_path):
    junk = tmp_path / "junk.warc.gz"
    junk.write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(256)) * 20)
    extraction = extract_file(str(junk))
    assert extraction.rows == []
    assert extraction.stats.issues["truncated_file"] == 1


def test_a_page_with_bytes_its_charset_cannot_read_still_gives_its_images(tmp_path):
    body = "<html><body><img src='/a.jpg' alt='Caf\xe9 terrace'><img src='/b.jpg' alt='Plain caption'>".encode(
        "cp1252")
    page = Page("http://cafe.example/", body, content_type="text/html; charset=utf-8")
    extraction = extract_file(str(write_warc(tmp_path / "bad.warc.gz", [page])))
    assert pairs(extraction)[1] == ("http://cafe.example/b.jpg", "Plain caption")
    assert extraction.stats.issues == {"undecodable_bytes": 1}


def test_shorter_bounds_drop_longer_captions(tmp_path):
    path = write_warc(tmp_path / "gallery.warc.gz", [pages.gallery()])
    extraction = extract_file(str(path), ExtractOptions(min_caption_chars=5, max_caption_chars=16))
    assert pairs(extraction) == [(url, text) for url, text in pages.GALLERY_PAIRS if 5 <= len(text) <= 16]
    assert extraction.stats.reasons["caption_too_long"] > 0


WAT_GALLERY = WatPage(
    pages.BASE_URL, base="https://static.example.com/media/", links=[
        WatLink("A@/href", "/2024/03/other.html", text="Other story"),
        WatLink("IMG@/src", "crowd.jpg", alt="A crowd in the square"),
        WatLink("IMG@/src", "/top/banner.png", alt="Banner"),
        WatLink("IMG@/src", "later.jpg", alt="After a second base tag"),
        WatLink("IMG@/src", "tracker.gif"),
        WatLink("IMG@/src", "data:image/gif;base64,R0lGOD", alt="pixel"),
        WatLink("IMG@/src", "q.jpg", alt="Fish &amp; chips &quot;to go&quot;"),
        WatLink("IMG@/src", "crowd.jpg", alt="A crowd  in the square"),
    ])


def test_a_wat_file_yields_the_pairs_of_the_page_it_describes(tmp_path):
    path = write_wat(tmp_path / "crawl.warc.wat.gz", [
        WAT_GALLERY,
        WatPage("http://img.example/photo.jpg", html=False),
        WatPage("http://www.example.org/gone", links=[WatLink("IMG@/src", "/x.jpg", alt="Gone")], status="404"),
    ], raw_payloads=[b"{not json", b'{"Envelope": "wrong shape"}'])
    extraction = extract_file(str(path))
    # The same page read from its HTML gives the same pairs: WAT and WARC files agree.
    assert pairs(extraction) == pages.BASE_PAIRS + [("https://static.example.com/media/q.jpg",
                                                     'Fish & chips "to go"')]
    stats = extraction.stats
    assert stats.reasons == {"missing_alt": 1, "data_url": 1, "duplicate_in_file": 1}
    assert stats.skipped == {"not_a_page": 4, "not_html": 1, "http_status": 1, "bad_wat_json": 2}
    assert_accounted_for(stats)


def test_a_crawl_file_over_http_reads_like_a_local_one(tmp_path):
    served = tmp_path / "www"
    served.mkdir()
    write_warc(served / "seg.warc.gz", pages.all_pages())
    with ImageServer(served) as server:
        extraction = extract_file(server.img_url("seg.warc.gz"))
        assert pairs(extraction) == pages.ALL_PAIRS
        with pytest.raises(CrawlFileMissing):
            extract_file(server.img_url("absent.warc.gz"))


def test_a_crawl_file_on_s3_reads_like_a_local_one(tmp_path, s3_bucket):
    import fsspec

    local = write_warc(tmp_path / "seg.warc.gz", pages.all_pages())
    uri = f"{s3_bucket}/crawl/seg.warc.gz"
    with fsspec.open(uri, "wb") as handle, open(local, "rb") as source:
        shutil.copyfileobj(source, handle)
    assert pairs(extract_file(uri)) == pages.ALL_PAIRS


def test_a_missing_local_file_is_a_clear_error(tmp_path):
    with pytest.raises(CrawlFileMissing, match="no crawl file"):
        extract_file(str(tmp_path / "nothing.warc.gz"))
