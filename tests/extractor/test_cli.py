"""``winnow extract`` on the command line: crawl files and segment lists to a job of pool shards."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from winnow.cli import main
from tests.extractor import pages
from tests.extractor.crawl_files import write_warc, write_wat
from tests.extractor.test_extract_files import WAT_GALLERY


def pool_pairs(job, count: int) -> list[tuple[str, str]]:
    table = pa.concat_tables([pq.read_table(job / "pool" / f"{i:08d}.parquet") for i in range(count)])
    return list(zip(table["url"].to_pylist(), table["text"].to_pylist()))


def test_extract_files_and_a_segment_list_into_a_job(tmp_path, capsys):
    first = write_warc(tmp_path / "a.warc.gz", pages.all_pages())
    (tmp_path / "cc").mkdir()
    write_wat(tmp_path / "cc" / "b.warc.wat.gz", [WAT_GALLERY])
    listing = tmp_path / "wat.paths"
    listing.write_text("b.warc.wat.gz\n")
    job = tmp_path / "job"
    code = main(["extract", str(first), str(listing), "--paths_prefix", str(tmp_path / "cc"), "--out", str(job),
                 "--no_progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "2/2 crawl files" in out and f"{len(pages.ALL_PAIRS) + 1} image-text pairs kept" in out
    assert "duplicate_in_job" in out and "missing_alt" in out and "not_a_page" in out
    assert pool_pairs(job, 2) == pages.ALL_PAIRS + [("https://static.example.com/media/q.jpg", 'Fish & chips "to go"')]
    crawl = json.loads((job / "crawl.json").read_text())
    assert crawl["files"] == [str(first), str(tmp_path / "cc" / "b.warc.wat.gz")]
    assert json.loads((job / "job.json").read_text())["shard_count"] == 2

    # The same command again resumes: nothing is extracted twice.
    before = (job / "pool" / "00000000.parquet").stat().st_mtime_ns
    assert main(["extract", str(first), str(listing), "--paths_prefix", str(tmp_path / "cc"), "--out", str(job),
                 "--no_progress"]) == 0
    assert (job / "pool" / "00000000.parquet").stat().st_mtime_ns == before


def test_several_processes_split_the_files(tmp_path):
    files = [str(write_warc(tmp_path / f"{i}.warc.gz", [pages.gallery(), pages.shift_jis()])) for i in range(3)]
    job = tmp_path / "job"
    assert main(["extract", *files, "--out", str(job), "--processes", "2", "--no_progress",
                 "--min_caption_chars", "3"]) == 0
    kept = pool_pairs(job, 3)
    assert sorted(kept) == sorted(pair for pair in pages.GALLERY_PAIRS + pages.SJIS_PAIRS if len(pair[1]) >= 3)


def test_bad_invocations_say_what_is_wrong(tmp_path, capsys):
    crawl = write_warc(tmp_path / "a.warc.gz", [pages.gallery()])
    assert main(["extract", str(crawl), "--out", str(tmp_path / "j"), "--submit"]) == 2
    assert "--submit needs --kafka" in capsys.readouterr().err
    assert main(["extract", str(tmp_path / "x.warc.wet.gz"), "--out", str(tmp_path / "j")]) == 2
    assert "WET file" in capsys.readouterr().err
    assert main(["extract", str(crawl), "--out", str(tmp_path / "j2"), "--min_caption_chars", "0"]) == 2
    assert "min_chars" in capsys.readouterr().err
