"""Reading pools in every accepted format, and cutting them into shard slices."""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from winnow.services.downloader.pool import PoolFormatError, prepare_job, read_pool, read_pool_slice
from winnow.shared.jobs import JobManifest

ROWS = [
    {"url": "https://example.com/a.jpg", "text": "a red apple on a table"},
    {"url": "https://example.com/b.png", "text": "Ein Hund, der \"bellt\", im Schnee"},
    {"url": "https://example.com/c.jpg", "text": "multi-line\ncaption, with a comma"},
]
UID = re.compile(r"^[0-9a-f]{32}$")


def write_pool(path: Path, rows: list[dict], fmt: str, url_col: str = "url", caption_col: str = "text") -> Path:
    renamed = [{url_col: r["url"], caption_col: r["text"]} for r in rows]
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(renamed), path)
    elif fmt in ("csv", "tsv"):
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, [url_col, caption_col], delimiter="," if fmt == "csv" else "\t")
            writer.writeheader()
            writer.writerows(renamed)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in renamed), encoding="utf-8")
    elif fmt == "txt":
        path.write_text("".join(r["url"] + "\n" for r in rows), encoding="utf-8")
    return path


def datacomp_table(n: int) -> pa.Table:
    """Rows shaped like a DataComp CommonPool metadata parquet."""
    return pa.table({
        "uid": pa.array([f"{i:032x}" for i in range(7, 7 + n)], pa.string()),
        "url": pa.array([f"https://images.example.org/{i}.jpg" for i in range(n)], pa.string()),
        "text": pa.array([f"caption number {i}" for i in range(n)], pa.string()),
        "original_width": pa.array([640 + i for i in range(n)], pa.int64()),
        "original_height": pa.array([480 + i for i in range(n)], pa.int64()),
        "clip_b32_similarity_score": pa.array([0.2 + i / 100 for i in range(n)], pa.float32()),
        "clip_l14_similarity_score": pa.array([0.25 + i / 100 for i in range(n)], pa.float32()),
        "face_bboxes": pa.array([[[0.1, 0.2, 0.3, 0.4]] * (i % 3) for i in range(n)], pa.list_(pa.list_(pa.float64()))),
        "sha256": pa.array([f"{i:064x}" for i in range(n)], pa.string()),
    })


# -- formats --------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["parquet", "csv", "tsv", "jsonl", "txt"])
def test_every_format_gives_uid_url_text(tmp_path, fmt):
    pool = read_pool(str(write_pool(tmp_path / f"pool.{fmt}", ROWS, fmt)))
    assert pool.column_names[:3] == ["uid", "url", "text"]
    assert pool["url"].to_pylist() == [r["url"] for r in ROWS]
    expected_texts = [None] * len(ROWS) if fmt == "txt" else [r["text"] for r in ROWS]
    assert pool["text"].to_pylist() == expected_texts
    assert all(UID.match(uid) for uid in pool["uid"].to_pylist())


def test_format_can_be_named_when_the_extension_does_not_tell(tmp_path):
    path = write_pool(tmp_path / "pool.data", ROWS, "csv")
    with pytest.raises(PoolFormatError, match="input_format"):
        read_pool(str(path))
    assert read_pool(str(path), input_format="csv")["url"].to_pylist() == [r["url"] for r in ROWS]


def test_unknown_format_is_refused(tmp_path):
    with pytest.raises(PoolFormatError, match="input_format must be one of"):
        read_pool(str(write_pool(tmp_path / "pool.csv", ROWS, "csv")), input_format="xlsx")


@pytest.mark.parametrize("fmt", ["parquet", "csv", "tsv", "jsonl"])
def test_custom_url_and_caption_columns(tmp_path, fmt):
    path = write_pool(tmp_path / f"pool.{fmt}", ROWS, fmt, url_col="URL", caption_col="TITLE")
    pool = read_pool(str(path), url_col="URL", caption_col="TITLE")
    assert pool.column_names == ["uid", "url", "text"]
    assert pool["url"].to_pylist() == [r["url"] for r in ROWS]
    assert pool["text"].to_pylist() == [r["text"] for r in ROWS]


def test_a_caption_column_is_used_when_there_is_no_text(tmp_path):
    path = write_pool(tmp_path / "pool.jsonl", ROWS, "jsonl", caption_col="caption")
    assert read_pool(str(path))["text"].to_pylist() == [r["text"] for r in ROWS]


