"""The resharder on real images in winnow shards: upsampling, shard sizes, stats, webdataset, blur."""

from __future__ import annotations

import argparse
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

from winnow.shared.subset import save_subset, uids_from_hex
from winnow.services.reshard import cli as reshard_cli
from winnow.shared.face_blur import SIGMA, grown_pixel_boxes
from winnow.services.reshard.resharder import ReshardConfig, reshard
from winnow.shared.shards import FAILED_TO_DOWNLOAD, SUCCESS, ShardWriter, read_stats, read_table, sample_key, shard_prefix
from tests.infra.images import skimage_images

FACE = [0.30, 0.15, 0.60, 0.45]  # roughly the astronaut's face, [x0, y0, x1, y1] in [0, 1]


def uid(i: int) -> str:
    return f"{0xabc0 + i:032x}"


def encoded(name: str, fmt: str, size: int) -> bytes:
    by_name = {p.name: p for p in skimage_images()}
    with Image.open(by_name[name]) as image:
        image = image.convert("RGB").resize((size, size))
        out = io.BytesIO()
        image.save(out, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        return out.getvalue()


@pytest.fixture(scope="module")
def images() -> dict[str, bytes]:
    return {"jpg": encoded("rocket.jpg", "JPEG", 96), "jpg2": encoded("chelsea.png", "JPEG", 96),
            "png": encoded("astronaut.png", "PNG", 200)}


def write_input_shard(root: Path | str, shard_id: int, samples: list[dict], images: dict[str, bytes]) -> None:
    """A winnow shard: kept samples in the tar, every sample in the parquet."""
    writer = ShardWriter(shard_prefix(str(root), shard_id), stage="embed", job_id="job", shard_id=shard_id)
    for index, sample in enumerate(samples):
        key = sample_key(shard_id, index, 10)
        row = {"key": key, "uid": sample["uid"], "url": f"http://example.com/{key}.jpg", "text": sample["text"],
               "status": sample.get("status", SUCCESS), "original_width": 96, "original_height": 96,
               "clip_b32_similarity_score": 0.3, "face_bboxes": sample.get("faces", [])}
        files = None
        if row["status"] == SUCCESS:
            ext = sample.get("ext", "jpg")
            files = {ext: images[sample.get("image", ext)], "txt": sample["text"].encode(),
                     "json": json.dumps({"key": key, "uid": sample["uid"], "caption": sample["text"]}).encode()}
        else:
            row["reason"] = "http_404"
        writer.add(row, files)
    writer.close()


@pytest.fixture
def pool(tmp_path, images):
    root = tmp_path / "in"
    root.mkdir()
    write_input_shard(root, 0, [
        {"uid": uid(0), "text": "a rocket on the pad"},
        {"uid": uid(1), "text": "a cat", "image": "jpg2"},
        {"uid": uid(2), "text": "an astronaut", "ext": "png", "faces": [FACE]},
        {"uid": uid(3), "text": "gone", "status": FAILED_TO_DOWNLOAD},
    ], images)
    write_input_shard(root, 1, [
        {"uid": uid(4), "text": "another rocket"},
        {"uid": uid(5), "text": "another cat", "image": "jpg2"},
        {"uid": uid(6), "text": "not wanted"},
    ], images)
    write_input_shard(root, 2, [{"uid": uid(7), "text": "unfinished shard"}], images)
    (root / "00000002_stats.json").unlink()  # its worker died before the completion marker
    # uid 1 three times, uid 4 twice; uid 3 failed, uid 7 is in an unfinished shard, uid 99 is in no shard.
    subset = [uid(0), uid(1), uid(1), uid(1), uid(2), uid(3), uid(4), uid(4), uid(5), uid(7), uid(99)]
    save_subset(uids_from_hex(subset), str(tmp_path / "subset.npy"))
    expected = Counter({uid(0): 1, uid(1): 3, uid(2): 1, uid(4): 2, uid(5): 1})
    return root, str(tmp_path / "subset.npy"), expected


def output_shards(out: Path) -> list[Path]:
    return sorted(out.glob("*.tar"))


def all_rows(out: Path) -> list[dict]:
    return [row for tar in output_shards(out) for row in pq.read_table(tar.with_suffix(".parquet")).to_pylist()]


def test_repeats_are_upsampled_with_distinct_keys(pool, tmp_path, images):
    root, subset, expected = pool
    out = tmp_path / "out"
    result = reshard(ReshardConfig(str(root), str(out), subset, shard_size=4))
    assert result.samples_written == result.expected == sum(expected.values()) == 8
    assert result.input_shards == 2 and len(result.skipped_incomplete) == 1
    rows = all_rows(out)
    assert Counter(r["uid"] for r in rows) == expected
    assert len({r["key"] for r in rows}) == len(rows)
    assert sorted(r["repeat"] for r in rows if r["uid"] == uid(1)) == [0, 1, 2]
    assert all(r["status"] == SUCCESS for r in rows)
    assert {r["source_key"] for r in rows if r["uid"] == uid(4)} == {sample_key(1, 0, 10)}
    # The tar holds exactly the parquet's samples; json keeps the uid and names the new key.
    for tar in output_shards(out):
        prefix = str(tar.with_suffix(""))
        table = read_table(prefix).to_pylist()
        samples = {key: files for key, files in _tar_samples(prefix)}
        assert list(samples) == [r["key"] for r in table]
        for row in table:
            files = samples[row["key"]]
            meta = json.loads(files["json"])
            assert meta["key"] == row["key"] and meta["uid"] == row["uid"]
            assert files["txt"].decode() == row["text"]
    rocket = next(r for r in rows if r["uid"] == uid(0))
    assert dict(_tar_samples(str(out / "00000000")))[rocket["key"]]["jpg"] == images["jpg"]  # bytes untouched


def _tar_samples(prefix: str):
    from winnow.shared.shards import iter_tar_samples

    return list(iter_tar_samples(prefix))


def test_shard_sizes_and_stats(pool, tmp_path):
    root, subset, _ = pool
    out = tmp_path / "out"
    reshard(ReshardConfig(str(root), str(out), subset, shard_size=3))
    tars = output_shards(out)
    assert [t.name for t in tars] == ["00000000.tar", "00000001.tar", "00000002.tar"]
    sizes = [read_stats(str(t.with_suffix(""))).successes for t in tars]
    assert sizes == [3, 3, 2]
    for tar in tars:
        stats = json.loads((out / f"{tar.stem}_stats.json").read_text())
        assert stats["count"] == stats["successes"] == len(read_table(str(tar.with_suffix(""))))
        assert stats["stage"] == "reshard" and stats["subset_file"] == subset
        assert set(stats["source_shards"]) <= {"00000000", "00000001"}


def test_output_is_readable_by_webdataset(pool, tmp_path):
    root, subset, expected = pool
    out = tmp_path / "out"
    result = reshard(ReshardConfig(str(root), str(out), subset, shard_size=4))
    urls = str(out / f"{{00000000..{result.output_shards - 1:08d}}}.tar")
    dataset = wds.WebDataset(urls, shardshuffle=False).decode("pil")
    samples = list(dataset)
    assert Counter(s["json"]["uid"] for s in samples) == expected
    for sample in samples:
        image = sample.get("jpg", sample.get("png"))
        assert isinstance(image, Image.Image) and image.size[0] > 0
        assert isinstance(sample["txt"], str)


def test_shuffle_buffer_mixes_the_order_reproducibly(pool, tmp_path):
    root, subset, expected = pool
    orders = {}
    for name, buffer, seed in (("plain", 0, 0), ("a", 8, 1), ("b", 8, 1), ("c", 8, 2)):
        out = tmp_path / name
        reshard(ReshardConfig(str(root), str(out), subset, shard_size=100, shuffle_buffer=buffer, seed=seed))
        orders[name] = [r["uid"] for r in all_rows(out)]
        assert Counter(orders[name]) == expected
    assert orders["a"] == orders["b"]
    assert orders["plain"] == [uid(0), uid(1), uid(1), uid(1), uid(2), uid(4), uid(4), uid(5)]
    assert orders["a"] != orders["plain"] or orders["c"] != orders["plain"]


def test_blur_changes_only_the_face_region(pool, tmp_path, images):
    root, subset, _ = pool
    out = tmp_path / "out"
    result = reshard(ReshardConfig(str(root), str(out), subset, shard_size=100, blur_faces=True))
    assert result.blurred == 1
    row = next(r for r in all_rows(out) if r["uid"] == uid(2))
    files = dict(_tar_samples(str(out / "00000000")))[row["key"]]
    before = np.asarray(Image.open(io.BytesIO(images["png"])).convert("RGB")).astype(int)
    after = np.asarray(Image.open(io.BytesIO(files["png"])).convert("RGB")).astype(int)
    height, width = before.shape[:2]
    (x0, y0, x1, y1), = grown_pixel_boxes([FACE], width, height)[0]
    longest = grown_pixel_boxes([FACE], width, height)[1]
    reach = int(np.ceil(4 * SIGMA * longest)) + 1  # the soft mask's reach beyond the grown box
    outside = np.ones((height, width), dtype=bool)
    outside[max(y0 - reach, 0):y1 + reach, max(x0 - reach, 0):x1 + reach] = False
    changed = np.abs(after - before).max(axis=-1) > 0
    assert not changed[outside].any()  # PNG is lossless: untouched pixels are bit-identical
    core = changed[y0 + reach:y1 - reach, x0 + reach:x1 - reach]
    assert core.mean() > 0.9  # the face itself is blurred
    # By default a winnow ledger's faces are blurred too (its images are not marked blurred)...
    default = tmp_path / "default"
    assert reshard(ReshardConfig(str(root), str(default), subset, shard_size=100)).blurred == 1
    row = next(r for r in all_rows(default) if r["uid"] == uid(2))
    assert dict(_tar_samples(str(default / "00000000")))[row["key"]]["png"] == files["png"]
    # ... other samples are not re-encoded, and with --no_blur_faces nothing is.
    plain = tmp_path / "plain"
    assert reshard(ReshardConfig(str(root), str(plain), subset, shard_size=100, blur_faces=False)).blurred == 0
    row = next(r for r in all_rows(plain) if r["uid"] == uid(2))
    assert dict(_tar_samples(str(plain / "00000000")))[row["key"]]["png"] == images["png"]


def test_images_already_blurred_or_without_a_winnow_ledger_are_not_blurred_by_default(tmp_path, images):
    """A source marked blurred (the blur stage's tar at rest, a DataComp download) is never blurred
    twice; an img2dataset shard (no image source in its ledger) is blurred only when asked."""
    subset = str(tmp_path / "subset.npy")
    save_subset(uids_from_hex([uid(2)]), subset)
    marked = tmp_path / "marked"
    writer = ShardWriter(shard_prefix(str(marked), 0), stage="blur", job_id="job", shard_id=0, images_blurred=True)
    writer.add({"key": "0", "uid": uid(2), "text": "x", "status": SUCCESS, "face_bboxes": [FACE]},
               {"png": images["png"]})
    writer.close()
    assert reshard(ReshardConfig(str(marked), str(tmp_path / "a"), subset, blur_faces=True)).blurred == 0
    plain = tmp_path / "img2dataset"
    plain.mkdir()
    for suffix in (".tar", "_stats.json"):
        (plain / f"00000000{suffix}").write_bytes((marked / f"00000000{suffix}").read_bytes())
    table = pq.read_table(marked / "00000000.parquet")
    pq.write_table(table.replace_schema_metadata({}), plain / "00000000.parquet")
    assert reshard(ReshardConfig(str(plain), str(tmp_path / "b"), subset)).blurred == 0
    assert reshard(ReshardConfig(str(plain), str(tmp_path / "c"), subset, blur_faces=True)).blurred == 1


def test_jpeg_blur_keeps_far_pixels_close(images):
    from winnow.shared.face_blur import blur_encoded

    data = encoded("astronaut.png", "JPEG", 200)
    blurred = blur_encoded(data, "jpg", [[0.0, 0.0, 0.2, 0.2]], quality=95)
    before = np.asarray(Image.open(io.BytesIO(data))).astype(int)
    after = np.asarray(Image.open(io.BytesIO(blurred))).astype(int)
    assert np.abs(after - before)[120:, 120:].mean() < 2.0  # re-encoding noise only
    assert np.abs(after - before)[5:35, 5:35].mean() > 4.0
    assert blur_encoded(data, "jpg", []) is data


def test_workers_write_contiguous_shards(pool, tmp_path):
    root, subset, expected = pool
    out = tmp_path / "out"
    result = reshard(ReshardConfig(str(root), str(out), subset, shard_size=2, num_workers=2))
    # Worker 0 takes input shard 0 (5 samples: 3 shards), worker 1 input shard 1 (3 samples: 2 shards).
    assert result.output_shards == 5
    assert [t.stem for t in output_shards(out)] == [f"{i:08d}" for i in range(5)]
    assert [read_stats(str(t.with_suffix(""))).successes for t in output_shards(out)] == [2, 2, 1, 2, 1]
    assert Counter(r["uid"] for r in all_rows(out)) == expected


def test_existing_output_needs_overwrite(pool, tmp_path):
    root, subset, _ = pool
    out = tmp_path / "out"
    reshard(ReshardConfig(str(root), str(out), subset, shard_size=100))
    with pytest.raises(ValueError, match="--overwrite"):
        reshard(ReshardConfig(str(root), str(out), subset, shard_size=100))
    result = reshard(ReshardConfig(str(root), str(out), subset, shard_size=4, overwrite=True))
    assert len(output_shards(out)) == result.output_shards == 2


def test_cli(pool, tmp_path):
    root, subset, expected = pool
    parser = argparse.ArgumentParser(prog="winnow")
    reshard_cli.add_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "out"
    args = parser.parse_args(["reshard", "--input_dir", str(root), "--output_dir", str(out), "--subset_file", subset,
                              "--shard_size", "5", "--shuffle_buffer", "4", "--seed", "3", "--blur_faces"])
    assert args.func(args) == 0
    assert Counter(r["uid"] for r in all_rows(out)) == expected


def test_cli_takes_datacomps_spellings(pool, tmp_path):
    """DataComp's resharder.py options: -i/-o/-s/-j, --shard-size, --shuffle-bufsize, --apply-blur, --dry-run."""
    root, subset, expected = pool
    parser = argparse.ArgumentParser(prog="winnow")
    reshard_cli.add_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "out"
    common = ["reshard", "-i", str(root), "-o", str(out), "-s", subset, "-j", "2", "--shard-size", "3"]
    dry = parser.parse_args([*common, "--dry-run", "--apply-blur"])
    assert (dry.input_dir, dry.output_dir, dry.subset_file, dry.num_workers, dry.shard_size, dry.blur_faces) == (
        str(root), str(out), subset, 2, 3, True)
    assert dry.func(dry) == 0
    assert not out.exists(), "a dry run writes nothing"
    planned = reshard(ReshardConfig(str(root), str(out), subset, shard_size=3, num_workers=2, dry_run=True))
    assert planned.expected == sum(expected.values()) and planned.samples_written == 0 and planned.output_shards > 0
    args = parser.parse_args([*common, "--input-dir", str(root), "--output-dir", str(out), "--subset-file", subset,
                              "--num-workers", "2", "--shuffle-bufsize", "4", "--apply-blur"])
    assert args.func(args) == 0
    assert Counter(r["uid"] for r in all_rows(out)) == expected
    assert len(output_shards(out)) == planned.output_shards


@pytest.mark.s3
def test_filter_and_reshard_on_s3(s3_bucket, images):
    from winnow.services.filter.apply import FilterConfig, apply_filter
    from winnow.shared.subset import uids_to_hex

    root = f"{s3_bucket}/job/embed"
    write_input_shard(root, 0, [{"uid": uid(0), "text": "a rocket"}, {"uid": uid(1), "text": "a cat", "image": "jpg2"},
                                {"uid": uid(2), "text": "gone", "status": FAILED_TO_DOWNLOAD}], images)
    subset_uri = f"{s3_bucket}/subsets/all.npy"
    result = apply_filter(FilterConfig(name="no_filter", metadata_dir=root, save_path=subset_uri))
    assert sorted(uids_to_hex(result.uids).tolist()) == [uid(0), uid(1)]
    out = f"{s3_bucket}/train"
    written = reshard(ReshardConfig(root, out, subset_uri, shard_size=10))
    assert written.samples_written == 2 and written.output_shards == 1
    assert sorted(read_table(f"{out}/00000000")["uid"].to_pylist()) == [uid(0), uid(1)]
    assert read_stats(f"{out}/00000000").successes == 2
