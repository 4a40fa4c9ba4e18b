"""``winnow run --shards``: shards one already has give the verdicts a download of the same pool gives.

The same pool of real images (a face, a toxic caption, an exact and a near duplicate, a copy of an
evaluation image, clip art, a broken URL) is curated twice: by ``winnow run POOL`` (download, then
curate) and by ``winnow download`` (img2dataset's layout) then ``winnow run --shards``. Per uid,
status, reason, ``dropped_by`` and every score must agree, and so must the filter's subset. The
shards come as img2dataset writes them (tar + parquet + stats), as tars alone whose ``.json`` has
no uid (derived as the downloader derives it), and DataComp-style (uids, ``face_bboxes`` blurred at
download, CLIP scores), on the local disk and on SeaweedFS.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from winnow.shared.jobs import JobManifest
from winnow.shared.shards import image_source, read_table
from winnow.shared.subset import load_subset
from winnow.cli import main

pytestmark = pytest.mark.slow

STAGES = ["safety", "dedup", "blur", "embed"]
COMPARED = ("status", "reason", "dropped_by", "toxicity_score", "nsfw_score", "eval_similarity", "eval_match",
            "duplicate_of", "duplicate_similarity", "face_bboxes", "clip_l14_similarity_score")
APPROXIMATE = ("clip_l14_similarity_score",)  # CLIP in float: a batch of other size may differ in the last bits
# A kept sample's nearest earlier kept image depends on which shard dedup saw first (the run's
# partitions deliver them in either order): compared where it decided, for the duplicates.
ORDER_DEPENDENT = ("duplicate_similarity",)
SHARD = 8


def winnow(*args: str) -> None:
    assert main([*args]) == 0, f"winnow {' '.join(args)} failed"


@pytest.fixture(scope="module")
def curate_args(eval_images, tiny_clip_checkpoint, tmp_path_factory) -> list[str]:
    index = tmp_path_factory.mktemp("eval-index")
    winnow("dedup", "build-index", "--images", str(eval_images), "--out", str(index))
    return ["--clip_model", f"l14=winnow-tiny-ViT:{tiny_clip_checkpoint}", "--eval_index", str(index),
            "--filter", "clip_score", "--arch", "l14", "--fraction", "0.5", "--workers", "1", "--no_progress"]


def download_then_curate(pool: Path, out: Path, curate_args: list[str]) -> Path:
    winnow("run", str(pool), "--out", str(out), "--stages", "download", *STAGES, "--samples_per_shard", str(SHARD),
           "--allow_networks", "127.0.0.0/8", "--retries", "0", *curate_args)
    return out


def img2dataset_download(pool: Path, out: Path, *extra: str) -> Path:
    """``winnow download`` as an img2dataset user runs it, resizing as DataComp's flow does (so the
    images are the bytes ``winnow run`` keeps)."""
    winnow("download", "--url_list", str(pool), "--input_format", "parquet", "--url_col", "url",
           "--caption_col", "text", "--output_format", "webdataset", "--output_folder", str(out),
           "--image_size", "512", "--resize_mode", "keep_ratio_largest", "--resize_only_if_bigger", "True",
           "--number_sample_per_shard", str(SHARD), "--processes_count", "1", "--thread_count", "4",
           "--allow_networks", "127.0.0.0/8", "--enable_wandb", "False", "--disable_progress", "True", *extra)
    return out


def curate_shards(shards: str, out: str, curate_args: list[str], *extra: str) -> str:
    winnow("run", "--shards", shards, "--out", out, "--stages", *STAGES, *extra, *curate_args)
    return out


def final_rows(job: str) -> dict[str, dict]:
    manifest = JobManifest.load(job)
    prefixes = [f"{job}/embed/{i:08d}" for i in range(manifest.shard_count)]
    return {row["uid"]: row for prefix in prefixes for row in read_table(prefix).to_pylist()}


def assert_same_verdicts(downloaded: str, imported: str, *, only_kept_at_download: bool = False) -> None:
    theirs, ours = final_rows(downloaded), final_rows(imported)
    if only_kept_at_download:  # tars alone: the samples that failed to download are in no tar
        theirs = {uid: row for uid, row in theirs.items() if row["dropped_by"] or row["status"] == "success"}
    assert sorted(ours) == sorted(theirs)
    for uid, row in theirs.items():
        for column in COMPARED:
            if column in ORDER_DEPENDENT and row["dropped_by"] != "dedup":
                continue
            if column in APPROXIMATE and row[column] is not None:
                assert ours[uid][column] == pytest.approx(row[column], abs=1e-4), (uid, column)
            else:
                assert ours[uid][column] == row[column], (uid, column)
    reasons = {row["reason"] for row in theirs.values()}
    assert {"toxic_caption", "exact_duplicate", "near_duplicate", "eval_duplicate"} <= reasons, "every verdict is there"
    subset = load_subset(f"{downloaded}/filter/clip_score.npy")
    assert len(subset) > 0
    assert np.array_equal(load_subset(f"{imported}/filter/clip_score.npy"), subset), "the same final subset"


@pytest.fixture(scope="module")
def plain_pool(curation_pool, tmp_path_factory) -> Path:
    """The curation pool with no uid column: both paths derive the uids from url and caption."""
    pool = tmp_path_factory.mktemp("plain") / "pool.parquet"
    pq.write_table(pq.read_table(curation_pool["pool"]).drop_columns(["uid"]), pool)
    return pool


@pytest.fixture(scope="module")
def datacomp_pool(curation_pool, tmp_path_factory) -> Path:
    """DataComp's pool columns: uids, face boxes (blurred at download), CLIP scores."""
    table = pq.read_table(curation_pool["pool"])
    roles = [curation_pool["roles"][uid] for uid in table["uid"].to_pylist()]
    boxes = [[[0.35, 0.05, 0.7, 0.45]] if role == "face" else [] for role in roles]
    scores = np.linspace(0.1, 0.4, len(roles)).astype(np.float32)
    table = table.set_column(0, "uid", pa.array([f"{(i * 7919 + 13):032x}" for i in range(len(roles))]))
    table = table.append_column("face_bboxes", pa.array(boxes, pa.list_(pa.list_(pa.float64()))))
    table = table.append_column("clip_b32_similarity_score", pa.array(scores))
    pool = tmp_path_factory.mktemp("datacomp") / "pool.parquet"
    pq.write_table(table, pool)
    return pool