def test_other_columns_ride_along(tmp_path):
    path = tmp_path / "pool.csv"
    path.write_text("url,text,license,width\nhttps://e.com/1.jpg,one,cc-by,640\nhttps://e.com/2.jpg,two,cc0,480\n")
    pool = read_pool(str(path))
    assert pool.column_names == ["uid", "url", "text", "license", "width"]
    assert pool["license"].to_pylist() == ["cc-by", "cc0"]
    assert pool["width"].to_pylist() == [640, 480]


def test_max_samples_keeps_the_first_rows(tmp_path):
    pool = read_pool(str(write_pool(tmp_path / "pool.parquet", ROWS, "parquet")), max_samples=2)
    assert pool["url"].to_pylist() == [r["url"] for r in ROWS[:2]]


def test_a_directory_of_parquet_files_is_one_pool(tmp_path):
    table = datacomp_table(10)
    folder = tmp_path / "metadata"
    folder.mkdir()
    pq.write_table(table.slice(0, 6), folder / "part-0.parquet")
    pq.write_table(table.slice(6), folder / "part-1.parquet")
    pool = read_pool(str(folder))
    assert sorted(pool["uid"].to_pylist()) == sorted(table["uid"].to_pylist())


def test_a_pool_folder_with_stats_files_beside_its_parquet(tmp_path):
    """An extracted job's pool/ holds {shard}_stats.json beside each parquet: they are not pool files."""
    table = datacomp_table(4)
    for shard in range(2):
        pq.write_table(table.slice(2 * shard, 2), tmp_path / f"{shard:08d}.parquet")
        (tmp_path / f"{shard:08d}_stats.json").write_text('{"kept": 2}')
    assert read_pool(str(tmp_path))["uid"].to_pylist() == table["uid"].to_pylist()


# -- DataComp --------------------------------------------------------------------------------


def test_datacomp_parquet_is_accepted_unchanged(tmp_path):
    table = datacomp_table(6)
    path = tmp_path / "datacomp.parquet"
    pq.write_table(table, path)
    pool = read_pool(str(path))
    assert pool.schema.equals(table.schema)
    assert pool.equals(table)


# -- uids ------------------------------------------------------------------------------------


def test_missing_uid_is_generated_as_128_bit_hex_deterministically(tmp_path):
    path = write_pool(tmp_path / "pool.csv", ROWS, "csv")
    first, again = read_pool(str(path))["uid"].to_pylist(), read_pool(str(path))["uid"].to_pylist()
    assert first == again
    assert all(UID.match(uid) for uid in first)
    assert len(set(first)) == len(first)


def test_generated_uid_depends_on_url_and_caption(tmp_path):
    path = tmp_path / "pool.csv"
    path.write_text("url,text\nhttps://e.com/1.jpg,a cat\nhttps://e.com/1.jpg,a dog\nhttps://e.com/2.jpg,a cat\n")
    uids = read_pool(str(path))["uid"].to_pylist()
    assert len(set(uids)) == 3
    other_format = write_pool(tmp_path / "same.jsonl", [{"url": "https://e.com/1.jpg", "text": "a cat"}], "jsonl")
    assert read_pool(str(other_format))["uid"].to_pylist() == uids[:1]


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_invalid_utf8_in_one_caption_loses_no_row(tmp_path, fmt):
    sep = b"," if fmt == "csv" else b"\t"
    path = tmp_path / f"pool.{fmt}"
    path.write_bytes(sep.join([b"url", b"text"]) + b"\n"
                     + sep.join([b"https://e.com/1.jpg", b"fine caption"]) + b"\n"
                     + sep.join([b"https://e.com/2.jpg", b"caf\xe9 latin-1 \xff byte"]) + b"\n"
                     + sep.join([b"https://e.com/3.jpg", "caf\u00e9 in utf-8".encode()]) + b"\n")
    pool = read_pool(str(path))
    assert pool["url"].to_pylist() == ["https://e.com/1.jpg", "https://e.com/2.jpg", "https://e.com/3.jpg"]
    texts = pool["text"].to_pylist()
    assert texts[0] == "fine caption" and texts[2] == "caf\u00e9 in utf-8"
    assert texts[1].startswith("caf") and "\ufffd" in texts[1] and texts[1].endswith("byte")


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_missing_url_column_is_a_clear_error(tmp_path, fmt):
    path = write_pool(tmp_path / f"pool.{fmt}", ROWS, fmt, url_col="link")
    with pytest.raises(PoolFormatError, match=r"no url column 'url'.*'link'"):
        read_pool(str(path))


