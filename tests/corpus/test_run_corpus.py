"""The bad-input corpus through ``winnow run``: one pool of hostile rows among good ones, run once.

Every kind of bad input a web-scale pool brings (broken, odd and hostile images, hostile
servers, hostile URLs, odd and invalid captions, missing and repeated uids) is a row of one pool
of two shards, downloaded from the tests' image server and curated by safety, dedup and blur,
then filtered. Each case asserts the exact status and reason of its row in the last ledger; the
good rows of the same shards must all be kept, the run must finish cleanly and within its
timeouts, and its peak memory must stay bounded although the pool holds a gzip bomb and pixel
bombs.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from winnow.shared.proto import downloader_pb2, downloader_pb2_grpc
from winnow.shared.shards import read_table
from tests.e2e.processes import ServiceProcess, free_port
from tests.corpus.conftest import LOOPBACK, run_winnow, unvalidated_strings

OK = ("success", None)
FETCH, RESIZE, DROPPED = "failed_to_download", "failed_to_resize", "dropped"
TIMEOUT_S, TOTAL_TIMEOUT_S = 1.0, 2.0
PEAK_RSS_LIMIT = 2 << 30  # every offline model is loaded (about 1 GiB); an inflated gzip bomb alone is 1 GiB more


@dataclass(frozen=True)
class Case:
    id: str
    url: str | bytes | None  # "{base}" is the image server; "{refused}" a port where nothing listens
    expect: tuple[str, str | None]
    caption: str | bytes | None = "a drawing on a white background"
    uid: str | None = "auto"  # "auto": md5 of the id; "same-as:<id>": that case's uid


_drawing = iter(range(40))


def drawing() -> str:
    """A distinct real drawing for each row that should be kept (so dedup keeps every one)."""
    return f"{{base}}/img/drawing_{next(_drawing):02d}.png"


def image(name: str) -> str:
    return f"{{base}}/img/{name}"


def redirect_to(target: str) -> str:
    return "{base}/redirect?to=" + quote(target, safe="")


FIRST_SHARD = [
    # -- images that are odd but whole: kept ------------------------------------------------------
    Case("cmyk_jpeg", image("cmyk.jpg"), OK),
    Case("png_16_bit", image("gray16.png"), OK),
    Case("palette_with_alpha", image("palette_alpha.png"), OK),
    Case("animated_gif", image("animated.gif"), OK),
    Case("jpeg_missing_only_its_end_marker", image("no_eoi.jpg"), OK),
    Case("progressive_jpeg", image("progressive.jpg"), OK),
    Case("grayscale_jpeg", image("gray.jpg"), OK),
    Case("gray_with_alpha_png", image("gray_alpha.png"), OK),
    Case("webp", image("photo.webp"), OK),
    Case("bmp", image("photo.bmp"), OK),
    Case("tiff", image("photo.tiff"), OK),
    Case("exif_rotated_jpeg", image("exif_rotated.jpg"), OK),
    Case("jpeg_with_bytes_after_its_end", image("trailing_junk.jpg"), OK),
    Case("rgba_png", image("rgba.png"), OK),
    Case("ico", image("icon.ico"), OK),
    Case("one_pixel_png", image("one_pixel.png"), OK),
    Case("jpeg_bytes_named_png", image("mislabeled.png"), OK),
    # -- repeated uids: the first is kept, the next one in the shard is not fetched ---------------
    Case("uid_first_of_two_in_a_shard", drawing(), OK),
    Case("uid_repeated_in_the_same_shard", drawing(), (FETCH, "duplicate_uid"),
         uid="same-as:uid_first_of_two_in_a_shard"),
    Case("uid_first_of_two_across_shards", drawing(), OK),
    # -- broken images: refused, each for its reason ----------------------------------------------
    Case("truncated_jpeg", image("truncated.jpg"), (RESIZE, "decode_error")),
    Case("truncated_png", image("truncated.png"), (RESIZE, "decode_error")),
    Case("png_with_corrupt_data", image("corrupt_idat.png"), (RESIZE, "decode_error")),
    Case("jpeg_cut_by_the_server", "{base}/truncated-image/progressive.jpg", (RESIZE, "decode_error")),
    Case("empty_body", image("empty.jpg"), (RESIZE, "not_an_image")),
    Case("svg", image("drawing.svg"), (RESIZE, "not_an_image")),
    Case("pdf_named_jpeg", image("pdf_as.jpg"), (RESIZE, "not_an_image")),
    Case("html_served_as_jpeg", "{base}/notimage", (RESIZE, "not_an_image")),
    Case("pixel_bomb_png", "{base}/bomb.png", (RESIZE, "decompression_bomb")),
    Case("pixel_bomb_jpeg_header", image("jpeg_bomb.jpg"), (RESIZE, "decompression_bomb")),
    Case("pixel_bomb_gif_header", image("gif_bomb.gif"), (RESIZE, "decompression_bomb")),
    Case("gzip_bomb", "{base}/gzip-bomb", (FETCH, "too_large")),
    Case("declared_10_gb", "{base}/huge-declared", (FETCH, "too_large")),
    # -- hostile or failing servers ---------------------------------------------------------------
    Case("http_404", "{base}/status/404", (FETCH, "http_404")),
    Case("http_403", "{base}/status/403", (FETCH, "http_403")),
    Case("http_410", "{base}/status/410", (FETCH, "http_410")),
    Case("http_500", "{base}/status/500", (FETCH, "http_500")),
    Case("http_429", "{base}/status/429?retry_after=5", (FETCH, "http_429")),
    Case("redirect_without_location", "{base}/status/302", (FETCH, "http_302")),
    Case("stall_before_headers", "{base}/slow/30/rocket.jpg", (FETCH, "timeout")),
    Case("drip_feed", "{base}/trickle/progressive.jpg?chunk=2048&delay=0.5", (FETCH, "timeout")),
    Case("stall_inside_the_body", "{base}/trickle/progressive.jpg?chunk=4096&delay=30", (FETCH, "timeout")),
    Case("connection_closed_early", "{base}/truncated/progressive.jpg", (FETCH, "truncated")),
    Case("connection_refused", "{refused}", (FETCH, "connection_refused")),
    Case("opt_out_header", "{base}/optout/noai/rocket.jpg", (FETCH, "opt_out")),
]

SECOND_SHARD = [
    # -- redirects ----------------------------------------------------------------------------------
    Case("redirect_loop", "{base}/loop/a", (FETCH, "too_many_redirects")),
    Case("redirect_chain_too_long", "{base}/redirect-chain/9/rocket.jpg", (FETCH, "too_many_redirects")),
    Case("redirect_chain_within_limit", "{base}/redirect-chain/2/drawing_39.png", OK),
    Case("redirect_to_cloud_metadata", redirect_to("http://169.254.169.254/latest/meta-data/"),
         (FETCH, "blocked_address")),
    Case("redirect_to_private_10", redirect_to("http://10.0.0.1/a.jpg"), (FETCH, "blocked_address")),
    Case("redirect_to_private_192_168", redirect_to("http://192.168.1.1/a.jpg"), (FETCH, "blocked_address")),
    Case("redirect_to_cgnat", redirect_to("http://100.64.0.1/a.jpg"), (FETCH, "blocked_address")),
    Case("redirect_to_ipv6_loopback", redirect_to("http://[::1]/a.jpg"), (FETCH, "blocked_address")),
    Case("redirect_to_ipv6_unique_local", redirect_to("http://[fd00::1]/a.jpg"), (FETCH, "blocked_address")),
    Case("redirect_to_file_scheme", redirect_to("file:///etc/passwd"), (FETCH, "unsupported_scheme")),
    # -- hostile URLs ---------------------------------------------------------------------------------
    Case("cloud_metadata_directly", "http://169.254.169.254/latest/meta-data/iam/", (FETCH, "blocked_address")),
    Case("gcp_metadata_by_address", "http://[fd00:ec2::254]/latest/meta-data/", (FETCH, "blocked_address")),
    Case("private_address_directly", "http://192.168.0.10/image.jpg", (FETCH, "blocked_address")),
    Case("unspecified_address", "http://0.0.0.0/image.jpg", (FETCH, "blocked_address")),
    Case("ftp_scheme", "ftp://example.com/image.jpg", (FETCH, "unsupported_scheme")),
    Case("file_scheme", "file:///etc/passwd", (FETCH, "unsupported_scheme")),
    Case("data_scheme", "data:image/png;base64,iVBORw0KGgo=", (FETCH, "unsupported_scheme")),
    Case("javascript_scheme", "javascript:alert(1)", (FETCH, "unsupported_scheme")),
    Case("gopher_scheme", "gopher://127.0.0.1:70/_GET", (FETCH, "unsupported_scheme")),
    Case("no_scheme", "just some words", (FETCH, "unsupported_scheme")),
    Case("no_host", "http://", (FETCH, "invalid_url")),
    Case("unclosed_ipv6_bracket", "http://[::1/image.jpg", (FETCH, "invalid_url")),
    Case("empty_url", "", (FETCH, "invalid_url")),
    Case("blank_url", "   ", (FETCH, "invalid_url")),
    Case("null_url", None, (FETCH, "invalid_url")),
    Case("url_not_utf8", b"{base}/img/caf\xe9.png", (FETCH, "invalid_url")),
    Case("url_with_surrounding_spaces", "  " + drawing() + "  ", OK),
    Case("url_with_tab_and_newline", "\t" + drawing() + "\n", OK),
    Case("url_with_upper_case_scheme", "HTTP://{host}" + drawing().removeprefix("{base}"), OK),
    Case("url_with_fragment", drawing() + "#section", OK),
    Case("url_with_query", drawing() + "?w=100&h=100", OK),
    # -- captions ---------------------------------------------------------------------------------------
    Case("caption_emoji", drawing(), OK, caption="a cat 🐱 on a rocket 🚀 with a rainbow 🌈👩‍👩‍👧"),
    Case("caption_right_to_left", drawing(), OK, caption="قطة على السطح في الليل חתול על הגג"),
    Case("caption_bidi_override", drawing(), OK, caption="harmless \u202egpj.exe\u202c caption"),
    Case("caption_very_long", drawing(), OK, caption="a drawing of a small house " * 4000),
    Case("caption_control_characters", drawing(), OK, caption="bell\x07 escape\x1b[31m red\x1b[0m tab\tend"),
    Case("caption_nul_character", drawing(), OK, caption="before\x00after the nul"),
    Case("caption_newlines", drawing(), OK, caption="line one\nline two\r\nline three"),
    Case("caption_combining_marks", drawing(), OK, caption="z\u0351\u0308\u0316a\u0300\u0301l\u0489go text"),
    Case("caption_null", drawing(), OK, caption=None),
    Case("caption_empty", drawing(), OK, caption=""),
    Case("caption_whitespace_only", drawing(), OK, caption=" \t \n "),
    Case("caption_not_utf8", drawing(), (FETCH, "invalid_caption"), caption=b"caf\xe9 au lait"),
    Case("caption_utf16_surrogate", drawing(), (FETCH, "invalid_caption"), caption=b"cesu \xed\xa0\x80 pair"),
    # -- uids ---------------------------------------------------------------------------------------------
    Case("uid_null", drawing(), (FETCH, "invalid_uid"), uid=None),
    Case("uid_empty", drawing(), (FETCH, "invalid_uid"), uid=""),
    Case("uid_not_hex", drawing(), (DROPPED, "invalid_uid"), uid="not-a-datacomp-uid"),
    Case("uid_repeated_in_another_shard", drawing(), (FETCH, "duplicate_uid"),
         uid="same-as:uid_first_of_two_across_shards"),
]

CASES = FIRST_SHARD + SECOND_SHARD
PADDING = len(SECOND_SHARD) - len(FIRST_SHARD)  # good rows that even the shards out
assert len({c.id for c in CASES}) == len(CASES)


def _uid(case: Case) -> str | None:
    if case.uid == "auto":
        return hashlib.md5(case.id.encode()).hexdigest()
    if case.uid is not None and case.uid.startswith("same-as:"):
        return hashlib.md5(case.uid.removeprefix("same-as:").encode()).hexdigest()
    return case.uid


def _fill(value, base: str, host: str, refused: str):
    if isinstance(value, bytes):
        return value.replace(b"{base}", base.encode())
    if isinstance(value, str):
        return value.replace("{base}", base).replace("{host}", host).replace("{refused}", refused)
    return value


def write_pool(path: Path, base: str, refused: str) -> list[Case]:
    """The pool as a non-validating writer leaves it: string columns may hold invalid UTF-8."""
    host = base.removeprefix("http://")
    padding = [Case(f"good_row_{i}", f"{{base}}/img/drawing_{30 + i:02d}.png", OK) for i in range(PADDING)]
    rows = FIRST_SHARD + padding + SECOND_SHARD
    pq.write_table(pa.table({
        "uid": pa.array([_uid(c) for c in rows], pa.string()),
        "url": unvalidated_strings([_fill(c.url, base, host, refused) for c in rows]),
        "text": unvalidated_strings([c.caption for c in rows]),
        "case": pa.array([c.id for c in rows], pa.string()),
    }), path)
    return rows


@dataclass
class CorpusRun:
    rows: list[Case]
    job: Path
    result: object
    last: dict[str, dict]  # case id -> its row in the last stage's ledger
    downloaded: dict[str, dict]  # case id -> its row in the downloader's ledger


@pytest.fixture(scope="module")
def corpus_run(corpus_server, refused_url, tmp_path_factory) -> CorpusRun:
    assert corpus_server.base_url.startswith("http://127.0.0.1:")
    work = tmp_path_factory.mktemp("corpus-run")
    rows = write_pool(work / "pool.parquet", corpus_server.base_url, refused_url)
    result = run_winnow(["run", str(work / "pool.parquet"), "--out", str(work / "job"), "--no_progress",
                         "--samples_per_shard", str(len(rows) // 2), "--allow_networks", LOOPBACK,
                         "--timeout", str(TIMEOUT_S), "--total_timeout", str(TOTAL_TIMEOUT_S), "--retries", "0"],
                        work, timeout=300)
    job = work / "job"
    return CorpusRun(rows, job, result, _ledger(job, "blur"), _ledger(job, "downloader"))


def _ledger(job: Path, stage: str) -> dict[str, dict]:
    rows = []
    for prefix in sorted((job / stage).glob("*.parquet")):
        rows += read_table(str(prefix.with_suffix(""))).to_pylist()
    return {row["case"]: row for row in rows}


def _members(job: Path, stage: str) -> dict[str, dict[str, bytes]]:
    found: dict[str, dict[str, bytes]] = {}
    for path in sorted((job / stage).glob("*.tar")):
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                key, _, extension = member.name.partition(".")
                found.setdefault(key, {})[extension] = tar.extractfile(member).read()
    return found


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 60


def test_the_run_finishes_cleanly(corpus_run):
    result = corpus_run.result
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    assert "failed in" not in result.stdout  # no shard was dead-lettered


def test_every_pool_row_is_in_the_last_ledger_once(corpus_run):
    assert sorted(corpus_run.last) == sorted(c.id for c in corpus_run.rows)
    assert len(corpus_run.last) == len(corpus_run.rows)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_each_case_has_its_exact_status_and_reason(corpus_run, case):
    row = corpus_run.last[case.id]
    assert (row["status"], row["reason"]) == case.expect, row.get("error_message")


def test_the_good_rows_of_both_shards_are_all_kept(corpus_run):
    good = [c.id for c in corpus_run.rows if c.expect == OK]
    assert len(good) >= 35
    assert {c: corpus_run.last[c]["status"] for c in good} == dict.fromkeys(good, "success")


def test_peak_memory_stays_bounded_with_bombs_in_the_pool(corpus_run):
    print(f"winnow run's peak RSS: {corpus_run.result.peak_rss_bytes / 2**20:.0f} MiB")
    assert corpus_run.result.peak_rss_bytes < PEAK_RSS_LIMIT, f"{corpus_run.result.peak_rss_bytes / 2**20:.0f} MiB"


def test_kept_samples_have_a_caption_file_even_without_a_caption(corpus_run):
    members = _members(corpus_run.job, "downloader")  # the image source the last ledger names
    kept = {case: row for case, row in corpus_run.last.items() if row["status"] == "success"}
    assert all("txt" in members[row["key"]] for row in kept.values())
    assert members[kept["caption_null"]["key"]]["txt"] == b""
    assert members[kept["caption_emoji"]["key"]]["txt"].decode() == _case("caption_emoji").caption
    assert members[kept["caption_nul_character"]["key"]]["txt"] == b"before\x00after the nul"


def test_odd_images_are_decoded_to_what_they_show(corpus_run):
    """A 16-bit PNG is not clipped to white, a CMYK JPEG not inverted, alpha matted on white."""
    members = _members(corpus_run.job, "downloader")  # the image source the last ledger names

    def pixels(case: str) -> np.ndarray:
        files = members[corpus_run.last[case]["key"]]
        return np.asarray(Image.open(io.BytesIO(files["jpg"])).convert("L"), dtype=float)

    assert 60 < pixels("png_16_bit").mean() < 200 and pixels("png_16_bit").std() > 30
    assert pixels("cmyk_jpeg").std() > 30
    assert pixels("jpeg_missing_only_its_end_marker").std() > 20


def test_rows_refused_before_fetching_name_what_was_wrong(corpus_run):
    ledger = corpus_run.downloaded
    assert "is also pool row" in ledger["uid_repeated_in_another_shard"]["error_message"]
    assert "not valid UTF-8" in ledger["caption_not_utf8"]["error_message"]
    assert ledger["caption_not_utf8"]["text"] is None
    assert ledger["uid_null"]["uid"] is None


def test_stats_count_the_new_reasons(corpus_run):
    reasons: dict[str, int] = {}
    for path in (corpus_run.job / "downloader").glob("*_stats.json"):
        for reason, count in json.loads(path.read_text())["reasons"].items():
            reasons[reason] = reasons.get(reason, 0) + count
    assert reasons["duplicate_uid"] == 2 and reasons["invalid_uid"] == 2 and reasons["invalid_caption"] == 2


def _case(case_id: str) -> Case:
    return next(c for c in CASES if c.id == case_id)


@pytest.mark.kafka
def test_the_downloader_service_gives_every_row_the_reason_winnow_run_gave(corpus_run, corpus_server, refused_url,
                                                                           kafka_bootstrap, unique, tmp_path):
    """The same pool through the downloader service, as a client submits it (gRPC, real Kafka): every row
    of its ledger has the status and reason that ``winnow run``'s downloader gave it, and no shard is lost."""
    write_pool(tmp_path / "pool.parquet", corpus_server.base_url, refused_url)
    port = free_port()
    env = {**os.environ,
           "WINNOW_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
           "WINNOW_INPUT_TOPIC": f"winnow.shards.pool.{unique}",
           "WINNOW_OUTPUT_TOPIC": f"winnow.shards.downloader.{unique}",
           "WINNOW_CONSUMER_GROUP": f"downloader-{unique}",
           "WINNOW_GRPC_ADDRESS": f"127.0.0.1:{port}",
           "WINNOW_METRICS_PORT": "0",
           "WINNOW_OUTPUT_URI": str(tmp_path / "jobs"),
           "WINNOW_READ_ROOTS": json.dumps([str(tmp_path)]),
           "WINNOW_ALLOW_NETWORKS": json.dumps([LOOPBACK]),
           "WINNOW_SAMPLES_PER_SHARD": str(len(corpus_run.rows) // 2),
           "WINNOW_TIMEOUT": str(TIMEOUT_S), "WINNOW_TOTAL_TIMEOUT": str(TOTAL_TIMEOUT_S), "WINNOW_RETRIES": "0",
           "WINNOW_TOPIC_PARTITIONS": "2"}
    service = ServiceProcess("winnow.services.downloader", env, tmp_path / "downloader.log", port).start()
    try:
        service.wait_healthy()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = downloader_pb2_grpc.DownloaderStub(channel)
            job = stub.SubmitPool(downloader_pb2.SubmitPoolRequest(pool_uri=str(tmp_path / "pool.parquet")))
            deadline = time.monotonic() + 180
            while not stub.GetJob(downloader_pb2.GetJobRequest(job_id=job.job_id)).done:
                assert time.monotonic() < deadline, service.log_tail()
                assert service.process.poll() is None, service.log_tail()
                time.sleep(0.5)
    finally:
        service.stop()
    served = _ledger(Path(job.job_root), "downloader")
    assert sorted(served) == sorted(corpus_run.downloaded)
    assert len({row["reason"] for row in served.values()}) >= 15  # the corpus's many kinds reached the service
    differ = {case: ((row["status"], row["reason"]), (corpus_run.downloaded[case]["status"],
                                                      corpus_run.downloaded[case]["reason"]))
              for case, row in served.items()
              if (row["status"], row["reason"]) != (corpus_run.downloaded[case]["status"],
                                                    corpus_run.downloaded[case]["reason"])}
    assert differ == {}
