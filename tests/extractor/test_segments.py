"""Common Crawl segment lists (warc.paths.gz, wat.paths.gz) as the crawl files of a job."""

from __future__ import annotations

import gzip

import pytest

from winnow.services.extractor.segments import COMMON_CRAWL_PREFIX, expand_inputs, read_segment_list

LISTED = ["crawl-data/CC-MAIN-2024-10/segments/1707947473347.0/warc/CC-MAIN-20240220211055-20240221001055-00000.warc.gz",
          "crawl-data/CC-MAIN-2024-10/segments/1707947473347.0/warc/CC-MAIN-20240220211055-20240221001055-00001.warc.gz"]


def test_a_gzipped_list_resolves_against_common_crawl(tmp_path):
    listing = tmp_path / "warc.paths.gz"
    listing.write_bytes(gzip.compress(("\n".join(LISTED) + "\n").encode()))
    assert read_segment_list(str(listing)) == [COMMON_CRAWL_PREFIX + path for path in LISTED]
    assert read_segment_list(str(listing), "s3://commoncrawl/", max_files=1) == ["s3://commoncrawl/" + LISTED[0]]


def test_a_plain_list_keeps_absolute_entries_and_skips_comments(tmp_path):
    listing = tmp_path / "mine.paths"
    listing.write_text(f"# my segments\n\n{LISTED[0]}\n/data/local.warc.gz\nhttps://mirror.example/x.wat.gz\n")
    assert read_segment_list(str(listing), "https://mirror.example/cc") == [
        "https://mirror.example/cc/" + LISTED[0], "/data/local.warc.gz", "https://mirror.example/x.wat.gz"]


def test_inputs_mix_files_and_lists_and_name_each_file_once(tmp_path):
    listing = tmp_path / "wat.paths"
    listing.write_text("a.warc.wat.gz\nb.warc.wat.gz\n")
    files = expand_inputs([str(tmp_path / "local.warc.gz"), str(listing), "https://p.example/a.warc.wat.gz"],
                          "https://p.example/")
    assert files == [str(tmp_path / "local.warc.gz"), "https://p.example/a.warc.wat.gz",
                     "https://p.example/b.warc.wat.gz"]
    assert expand_inputs([str(listing)], "https://p.example/", max_files=1) == ["https://p.example/a.warc.wat.gz"]


@pytest.mark.parametrize(("content", "message"), [
    (b"crawl-data/x/wet/CC-MAIN-0001.warc.wet.gz\n", "WET file"),
    (b"\n# nothing\n", "names no files"),
    (b"\x1f\x8b\x08\x00broken", "not a readable gzip"),
    (b"\xff\xfe\x00binary", "not text"),
])
def test_a_list_that_cannot_be_a_crawl_says_why(tmp_path, content, message):
    listing = tmp_path / "bad.paths"
    listing.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        read_segment_list(str(listing))


def test_a_missing_list_is_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_segment_list(str(tmp_path / "none.paths.gz"))
