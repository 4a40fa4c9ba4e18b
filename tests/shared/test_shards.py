"""Shard format: round trips, DataComp types, webdataset compatibility, determinism, bad input."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pytest
import webdataset as wds
from PIL import Image

from winnow.shared import shards
from winnow.shared.shards import ShardFormatError, ShardWriter, iter_tar_samples, read_stats, read_table


def _jpeg(color) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), color).save(buffer, "JPEG")
    return buffer.getvalue()


def _write_shard(prefix: str) -> shards.ShardStats:
    writer = ShardWriter(prefix, stage="downloader", job_id="job", shard_id=3,
                         extra_schema=pa.schema([("clip_b32_similarity_score", pa.float32())]))
    for index, color in enumerate(["red", "green"]):
        key = shards.sample_key(3, index, 10_000)
        row = {"key": key, "uid": f"{index:032x}", "url": f"http://x/{index}", "text": f"a {color} square",
               "status": shards.SUCCESS, "width": 32, "height": 24, "original_width": 320, "original_height": 240,
               "sha256": "ab" * 32, "clip_b32_similarity_score": 0.25 + index,
               "face_bboxes": [[0.1, 0.2, 0.3, 0.4]]}
        writer.add(row, {"jpg": _jpeg(color), "txt": row["text"].encode(), "json": json.dumps(row).encode()})
    writer.add({"key": shards.sample_key(3, 2, 10_000), "uid": "f" * 32, "url": "http://x/gone", "text": "gone",
                "status": shards.FAILED_TO_DOWNLOAD, "reason": "http_404", "error_message": "HTTP 404"})
    return writer.close(config={"image_size": 32})


def test_round_trip_keeps_every_sample_and_the_datacomp_types(tmp_path):
    prefix = str(tmp_path / "00000003")
    _write_shard(prefix)
    table = read_table(prefix)
    assert table.num_rows == 3
    assert table.column_names[: len(shards.CORE_SCHEMA)] == shards.CORE_SCHEMA.names
    assert table.schema.field("uid").type == pa.string()
    assert table.schema.field("original_width").type == pa.int64()
    assert table.schema.field("clip_b32_similarity_score").type == pa.float32()
    assert table.schema.field("face_bboxes").type == pa.list_(pa.list_(pa.float64()))
    assert table["status"].to_pylist() == ["success", "success", "failed_to_download"]
    assert table["reason"].to_pylist() == [None, None, "http_404"]
    assert table["key"].to_pylist() == ["000000030000", "000000030001", "000000030002"]
    stats = read_stats(prefix)
    assert (stats.count, stats.successes, dict(stats.reasons)) == (3, 2, {"http_404": 1})
    assert stats.extra["config"] == {"image_size": 32}
    samples = list(iter_tar_samples(prefix))
    assert [k for k, _ in samples] == ["000000030000", "000000030001"]
    assert set(samples[0][1]) == {"jpg", "txt", "json"}


def test_webdataset_reads_the_tar_as_it_is(tmp_path):
    _write_shard(str(tmp_path / "00000003"))
    dataset = wds.WebDataset(str(tmp_path / "{00000003..00000003}.tar"), shardshuffle=False).decode("pil")
    samples = list(dataset.to_tuple("__key__", "jpg", "txt", "json"))
    assert [s[0] for s in samples] == ["000000030000", "000000030001"]
    assert samples[0][1].size == (32, 24)
    assert samples[1][2] == "a green square"
    assert samples[1][3]["uid"] == f"{1:032x}"


def test_rewriting_a_shard_gives_identical_bytes(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    _write_shard(str(first / "00000003"))
    _write_shard(str(second / "00000003"))
    assert (first / "00000003.tar").read_bytes() == (second / "00000003.tar").read_bytes()
    assert (first / "00000003.parquet").read_bytes() == (second / "00000003.parquet").read_bytes()


def test_the_completion_marker_is_written_last_and_an_aborted_shard_leaves_nothing(tmp_path):
    prefix = str(tmp_path / "00000000")
    writer = ShardWriter(prefix, stage="s", job_id="j", shard_id=0)
    writer.add({"key": "0", "uid": "0" * 32, "status": shards.SUCCESS}, {"jpg": _jpeg("blue")})
    assert not shards.is_complete(prefix)
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_a_kept_sample_needs_status_success_and_statuses_are_checked(tmp_path):
    writer = ShardWriter(str(tmp_path / "00000000"), stage="s", job_id="j", shard_id=0)
    with pytest.raises(ValueError, match="only kept samples"):
        writer.add({"key": "0", "uid": "0" * 32, "status": shards.DROPPED}, {"jpg": b"x"})
    with pytest.raises(ValueError, match="status must be one of"):
        writer.add({"key": "0", "uid": "0" * 32, "status": "maybe"})
    writer.abort()


def test_unknown_schema_versions_and_corrupt_files_get_clear_errors(tmp_path):
    prefix = str(tmp_path / "00000003")
    _write_shard(prefix)
    stats_path = tmp_path / "00000003_stats.json"
    stats = json.loads(stats_path.read_text())
    stats_path.write_text(json.dumps({**stats, "schema_version": 99}))
    with pytest.raises(ShardFormatError, match="schema version 99"):
        read_stats(prefix)
    (tmp_path / "00000003.parquet").write_bytes(b"not a parquet file")
    with pytest.raises(ShardFormatError, match="unreadable shard parquet"):
        read_table(prefix)
    (tmp_path / "00000003.tar").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ShardFormatError, match="corrupt shard tar"):
        list(iter_tar_samples(prefix))


@pytest.mark.s3
def test_shards_round_trip_on_s3(s3_bucket):
    prefix = f"{s3_bucket}/job/downloader/00000003"
    _write_shard(prefix)
    assert shards.is_complete(prefix)
    assert read_table(prefix).num_rows == 3
    assert [k for k, _ in iter_tar_samples(prefix)] == ["000000030000", "000000030001"]
    assert read_stats(prefix).successes == 2
