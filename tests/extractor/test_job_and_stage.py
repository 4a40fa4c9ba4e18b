"""Crawl jobs: one pool shard per file, duplicates dropped across files by any number of
replicas, and shards the downloader takes as they are."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from winnow.services.downloader.fetch import FetchOptions
from winnow.services.downloader.pool import generate_uid, read_pool_slice
from winnow.services.downloader.stage import DownloadOptions, DownloadStage
from winnow.services.extractor.claims import ClaimStoreUnsupported
from winnow.services.extractor.crawl_job import CrawlJob, prepare_crawl_job
from winnow.services.extractor.extract import ExtractOptions
from winnow.services.extractor.stage import ExtractStage
from winnow.shared.jobs import JobManifest
from winnow.shared.messages import make_ref
from winnow.shared.shards import ShardFormatError, read_stats, read_table
from tests.extractor.crawl_files import Page, write_warc


def caption_page(url: str, images: list[tuple[str, str]]) -> Page:
    tags = "".join(f'<img src="{src}" alt="{alt}">' for src, alt in images)
    return Page.html(url, f"<html><body><h1>{url}</h1>{tags}</body></html>")


def overlapping_files(root: Path, count: int, shared: int = 30, own: int = 10) -> tuple[list[str], set]:
    """``count`` WARC files that all hold the same ``shared`` pairs (in a different order each)
    and ``own`` pairs of their own; returns the files and every distinct pair."""
    files, distinct = [], set()
    for index in range(count):
        common = [(f"/img/common-{i}.jpg", f"Common picture {i}") for i in range(shared)]
        common = common[index % shared:] + common[:index % shared]
        mine = [(f"/img/file{index}-{i}.jpg", f"Picture {i} of file {index}") for i in range(own)]
        page = caption_page(f"http://site.example/page{index}.html", common + mine)
        files.append(str(write_warc(root / f"seg-{index:02d}.warc.gz", [page])))
        distinct |= {(f"http://site.example{src}", alt) for src, alt in common + mine}
    return files, distinct


def shard_pairs(job_root: str, count: int) -> list[tuple[str, str]]:
    table = pa.concat_tables([pq.read_table(f"{job_root}/pool/{i:08d}.parquet") for i in range(count)])
    return list(zip(table["url"].to_pylist(), table["text"].to_pylist()))


def test_each_file_becomes_the_pool_shard_the_downloader_reads(tmp_path):
    files, _ = overlapping_files(tmp_path, 3, shared=4, own=2)
    job = prepare_crawl_job(files, str(tmp_path / "job"), job_id="crawl-1")
    stage = ExtractStage()
    outs = [stage.process(ref) for ref in job.refs()]
    assert [(o.stage, o.shard_id, o.shard_count) for o in outs] == [("pool", 0, 3), ("pool", 1, 3), ("pool", 2, 3)]
    assert [o.sample_count for o in outs] == [6, 2, 2]  # the shared pairs stay with the first file
    manifest = JobManifest.load(job.job_root)
    assert (manifest.job_id, manifest.shard_count) == ("crawl-1", 3)
    table = read_pool_slice(outs[1])
    assert table.column_names == ["uid", "url", "text", "page_url", "source_file"]
    assert table["uid"].to_pylist() == [generate_uid(u, t) for u, t in zip(table["url"].to_pylist(),
                                                                         table["text"].to_pylist())]
    assert set(table["source_file"].to_pylist()) == {files[1]}
    stats = read_stats(outs[1].uri)
    assert (stats.count, stats.successes, dict(stats.reasons)) == (6, 2, {"duplicate_in_job": 4})
    assert stats.extra["records"] == 4 and stats.extra["pages"] == 1


def test_a_redelivered_file_rewrites_the_same_shard(tmp_path):
    files, _ = overlapping_files(tmp_path, 2, shared=5, own=3)
    job = prepare_crawl_job(files, str(tmp_path / "job"))
    first = ExtractStage().process(job.refs()[1])  # file 1 commits first: the shared pairs are its
    assert ExtractStage().process(job.refs()[0]).sample_count == 3  # file 0 keeps only its own
    parquet = Path(first.uri + ".parquet").read_bytes()
    Path(first.uri + "_stats.json").unlink()  # as if the replica died before its completion marker
    second = ExtractStage().process(job.refs()[1])  # a fresh replica, with no memory of the first
    assert Path(second.uri + ".parquet").read_bytes() == parquet
    assert second.sample_count == first.sample_count == 8
    # A finished shard is not extracted again: its marker answers.
    Path(files[1]).unlink()
    assert ExtractStage().process(job.refs()[1]).sample_count == 8


@pytest.mark.parametrize("where", ["local", "s3"])
def test_replicas_racing_on_one_job_keep_every_pair_exactly_once(tmp_path, where, request):
    files, distinct = overlapping_files(tmp_path, 12)
    job_root = (request.getfixturevalue("s3_bucket") + "/job") if where == "s3" else str(tmp_path / "job")
    job = prepare_crawl_job(files, job_root)
    stages = [ExtractStage() for _ in range(4)]  # four replicas, each with its own view of the claim log
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda item: stages[item[0] % 4].process(item[1]), enumerate(job.refs())))
    if where == "s3":
        import fsspec

        kept = []
        for i in range(len(files)):
            with fsspec.open(f"{job_root}/pool/{i:08d}.parquet", "rb") as handle:
                table = pq.read_table(handle)
            kept += list(zip(table["url"].to_pylist(), table["text"].to_pylist()))
    else:
        kept = shard_pairs(job_root, len(files))
    assert sorted(kept) == sorted(distinct)


def test_without_cross_file_dedup_a_pair_stays_in_every_file(tmp_path):
    files, distinct = overlapping_files(tmp_path, 3, shared=4, own=2)
    job = prepare_crawl_job(files, str(tmp_path / "job"), dedup_across_files=False)
    outs = [ExtractStage().process(ref) for ref in job.refs()]
    assert [o.sample_count for o in outs] == [6, 6, 6]
    assert not (tmp_path / "job" / "extractor").exists()


def test_the_job_decides_how_files_are_extracted_not_the_replica(tmp_path):
    page = caption_page("http://site.example/", [("/a.jpg", "Short"), ("/b.jpg", "A much longer caption")])
    job = prepare_crawl_job([str(write_warc(tmp_path / "a.warc.gz", [page]))], str(tmp_path / "job"),
                            options=ExtractOptions(min_caption_chars=10))
    replica = ExtractStage(ExtractOptions(min_caption_chars=1))
    out = replica.process(job.refs()[0])
    assert read_pool_slice(out)["text"].to_pylist() == ["A much longer caption"]
    assert CrawlJob.load(job.job_root).options.min_caption_chars == 10


def test_the_downloader_takes_an_extracted_shard_unchanged(tmp_path, web):
    names = web.names()[:3]
    page = Page.html(web.url("/pages/gallery.html"),
                     "<html><body>" + "".join(f'<img src="/img/{n}" alt="Photo {n}">' for n in names) +
                     '<img src="/status/404" alt="A missing photo"></body></html>')
    job = prepare_crawl_job([str(write_warc(tmp_path / "a.warc.gz", [page]))], str(tmp_path / "job"))
    pool_ref = ExtractStage().process(job.refs()[0])
    downloader = DownloadStage(DownloadOptions(fetch=FetchOptions(allow_networks=("127.0.0.0/8",), retries=0),
                                               thread_count=2))
    try:
        downloaded = downloader.process(pool_ref)
    finally:
        downloader.teardown()
    ledger = read_table(downloaded.uri).to_pylist()
    assert [(row["url"], row["text"]) for row in ledger] == [(web.img_url(n), f"Photo {n}") for n in names] + \
        [(web.url("/status/404"), "A missing photo")]
    assert [row["uid"] for row in ledger] == read_pool_slice(pool_ref)["uid"].to_pylist()
    assert [row["status"] for row in ledger] == ["success"] * 3 + ["failed_to_download"]
    assert {row["page_url"] for row in ledger} == {web.url("/pages/gallery.html")}  # provenance rides along


def test_resubmitting_a_job_returns_it_and_other_files_are_refused(tmp_path):
    files, _ = overlapping_files(tmp_path, 2, shared=1, own=1)
    job = prepare_crawl_job(files, str(tmp_path / "job"))
    assert prepare_crawl_job(files, str(tmp_path / "job")) == job
    assert prepare_crawl_job([], str(tmp_path / "job"), job_id=job.job_id) == job
    with pytest.raises(ValueError, match="other crawl files"):
        prepare_crawl_job(files[:1], str(tmp_path / "job"))
    with pytest.raises(ValueError, match="at least one"):
        prepare_crawl_job([], str(tmp_path / "empty"))


def test_refs_that_do_not_belong_to_the_job_are_refused(tmp_path):
    files, _ = overlapping_files(tmp_path, 2, shared=1, own=1)
    job = prepare_crawl_job(files, str(tmp_path / "job"))
    stray = make_ref(job_id=job.job_id, shard_id=0, stage="crawl", uri=files[1], sample_count=0,
                     job_root=job.job_root, shard_count=2)
    with pytest.raises(ShardFormatError, match="crawl.json"):
        ExtractStage().process(stray)
    pool_ref = make_ref(job_id=job.job_id, shard_id=0, stage="pool", uri=f"{job.job_root}/pool/00000000",
                        sample_count=0, job_root=job.job_root, shard_count=2)
    with pytest.raises(ShardFormatError, match="crawl-file refs"):
        ExtractStage().process(pool_ref)


def test_cross_file_dedup_needs_storage_with_exclusive_create(tmp_path):
    files, _ = overlapping_files(tmp_path, 1, shared=1, own=1)
    with pytest.raises(ClaimStoreUnsupported, match="local disk or S3"):
        prepare_crawl_job(files, "memory://winnow-tests/job")
    job = prepare_crawl_job(files, "memory://winnow-tests/job2", dedup_across_files=False)
    assert ExtractStage().process(job.refs()[0]).sample_count == 2
