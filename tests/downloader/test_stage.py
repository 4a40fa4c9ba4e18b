"""DownloadStage end to end on one shard: real server, every failure route, DataComp columns."""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset
from PIL import Image

from winnow.services.downloader.pool import prepare_job
from winnow.services.downloader.resize import ResizeOptions
from winnow.services.downloader.stage import DownloadOptions, DownloadStage, download_sample
from winnow.shared.shards import FAILED_TO_DOWNLOAD, FAILED_TO_RESIZE, SUCCESS, ShardFormatError, read_table

IMAGE_SIZE = 256
WRONG_SHA256 = "0" * 64


@dataclass(frozen=True)
class Case:
    path: str | None  # a route of the image server, or an absolute URL, or None for no URL
    status: str
    reason: str | None = None
    sha256: str | None = None  # the pool's sha256 column; "served" puts the true hash of the file


def cases(token: str) -> list[Case]:
    """Good URLs and every failure route, in pool order."""
    metadata = quote("http://169.254.169.254/latest/meta-data/", safe="")
    return [
        Case("/img/large.jpg", SUCCESS),
        Case("/img/rocket.jpg", SUCCESS, sha256="served"),
        Case("/img/missing.jpg", FAILED_TO_DOWNLOAD, "http_404"),
        Case("/img/alpha.png", SUCCESS),
        Case("/status/500", FAILED_TO_DOWNLOAD, "http_500"),
        Case(f"/flaky429/{token}/coffee.png", SUCCESS),
        Case("/status/503?retry_after=100", FAILED_TO_DOWNLOAD, "rate_limited"),
        Case(f"/flaky503/{token}/rocket.jpg", SUCCESS),
        Case("/slow/5/rocket.jpg", FAILED_TO_DOWNLOAD, "timeout"),
        Case("/trickle/large.jpg", FAILED_TO_DOWNLOAD, "timeout"),
        Case("/truncated/large.jpg", FAILED_TO_DOWNLOAD, "truncated"),
        Case("/huge-declared", FAILED_TO_DOWNLOAD, "too_large"),
        Case("/img/camera.png", SUCCESS),
        Case("/optout/noai/rocket.jpg", FAILED_TO_DOWNLOAD, "opt_out"),
        Case(f"/optout/{quote('otherbot: noai', safe='')}/rocket.jpg", SUCCESS),
        Case(f"/redirect?to={metadata}", FAILED_TO_DOWNLOAD, "blocked_address"),
        Case("/redirect-chain/2/coffee.png", SUCCESS),
        Case("/redirect-chain/9/rocket.jpg", FAILED_TO_DOWNLOAD, "too_many_redirects"),
        Case("ftp://example.com/image.jpg", FAILED_TO_DOWNLOAD, "unsupported_scheme"),
        Case("http://[::1/image.jpg", FAILED_TO_DOWNLOAD, "invalid_url"),
        Case(None, FAILED_TO_DOWNLOAD, "invalid_url"),
        Case("/img/rocket.jpg", FAILED_TO_DOWNLOAD, "hash_mismatch", sha256=WRONG_SHA256),
        Case("/mislabeled/rocket.jpg", SUCCESS),
        Case("/truncated-image/large.jpg", FAILED_TO_RESIZE, "decode_error"),
        Case("/notimage", FAILED_TO_RESIZE, "not_an_image"),
        Case("/bomb.png", FAILED_TO_RESIZE, "decompression_bomb"),
    ]


def datacomp_pool(server, sample_images, rows: list[Case]) -> pa.Table:
    """A DataComp-shaped pool parquet for these cases."""
    def url(case: Case) -> str | None:
        return server.url(case.path) if case.path and case.path.startswith("/") else case.path

    def sha(case: Case) -> str | None:
        if case.sha256 == "served":
            return hashlib.sha256((sample_images.root / case.path.rsplit("/", 1)[1]).read_bytes()).hexdigest()
        return case.sha256

    n = len(rows)
    return pa.table({
        "uid": pa.array([hashlib.md5(f"uid-{i}".encode()).hexdigest() for i in range(n)], pa.string()),
        "url": pa.array([url(c) for c in rows], pa.string()),
        "text": pa.array([f"caption {i}: {c.path}" for i, c in enumerate(rows)], pa.string()),
        "original_width": pa.array([1000 + i for i in range(n)], pa.int64()),
        "original_height": pa.array([800 + i for i in range(n)], pa.int64()),
        "clip_b32_similarity_score": pa.array([0.25 + i / 1000 for i in range(n)], pa.float32()),
        "clip_l14_similarity_score": pa.array([0.3 + i / 1000 for i in range(n)], pa.float32()),
        "face_bboxes": pa.array([[[0.1, 0.2, 0.3, 0.4]] * (i % 3) for i in range(n)],
                                pa.list_(pa.list_(pa.float64()))),
        "sha256": pa.array([sha(c) for c in rows], pa.string()),
    })