@pytest.fixture(scope="module")
def plain_downloaded(plain_pool, curate_args, tmp_path_factory) -> str:
    return str(download_then_curate(plain_pool, tmp_path_factory.mktemp("plain-run") / "job", curate_args))


@pytest.fixture(scope="module")
def img2dataset_shards(plain_pool, tmp_path_factory) -> Path:
    return img2dataset_download(plain_pool, tmp_path_factory.mktemp("img2dataset") / "shards")


@pytest.fixture(scope="module")
def datacomp_downloaded(datacomp_pool, curate_args, tmp_path_factory) -> str:
    return str(download_then_curate(datacomp_pool, tmp_path_factory.mktemp("dc-run") / "job", curate_args))


@pytest.fixture(scope="module")
def datacomp_shards(datacomp_pool, tmp_path_factory) -> Path:
    """As DataComp's download writes them: 8-digit shard names, the pool's columns kept, faces blurred."""
    return img2dataset_download(datacomp_pool, tmp_path_factory.mktemp("dc-shards") / "shards",
                                "--oom_shard_count", "8", "--bbox_col", "face_bboxes", "--save_additional_columns",
                                '["uid","face_bboxes","clip_b32_similarity_score"]')


def test_img2dataset_output_gives_the_verdicts_of_download_then_curate(plain_downloaded, img2dataset_shards,
                                                                       curate_args, tmp_path):
    job = curate_shards(str(img2dataset_shards), str(tmp_path / "job"), curate_args)
    assert_same_verdicts(plain_downloaded, job)
    assert any(row["face_bboxes"] for row in final_rows(job).values()), "the astronaut's face was found"
    # The images were read where they were: the job holds no tar, its ledgers name the user's.
    assert not list(Path(job).rglob("*.tar")) or all("reshard" in str(p) for p in Path(job).rglob("*.tar"))
    assert image_source(f"{job}/embed/00000000").prefix == str(img2dataset_shards / "00000")
    failed = [row for row in final_rows(job).values() if row["status"] == "failed_to_download"]
    assert [row["reason"] for row in failed] == ["http_404"], "the parquet's failed row is carried with its reason"


