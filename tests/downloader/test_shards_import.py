"""Shards one already has become a job's ``source`` ledgers in place: uids, captions, hashes, failed rows, bad input.

The input shards are written here as img2dataset writes them (tar members ``{key}.jpg|txt|json``,
a parquet with img2dataset's columns and no ``uid``), with real photos.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from winnow.services.downloader.pool import generate_uid
from winnow.services.downloader.shards_import import ShardImportStage, list_input_shards, prepare_shards_job
from winnow.services.downloader.stage import DownloadStage
from winnow.shared.curation import iter_samples
from winnow.shared.jobs import SHARDS_INPUT, SOURCE_STAGE
from winnow.shared.shards import ShardFormatError, image_source, read_stats, read_table
from tests.infra.images import skimage_photos


def _photo_bytes(index: int) -> bytes:
    from PIL import Image

    with Image.open(skimage_photos()[index]) as image:
        buffer = io.BytesIO()
        image.convert("RGB").resize((96, 64)).save(buffer, "JPEG", quality=90)
        return buffer.getvalue()


def _tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def write_img2dataset_shard(folder: Path, name: str, *, parquet: bool = True, sha256: bool = True,
                            corrupt_image: bool = False) -> dict:
    """Two kept samples and one that failed to download, as img2dataset writes them (no uid)."""
    folder.mkdir(parents=True, exist_ok=True)
    images = [_photo_bytes(0), b"\xff\xd8\xff\xe0 not really a jpeg" if corrupt_image else _photo_bytes(1)]
    rows = [
        {"caption": "a photo", "url": "http://example.com/a.jpg", "key": f"{name}0000", "status": "success",
         "error_message": None, "width": 96, "height": 64, "original_width": 960, "original_height": 640},
        {"caption": "gone", "url": "http://example.com/gone.jpg", "key": f"{name}0001",
         "status": "failed_to_download", "error_message": "HTTP Error 404", "width": None, "height": None,
         "original_width": None, "original_height": None},
        {"caption": "another photo", "url": "http://example.com/b.jpg", "key": f"{name}0002", "status": "success",
         "error_message": None, "width": 96, "height": 64, "original_width": 900, "original_height": 600},
    ]
    hashes = {}
    for row, data in zip([rows[0], rows[2]], images):
        hashes[row["key"]] = "0" * 64 if sha256 else None  # an input hash wins over the tar's bytes
        if sha256:
            row["sha256"] = hashes[row["key"]]
    members = []
    for row, data in zip([rows[0], rows[2]], images):
        members += [(f"{row['key']}.jpg", data), (f"{row['key']}.txt", row["caption"].encode()),
                    (f"{row['key']}.json", json.dumps(row).encode())]
    _tar(folder / f"{name}.tar", members)
    if parquet:
        pq.write_table(pa.Table.from_pylist(rows), folder / f"{name}.parquet")
        (folder / f"{name}_stats.json").write_text(json.dumps({"count": 3, "successes": 2}))
    return {"rows": rows, "images": images}


def _import(folder: Path, job: Path, **kwargs):
    manifest = prepare_shards_job(str(folder), str(job), **kwargs)
    stage = DownloadStage()  # the downloader imports a reference to an input shard instead of downloading
    return manifest, [stage.process(ref) for ref in manifest.pool_refs()]


def test_an_img2dataset_shard_becomes_a_ledger_that_names_its_tar(tmp_path):
    shard = write_img2dataset_shard(tmp_path / "in", "00000")
    manifest, (ref,) = _import(tmp_path / "in", tmp_path / "job")
    assert (manifest.shard_count, manifest.sample_count, manifest.first_stage) == (1, 3, SOURCE_STAGE)
    assert manifest.pool_refs()[0].stage == SHARDS_INPUT
    assert ref.stage == SOURCE_STAGE and ref.uri == str(tmp_path / "job" / "source" / "00000000")
    ledger = read_table(ref.uri)
    rows = ledger.to_pylist()
    assert [r["key"] for r in rows] == [r["key"] for r in shard["rows"]]
    assert [r["uid"] for r in rows] == [generate_uid(r["url"], r["caption"]) for r in shard["rows"]]
    assert [r["text"] for r in rows] == ["a photo", "gone", "another photo"]
    assert "caption" not in ledger.column_names
    assert [(r["status"], r["reason"], r["error_message"]) for r in rows][1] == \
        ("failed_to_download", "failed_to_download", "HTTP Error 404")
    assert rows[0]["sha256"] == "0" * 64, "the input's own hash (of the downloaded bytes) is kept"
    assert (rows[0]["width"], rows[0]["height"], rows[0]["original_width"]) == (96, 64, 960)
    # No image was copied: the ledger names the user's tar, by absolute path.
    assert not list((tmp_path / "job").rglob("*.tar"))
    source = image_source(ref.uri, ledger)
    assert source.prefix == str(tmp_path / "in" / "00000") and not source.blurred
    meta = pq.read_schema(ref.uri + ".parquet").metadata
    assert meta[b"winnow_images"] == str(tmp_path / "in" / "00000").encode()
    images = [files["jpg"] for _, files in iter_samples(ledger, source) if files]
    assert images == shard["images"]
    stats = read_stats(ref.uri)
    assert (stats.count, stats.successes, dict(stats.reasons)) == (3, 2, {"failed_to_download": 1})
    assert stats.extra["sha256_from_tar"] == 0


def test_tars_alone_take_the_json_and_txt_and_hash_the_image_bytes(tmp_path):
    shard = write_img2dataset_shard(tmp_path / "in", "00007", parquet=False, sha256=False)
    manifest, (ref,) = _import(tmp_path / "in", tmp_path / "job", images_blurred=True)
    assert manifest.sample_count == 0, "a tar alone declares no count"
    rows = read_table(ref.uri).to_pylist()
    kept = [shard["rows"][0], shard["rows"][2]]
    assert [r["key"] for r in rows] == [r["key"] for r in kept]
    assert [r["uid"] for r in rows] == [generate_uid(r["url"], r["caption"]) for r in kept]
    assert [r["sha256"] for r in rows] == [hashlib.sha256(data).hexdigest() for data in shard["images"]]
    assert read_stats(ref.uri).extra["sha256_from_tar"] == 2
    assert image_source(ref.uri).blurred, "--images_blurred is recorded in the ledger"


def test_a_uid_in_the_json_is_kept(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    row = {"uid": "ab" * 16, "url": "http://example.com/a.jpg", "caption": "x", "key": "k0", "status": "success"}
    _tar(folder / "shard.tar", [("k0.jpg", _photo_bytes(2)), ("k0.json", json.dumps(row).encode())])
    _, (ref,) = _import(folder, tmp_path / "job")
    assert read_table(ref.uri)["uid"].to_pylist() == ["ab" * 16]


def test_a_corrupt_image_is_a_failed_row_and_the_rest_of_the_shard_is_kept(tmp_path):
    write_img2dataset_shard(tmp_path / "in", "00000", corrupt_image=True)
    _, (ref,) = _import(tmp_path / "in", tmp_path / "job")
    rows = read_table(ref.uri).to_pylist()
    assert [(r["status"], r["reason"]) for r in rows] == [
        ("success", None), ("failed_to_download", "failed_to_download"), ("failed_to_resize", "decode_error")]


def test_bad_input_gets_one_clear_error_and_the_other_shards_are_imported(tmp_path):
    folder = tmp_path / "in"
    write_img2dataset_shard(folder, "00000")
    write_img2dataset_shard(folder, "00001")
    write_img2dataset_shard(folder, "00002")
    # 00001's parquet is out of step with its tar; 00002's tar is cut short
    table = pq.read_table(folder / "00001.parquet")
    pq.write_table(table.take([2, 1, 0]), folder / "00001.parquet")
    with tarfile.open(folder / "00002.tar") as tar:
        cut = tar.getmembers()[-3].offset_data + 100  # inside the last image
    (folder / "00002.tar").write_bytes((folder / "00002.tar").read_bytes()[:cut])
    manifest = prepare_shards_job(str(folder), str(tmp_path / "job"))
    stage = ShardImportStage()
    refs = manifest.pool_refs()
    assert stage.process(refs[0]).sample_count == 3
    with pytest.raises(ShardFormatError, match="00001.parquet is out of step with its tar: the parquet's kept "
                                               "sample 0 is 000010002, the tar's is 000010000"):
        stage.process(refs[1])
    with pytest.raises(ShardFormatError, match="corrupt shard tar .*00002.tar"):
        stage.process(refs[2])
    assert not (tmp_path / "job" / "source" / "00000001_stats.json").exists()


@pytest.mark.parametrize("parquet", [False, True], ids=["tar-alone", "with-parquet"])
def test_a_tar_cut_short_between_two_samples_is_refused(tmp_path, parquet):
    """Cut at a member boundary, a tar still reads as a shorter, valid archive: only its missing
    end-of-archive blocks tell, and without a parquet nothing else would."""
    folder = tmp_path / "in"
    write_img2dataset_shard(folder, "00000", parquet=parquet)
    with tarfile.open(folder / "00000.tar") as tar:
        last_sample = [m for m in tar.getmembers() if m.name.startswith("000000002")][0]
    (folder / "00000.tar").write_bytes((folder / "00000.tar").read_bytes()[:last_sample.offset])
    manifest = prepare_shards_job(str(folder), str(tmp_path / "job"))
    with pytest.raises(ShardFormatError, match=r"truncated shard tar .*00000.tar: it ends at byte \d+, after "
                                               r"sample 000000000, without the end-of-archive blocks"):
        ShardImportStage().process(manifest.pool_refs()[0])
    assert not (tmp_path / "job" / "source" / "00000000_stats.json").exists()


def test_a_folder_without_shards_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "00000.parquet").write_bytes(b"")
    with pytest.raises(ShardFormatError, match="holds no .tar shards"):
        list_input_shards(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError):
        list_input_shards(str(tmp_path / "nowhere"))


def test_winnow_run_says_in_one_line_what_is_wrong_and_curates_the_other_shards(tmp_path, capsys):
    from winnow.cli import main

    (tmp_path / "empty").mkdir()
    assert main(["run", "--shards", str(tmp_path / "empty"), "--out", str(tmp_path / "j0")]) == 2
    assert "holds no .tar shards" in capsys.readouterr().err
    assert main(["run", "--shards", str(tmp_path / "empty"), "--out", str(tmp_path / "j0"),
                 "--stages", "download", "dedup"]) == 2
    assert "leave out 'download'" in capsys.readouterr().err
    assert not (tmp_path / "j0").exists(), "nothing written"
    write_img2dataset_shard(tmp_path / "in", "00000")
    write_img2dataset_shard(tmp_path / "in", "00001")
    (tmp_path / "in" / "00001.tar").write_bytes(b"not a tar at all" * 64)
    assert main(["run", "--shards", str(tmp_path / "in"), "--out", str(tmp_path / "job"), "--stages", "dedup",
                 "--no_progress"]) == 1
    out = capsys.readouterr().out
    assert "shard 1 failed in source: corrupt shard tar" in out.replace("\n", " ")
    assert (tmp_path / "job" / "dedup" / "00000000_stats.json").exists(), "the good shard is curated"