@pytest.fixture(scope="module")
def download_options(fetch_options) -> DownloadOptions:
    # The pool's sha256 column is checked, as with img2dataset's --verify_hash '["sha256","sha256"]'.
    return DownloadOptions(fetch=fetch_options, resize=ResizeOptions(image_size=IMAGE_SIZE), thread_count=16,
                           verify_hash=("sha256", "sha256"))


@dataclass
class Shard:
    stage: DownloadStage
    ref: object  # the pool slice's ShardRef
    out: object  # the ShardRef process returned
    prefix: str
    pool: pa.Table
    cases: list[Case]

    def files(self) -> dict[str, Path]:
        return {ext: Path(self.prefix + ext) for ext in (".tar", ".parquet", "_stats.json")}


@pytest.fixture(scope="module")
def shard(image_server, sample_images, download_options, tmp_path_factory) -> Shard:
    root = tmp_path_factory.mktemp("download-job")
    rows = cases(token=root.name)
    pool = datacomp_pool(image_server, sample_images, rows)
    pq.write_table(pool, root / "pool.parquet")
    manifest = prepare_job(str(root / "pool.parquet"), str(root / "job"), job_id="stage-test",
                           samples_per_shard=len(rows))
    ref = manifest.pool_refs()[0]
    stage = DownloadStage(download_options)
    stage.setup()
    out = stage.process(ref)
    yield Shard(stage, ref, out, out.uri, pool, rows)
    stage.teardown()


# -- the ledger ------------------------------------------------------------------------------


def test_every_input_has_a_row_with_its_status_and_reason(shard):
    table = read_table(shard.prefix)
    assert table["uid"].to_pylist() == shard.pool["uid"].to_pylist()
    assert table["url"].to_pylist() == shard.pool["url"].to_pylist()
    got = list(zip(table["status"].to_pylist(), table["reason"].to_pylist()))
    expected = [(c.status, c.reason) for c in shard.cases]
    mismatches = [(c.path, g, e) for c, g, e in zip(shard.cases, got, expected) if g != e]
    assert not mismatches
    failed = [m for m, s in zip(table["error_message"].to_pylist(), table["status"].to_pylist()) if s != SUCCESS]
    assert all(failed), "every failure carries a message"


def test_the_returned_ref_points_at_the_shard(shard):
    assert shard.out.stage == "downloader"
    assert shard.out.sample_count == len(shard.cases)
    assert (shard.out.job_id, shard.out.shard_id) == (shard.ref.job_id, shard.ref.shard_id)
    assert all(path.exists() for path in shard.files().values())


def test_datacomp_columns_keep_their_types_and_values(shard):
    table = read_table(shard.prefix)
    schema = table.schema
    assert schema.field("uid").type == pa.string()
    assert schema.field("original_width").type == pa.int64()
    assert schema.field("original_height").type == pa.int64()
    assert schema.field("face_bboxes").type == pa.list_(pa.list_(pa.float64()))
    for column in ("clip_b32_similarity_score", "clip_l14_similarity_score", "face_bboxes", "text"):
        assert schema.field(column).type == shard.pool.schema.field(column).type
        assert table[column].to_pylist() == shard.pool[column].to_pylist(), column


def test_successes_record_the_downloaded_image(shard, sample_images):
    table = read_table(shard.prefix).to_pylist()
    for case, row in zip(shard.cases, table):
        if case.status != SUCCESS:
            continue
        assert 0 < max(row["width"], row["height"]) <= IMAGE_SIZE
        assert row["original_width"] >= row["width"] and row["original_height"] >= row["height"]
        if case.path.startswith("/img/"):
            served = (sample_images.root / case.path.rsplit("/", 1)[1]).read_bytes()
            assert row["sha256"] == hashlib.sha256(served).hexdigest()
            with Image.open(io.BytesIO(served)) as image:
                assert (row["original_width"], row["original_height"]) == image.size


def test_a_wrong_pool_sha256_is_a_hash_mismatch(shard, sample_images):
    rows = read_table(shard.prefix).to_pylist()
    served = hashlib.sha256(sample_images.small_jpeg.read_bytes()).hexdigest()
    verified = [r for c, r in zip(shard.cases, rows) if c.sha256 == "served"]
    mismatched = [r for c, r in zip(shard.cases, rows) if c.sha256 == WRONG_SHA256]
    assert [r["status"] for r in verified] == [SUCCESS]
    assert [(r["reason"], r["sha256"]) for r in mismatched] == [("hash_mismatch", served)]