def test_tars_alone_without_uids_give_the_same_verdicts(plain_downloaded, img2dataset_shards, curate_args, tmp_path):
    """img2dataset without a uid column: only tars, whose .json has no uid; it is derived as the
    downloader derives it."""
    bare = tmp_path / "bare"
    bare.mkdir()
    for path in sorted(img2dataset_shards.glob("*.tar")):
        with tarfile.open(path) as source, tarfile.open(bare / path.name, "w") as target:
            for member in source.getmembers():
                data = source.extractfile(member).read()
                if member.name.endswith(".json"):
                    data = json.dumps({k: v for k, v in json.loads(data).items() if k != "uid"}).encode()
                    member.size = len(data)
                target.addfile(member, io.BytesIO(data))
    job = curate_shards(str(bare), str(tmp_path / "job"), curate_args)
    assert_same_verdicts(plain_downloaded, job, only_kept_at_download=True)


def test_datacomp_shards_give_the_same_verdicts_and_the_same_resharded_images(datacomp_downloaded, datacomp_shards,
                                                                             curate_args, tmp_path):
    job = curate_shards(str(datacomp_shards), str(tmp_path / "job"), curate_args, "--images_blurred")
    assert_same_verdicts(datacomp_downloaded, job)
    rows = final_rows(job)
    assert not any(row["face_bboxes"] for row in rows.values()), "the face the pool named was blurred at download"
    assert {r["clip_b32_similarity_score"] for r in rows.values()} == \
        {r["clip_b32_similarity_score"] for r in final_rows(datacomp_downloaded).values()}, "DataComp's columns ride along"
    assert image_source(f"{job}/source/00000000").blurred, "--images_blurred is recorded"
    assert _resharded_images(job) == _resharded_images(datacomp_downloaded)


def test_datacomp_shards_on_s3_give_the_same_verdicts(datacomp_downloaded, datacomp_shards, curate_args, s3_server,
                                                      s3_bucket, tmp_path):
    """The shards on SeaweedFS, read there (the job is local: winnow run's dedup registry needs a local disk)."""
    fs = fsspec.filesystem("s3", **s3_server.storage_options)
    fs.put(str(datacomp_shards) + "/", f"{s3_bucket[len('s3://'):]}/shards/", recursive=True)
    job = curate_shards(f"{s3_bucket}/shards", str(tmp_path / "job"), curate_args, "--images_blurred")
    assert_same_verdicts(datacomp_downloaded, job)
    assert image_source(f"{job}/embed/00000000").prefix == f"{s3_bucket}/shards/00000000"
    assert _resharded_images(job) == _resharded_images(datacomp_downloaded)


def _resharded_images(job: str) -> dict[str, bytes]:
    """uid -> the image bytes of the resharded subset."""
    found = {}
    fs, root = fsspec.core.url_to_fs(f"{job}/reshard")
    for path in sorted(p for p in fs.find(root) if p.endswith(".tar")):
        with fs.open(path, "rb") as handle, tarfile.open(fileobj=handle) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        for name, data in members.items():
            if name.endswith(".json"):
                key = name[: -len(".json")]
                found[json.loads(data)["uid"]] = members[f"{key}.jpg"]
    return found