def test_missing_custom_caption_column_is_a_clear_error(tmp_path):
    path = write_pool(tmp_path / "pool.csv", ROWS, "csv")
    with pytest.raises(PoolFormatError, match="no caption column 'TITLE'"):
        read_pool(str(path), caption_col="TITLE")


@pytest.mark.parametrize("content", [
    b"", b"PAR1 this is not a parquet file PAR1", b"url,text\nhttps://e.com/1.jpg,csv in disguise\n",
])
def test_malformed_parquet_is_a_pool_format_error(tmp_path, content):
    path = tmp_path / "pool.parquet"
    path.write_bytes(content)
    with pytest.raises(PoolFormatError, match="cannot read"):
        read_pool(str(path))


def test_truncated_parquet_is_a_pool_format_error(tmp_path):
    path = tmp_path / "pool.parquet"
    pq.write_table(datacomp_table(50), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(PoolFormatError):
        read_pool(str(path))


def test_missing_pool_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.parquet"):
        read_pool(str(tmp_path / "absent.parquet"))


def test_jsonl_with_a_broken_line_is_a_pool_format_error(tmp_path):
    path = tmp_path / "pool.jsonl"
    path.write_text('{"url": "https://e.com/1.jpg"}\n{"url": "https://e.com/2.jpg"\n')
    with pytest.raises(PoolFormatError):
        read_pool(str(path))


# -- prepare_job -----------------------------------------------------------------------------


def test_prepare_job_cuts_the_pool_into_shard_slices(tmp_path):
    table = datacomp_table(25)
    pq.write_table(table, tmp_path / "pool.parquet")
    job_root = str(tmp_path / "job")

    manifest = prepare_job(str(tmp_path / "pool.parquet"), job_root, job_id="job-1", samples_per_shard=10)

    assert (manifest.job_id, manifest.shard_count, manifest.sample_count, manifest.samples_per_shard) == \
        ("job-1", 3, 25, 10)
    assert JobManifest.load(job_root) == manifest
    refs = manifest.pool_refs()
    assert [ref.sample_count for ref in refs] == [10, 10, 5]
    assert [ref.shard_id for ref in refs] == [0, 1, 2]
    slices = [read_pool_slice(ref) for ref in refs]
    assert [len(s) for s in slices] == [10, 10, 5]
    assert pa.concat_tables(slices).equals(table)
    assert sorted(os.listdir(tmp_path / "job" / "pool")) == ["00000000.parquet", "00000001.parquet",
                                                             "00000002.parquet"]


def test_prepare_job_is_idempotent_on_resubmission(tmp_path):
    write_pool(tmp_path / "pool.csv", ROWS, "csv")
    job_root = str(tmp_path / "job")
    first = prepare_job(str(tmp_path / "pool.csv"), job_root, samples_per_shard=2)
    slice_path = tmp_path / "job" / "pool" / "00000000.parquet"
    written = slice_path.stat().st_mtime_ns, slice_path.read_bytes()

    again = prepare_job(str(tmp_path / "pool.csv"), job_root, samples_per_shard=2)
    same_id = prepare_job(str(tmp_path / "pool.csv"), job_root, job_id=first.job_id, samples_per_shard=2)

    assert again == first == same_id
    assert (slice_path.stat().st_mtime_ns, slice_path.read_bytes()) == written
    with pytest.raises(ValueError, match=first.job_id):
        prepare_job(str(tmp_path / "pool.csv"), job_root, job_id="another-job")


def test_resubmitting_a_pool_keeps_its_generated_uids(tmp_path):
    write_pool(tmp_path / "pool.tsv", ROWS, "tsv")
    uids = []
    for name in ("job-a", "job-b"):
        manifest = prepare_job(str(tmp_path / "pool.tsv"), str(tmp_path / name), samples_per_shard=10)
        uids.append(read_pool_slice(manifest.pool_refs()[0])["uid"].to_pylist())
    assert uids[0] == uids[1]


def test_prepare_job_refuses_a_bad_pool_without_writing_a_manifest(tmp_path):
    (tmp_path / "pool.parquet").write_bytes(b"not parquet")
    with pytest.raises(PoolFormatError):
        prepare_job(str(tmp_path / "pool.parquet"), str(tmp_path / "job"))
    assert not JobManifest.exists(str(tmp_path / "job"))


def test_prepare_job_refuses_a_non_positive_shard_size(tmp_path):
    write_pool(tmp_path / "pool.csv", ROWS, "csv")
    with pytest.raises(ValueError, match="samples_per_shard"):
        prepare_job(str(tmp_path / "pool.csv"), str(tmp_path / "job"), samples_per_shard=0)
