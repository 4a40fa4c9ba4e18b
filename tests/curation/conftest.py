"""A downloaded job whose pool holds every case the curation stages must handle, with real images.

- a face (scikit-image ``astronaut``);
- toxic and plain captions;
- the same image twice (exact duplicate) and a resized, recompressed copy (near duplicate);
- a resized, recompressed copy of an *evaluation* image (``coffee``, in the eval folder);
- a broken URL (carried through every stage as a failed row).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from winnow.services.downloader.fetch import FetchOptions
from winnow.services.downloader.pool import prepare_job
from winnow.services.downloader.stage import DownloadOptions, DownloadStage
from tests.infra.images import near_copy, openclipart_images, skimage_photos

TOXIC = "you are a stupid worthless idiot and everyone hates you"


@pytest.fixture(scope="session")
def eval_images(tmp_path_factory) -> Path:
    """An evaluation set: two real photos and a few clip-art images."""
    folder = tmp_path_factory.mktemp("eval")
    by_name = {p.stem: p for p in skimage_photos()}
    for name in ("coffee", "rocket"):
        (folder / f"{name}.png").write_bytes(by_name[name].read_bytes())
    for index, path in enumerate(openclipart_images(limit=6)):
        (folder / f"clipart_{index}.png").write_bytes(path.read_bytes())
    return folder


@pytest.fixture(scope="session")
def curation_pool(web, web_root, tmp_path_factory) -> dict:
    """A pool parquet over the web server, and what each row is."""
    by_name = {p.stem: p for p in skimage_photos()}
    (web_root / "cur_astronaut.png").write_bytes(by_name["astronaut"].read_bytes())
    (web_root / "cur_chelsea.png").write_bytes(by_name["chelsea"].read_bytes())
    (web_root / "cur_chelsea_copy.jpg").write_bytes(near_copy(by_name["chelsea"], 0.8, 70))
    (web_root / "cur_coffee_copy.jpg").write_bytes(near_copy(by_name["coffee"], 0.7, 60))
    (web_root / "cur_motorcycle.png").write_bytes(by_name["motorcycle_left"].read_bytes()
                                                  if "motorcycle_left" in by_name else by_name["horse"].read_bytes())
    clipart = openclipart_images(limit=40)[7:13]
    for index, path in enumerate(clipart):
        (web_root / f"cur_clip_{index}.png").write_bytes(path.read_bytes())
    rows = [
        ("face", "cur_astronaut.png", "an astronaut in front of a flag"),
        ("toxic", "cur_motorcycle.png", TOXIC),
        ("original", "cur_chelsea.png", "a tabby cat"),
        ("exact_copy", "cur_chelsea.png", "a tabby cat, again"),
        ("near_copy", "cur_chelsea_copy.jpg", "a smaller tabby cat"),
        ("eval_copy", "cur_coffee_copy.jpg", "a cup of coffee"),
        *[(f"clip_{i}", f"cur_clip_{i}.png", f"clip art number {i}") for i in range(len(clipart))],
    ]
    urls = [web.img_url(name) for _, name, _ in rows] + [web.url("/status/404")]
    roles = [role for role, _, _ in rows] + ["broken"]
    uids = [f"{i:032x}" for i in range(len(urls))]
    pool = tmp_path_factory.mktemp("cur") / "pool.parquet"
    pq.write_table(pa.table({"uid": uids, "url": urls, "text": [t for _, _, t in rows] + ["gone"]}), pool)
    return {"pool": pool, "uid": dict(zip(roles, uids)), "roles": dict(zip(uids, roles))}


@pytest.fixture
def downloaded(curation_pool, tmp_path):
    """The pool downloaded into a fresh job: ``(manifest, [downloader ShardRef, ...])``."""
    manifest = prepare_job(str(curation_pool["pool"]), str(tmp_path / "job"), samples_per_shard=8)
    stage = DownloadStage(DownloadOptions(fetch=FetchOptions(allow_networks=("127.0.0.0/8",), retries=0),
                                          thread_count=4))
    return manifest, [stage.process(ref) for ref in manifest.pool_refs()]