# -- the tar ---------------------------------------------------------------------------------


def test_the_tar_holds_exactly_the_successes_readable_by_webdataset(shard):
    ledger = read_table(shard.prefix).to_pylist()
    kept = {r["key"]: r for r in ledger if r["status"] == SUCCESS}
    samples = list(webdataset.WebDataset(str(shard.files()[".tar"]), shardshuffle=False))

    assert [s["__key__"] for s in samples] == list(kept)
    for sample in samples:
        row = kept[sample["__key__"]]
        assert set(sample) >= {"jpg", "txt", "json"}
        assert sample["txt"].decode() == row["text"]
        meta = json.loads(sample["json"])
        assert (meta["uid"], meta["url"], meta["status"]) == (row["uid"], row["url"], SUCCESS)
        image = Image.open(io.BytesIO(sample["jpg"]))
        assert image.format == "JPEG" and image.size == (row["width"], row["height"])


def test_stats_count_what_the_ledger_holds(shard):
    stats = json.loads(shard.files()["_stats.json"].read_text())
    statuses = Counter(c.status for c in shard.cases)
    assert stats["count"] == len(shard.cases)
    assert stats["successes"] == statuses[SUCCESS] == 9
    assert stats["failed_to_download"] == statuses[FAILED_TO_DOWNLOAD]
    assert stats["failed_to_resize"] == statuses[FAILED_TO_RESIZE] == 3
    assert stats["reasons"] == dict(Counter(c.reason for c in shard.cases if c.reason))
    assert stats["stage"] == "downloader" and stats["job_id"] == "stage-test" and stats["shard_id"] == 0


# -- idempotence -----------------------------------------------------------------------------


def test_processing_a_finished_shard_again_fetches_nothing(shard, image_server):
    before = {ext: (p.stat().st_mtime_ns, p.read_bytes()) for ext, p in shard.files().items()}
    image_server.reset_stats()

    again = shard.stage.process(shard.ref)

    assert sum(image_server.hits.values()) == 0
    assert again == shard.out
    assert {ext: (p.stat().st_mtime_ns, p.read_bytes()) for ext, p in shard.files().items()} == before


def test_reprocessing_from_scratch_gives_a_byte_identical_tar(shard):
    files = shard.files()
    first_tar = files[".tar"].read_bytes()
    first_ledger = read_table(shard.prefix).select(["key", "uid", "status", "reason", "width", "height", "sha256"])
    for path in files.values():
        os.remove(path)

    shard.stage.process(shard.ref)

    assert files[".tar"].read_bytes() == first_tar
    assert read_table(shard.prefix).select(first_ledger.column_names).equals(first_ledger)


# -- shard failures and single samples ---------------------------------------------------------


def test_an_unreadable_pool_slice_fails_the_shard_and_writes_nothing(tmp_path, download_options):
    pq.write_table(pa.table({"url": ["http://127.0.0.1/x.jpg"]}), tmp_path / "pool.parquet")
    manifest = prepare_job(str(tmp_path / "pool.parquet"), str(tmp_path / "job"), samples_per_shard=1)
    ref = manifest.pool_refs()[0]
    Path(ref.uri + ".parquet").write_bytes(b"PAR1 corrupted PAR1")
    stage = DownloadStage(download_options)
    with pytest.raises(ShardFormatError, match="unreadable pool slice"):
        stage.process(ref)
    stage.teardown()
    assert not (tmp_path / "job" / "downloader").exists() or not any((tmp_path / "job" / "downloader").iterdir())


def test_download_sample_verifies_the_hash_only_when_asked(fetcher, image_server, sample_images, download_options):
    url = image_server.img_url("rocket.jpg")
    true_hash = hashlib.sha256(sample_images.small_jpeg.read_bytes()).hexdigest()
    assert download_sample(fetcher, url, download_options, true_hash).status == SUCCESS
    assert download_sample(fetcher, url, download_options, WRONG_SHA256).reason == "hash_mismatch"
    lenient = DownloadOptions(fetch=download_options.fetch, resize=download_options.resize)  # the default: no check
    assert download_sample(fetcher, url, lenient, WRONG_SHA256).status == SUCCESS


def test_download_sample_reports_sizes(fetcher, image_server, sample_images, download_options):
    outcome = download_sample(fetcher, image_server.img_url("coffee.png"), download_options)
    assert (outcome.status, outcome.extension) == (SUCCESS, "jpg")
    assert (outcome.original_width, outcome.original_height) == (600, 400)
    assert (outcome.width, outcome.height) == (IMAGE_SIZE, round(400 * IMAGE_SIZE / 600))
    assert Image.open(io.BytesIO(outcome.image)).size == (outcome.width, outcome.height)
