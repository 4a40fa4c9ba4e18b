"""Bad input that is not a row of the big run: unusable pools (through ``winnow run``), columns of
another type (through the download stage), a host whose slow requests would starve the healthy
ones queued behind them, and bombs in a download-only run whose memory is measured alone."""

from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from winnow.services.downloader.fetch import FetchOptions
from winnow.services.downloader.pool import prepare_job
from winnow.services.downloader.resize import ResizeOptions
from winnow.services.downloader.stage import DownloadOptions, DownloadStage
from winnow.shared.shards import read_table
from tests.corpus.conftest import LOOPBACK, run_winnow, unvalidated_strings

UIDS = [f"{i:032x}" for i in range(1, 9)]
DOWNLOAD_ONLY_RSS_LIMIT = 700 << 20  # the inflated gzip bomb alone is 1 GiB, the pixel bomb's pixels 900 MB


def _write_empty(path, kind: str) -> None:
    if kind == "parquet":
        pq.write_table(pa.table({"uid": pa.array([], pa.string()), "url": pa.array([], pa.string()),
                                 "text": pa.array([], pa.string())}), path)
    elif kind == "csv":
        path.write_text("uid,url,text\n")
    elif kind == "txt":
        path.write_text("\n\n   \n")


@pytest.mark.parametrize(("name", "kind"), [("empty.parquet", "parquet"), ("header_only.csv", "csv"),
                                            ("blank_lines.txt", "txt")])
def test_an_empty_pool_is_one_clear_line_and_exit_code_2(tmp_path, name, kind):
    pool = tmp_path / name
    _write_empty(pool, kind)
    result = run_winnow(["run", str(pool), "--out", str(tmp_path / "job"), "--no_progress"], tmp_path, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == f"winnow run: the pool {pool} has no rows: nothing to curate"
    assert "Traceback" not in result.stdout + result.stderr


def test_invalid_utf8_in_another_column_is_one_line_naming_file_column_and_row(tmp_path):
    pool = tmp_path / "pool.parquet"
    pq.write_table(pa.table({"uid": UIDS[:3], "url": ["http://example.com/a.jpg"] * 3, "text": ["a", "b", "c"],
                             "license": unvalidated_strings(["cc-by", "cc-by", b"cc-by-\xff"])}), pool)
    result = run_winnow(["run", str(pool), "--out", str(tmp_path / "job"), "--no_progress"], tmp_path, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"winnow run: cannot read {pool}: column 'license', row 2, is not valid UTF-8 "
                                     "(b'cc-by-\\xff')")
    assert "Traceback" not in result.stdout + result.stderr


@pytest.fixture(scope="module")
def download_options() -> DownloadOptions:
    return DownloadOptions(fetch=FetchOptions(timeout=1.0, total_timeout=1.5, retries=0, allow_networks=(LOOPBACK,)),
                           resize=ResizeOptions(image_size=128), thread_count=8)


def _download(tmp_path, table: pa.Table, options: DownloadOptions) -> dict[str, dict]:
    pq.write_table(table, tmp_path / "pool.parquet")
    manifest = prepare_job(str(tmp_path / "pool.parquet"), str(tmp_path / "job"), samples_per_shard=len(table))
    stage = DownloadStage(options)
    stage.setup()
    try:
        out = stage.process(manifest.pool_refs()[0])
    finally:
        stage.teardown()
    return {row["uid"]: row for row in read_table(out.uri).to_pylist()}


@pytest.mark.parametrize("column", ["text", "url"])
def test_a_binary_column_with_one_invalid_value_costs_only_that_row(tmp_path, corpus_server, download_options, column):
    urls = [corpus_server.url(f"/img/drawing_{i:02d}.png").encode() for i in range(3)]
    texts = [b"a drawing", b"caf\xe9 au lait" if column == "text" else b"another drawing", b"a third drawing"]
    if column == "url":
        urls[1] = urls[1].replace(b"drawing_01", b"dr\xe9wing")
    table = pa.table({"uid": UIDS[:3], "url": pa.array(urls, pa.binary()), "text": pa.array(texts, pa.binary())})
    rows = _download(tmp_path, table, download_options)
    expected = "invalid_caption" if column == "text" else "invalid_url"
    assert [(rows[u]["status"], rows[u]["reason"]) for u in UIDS[:3]] == [
        ("success", None), ("failed_to_download", expected), ("success", None)]
    assert rows[UIDS[0]]["text"] == "a drawing"


def test_a_stalled_request_does_not_time_out_the_healthy_ones_queued_behind_it(tmp_path, corpus_server):
    """One request at a time per host: the drip holds the host for its whole 1.5 s, and the two
    healthy images queued behind it must still get their own 1.5 s."""
    options = DownloadOptions(fetch=FetchOptions(timeout=1.0, total_timeout=1.5, retries=0, per_domain_concurrency=1,
                                                 allow_networks=(LOOPBACK,)),
                              resize=ResizeOptions(image_size=128), thread_count=4)
    urls = [corpus_server.url("/trickle/progressive.jpg?chunk=1024&delay=0.3"),
            corpus_server.url("/img/drawing_00.png"), corpus_server.url("/img/drawing_01.png")]
    started = time.monotonic()
    rows = _download(tmp_path, pa.table({"uid": UIDS[:3], "url": urls}), options)
    assert [(rows[u]["status"], rows[u]["reason"]) for u in UIDS[:3]] == [
        ("failed_to_download", "timeout"), ("success", None), ("success", None)]
    assert time.monotonic() - started < 10


def test_bombs_in_a_download_only_run_keep_its_memory_bounded(tmp_path, corpus_server):
    urls = [corpus_server.url(p) for p in ("/gzip-bomb", "/bomb.png", "/img/jpeg_bomb.jpg", "/img/gif_bomb.gif",
                                           "/huge-declared", "/img/drawing_00.png", "/img/cmyk.jpg", "/gzip-bomb")]
    pool = tmp_path / "pool.parquet"
    pq.write_table(pa.table({"uid": UIDS, "url": urls, "text": ["a caption"] * len(urls)}), pool)
    result = run_winnow(["run", str(pool), "--out", str(tmp_path / "job"), "--no_progress", "--stages", "download",
                         "--filter", "none", "--allow_networks", LOOPBACK, "--retries", "0", "--timeout", "5"],
                        tmp_path, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {row["uid"]: row for row in read_table(str(tmp_path / "job" / "downloader" / "00000000")).to_pylist()}
    assert [rows[u]["reason"] for u in UIDS] == ["too_large", "decompression_bomb", "decompression_bomb",
                                                 "decompression_bomb", "too_large", None, None, "too_large"]
    print(f"download-only run's peak RSS: {result.peak_rss_bytes / 2**20:.0f} MiB")
    assert result.peak_rss_bytes < DOWNLOAD_ONLY_RSS_LIMIT, f"{result.peak_rss_bytes / 2**20:.0f} MiB"
