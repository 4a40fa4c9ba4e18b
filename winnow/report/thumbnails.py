"""Small JPEG thumbnails of sampled shard images, for the report's grids; cached on local disk.

A sample's image is in the image source named by the ledger of the last stage that kept it: for
a sample dropped by stage S, the stage before S's; for a sample kept to the end or dropped by the
filter, the last stage's. That is the downloader's tar (or the shards a job curated in place),
unless the blur stage kept blurred images. Faces the row's ``face_bboxes`` name are blurred in the
thumbnail when its source is not blurred already. Only the members asked for are read
(``tarfile`` seeks over the rest).
"""

from __future__ import annotations

import base64
import io
import logging
import os
import tarfile
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from winnow.shared import storage
from winnow.shared.face_blur import blur_boxes
from winnow.shared.shards import IMAGE_EXTENSIONS, ImageSource, ShardFormatError, image_source, shard_prefix

log = logging.getLogger(__name__)

DEFAULT_SIZE = 160


def default_cache_dir(job_id: str) -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return root / "winnow" / "report-thumbnails" / job_id


def image_stage(outcome_stage: str, stages: list[str]) -> str | None:
    """The stage whose tar holds the image of a sample with this outcome (None: it has none)."""
    if outcome_stage not in stages:  # kept to the end, or dropped by the filter
        return stages[-1]
    index = stages.index(outcome_stage)
    return stages[index - 1] if index > 0 else None


def make_thumbnail(data: bytes, size: int = DEFAULT_SIZE, face_boxes: list | None = None) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGB")
        if face_boxes:
            image = blur_boxes(image, face_boxes)
        image.thumbnail((size, size), Image.Resampling.BICUBIC)
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=82, optimize=True)
        return out.getvalue()


def _read_members(tar_uri: str, keys: Iterable[str]) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    fs, path = storage.filesystem(tar_uri)
    try:
        with fs.open(path, "rb") as handle, tarfile.open(fileobj=handle, mode="r:") as tar:
            names = {m.name: m for m in tar.getmembers()}
            for key in keys:
                for extension in IMAGE_EXTENSIONS:
                    member = names.get(f"{key}.{extension}")
                    if member is not None:
                        found[key] = tar.extractfile(member).read()
                        break
    except (OSError, tarfile.TarError) as exc:
        log.warning("report: cannot read %s: %s", tar_uri, exc)
    return found


def thumbnails(job_root: str, rows: list[tuple[str, dict]], stages: list[str], cache_dir: Path,
               size: int = DEFAULT_SIZE) -> dict[str, str]:
    """``rows`` are (outcome stage, ledger row with ``uid``, ``key``, ``shard``); returns uid ->
    ``data:image/jpeg;base64,...`` for every row whose image could be read."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, str] = {}
    wanted: dict[str, dict[str, dict]] = defaultdict(dict)  # tar uri -> key -> row
    sources: dict[str, ImageSource | None] = {}
    blurred: dict[str, bool] = {}
    for outcome_stage, row in rows:
        cached = cache_dir / f"{row['uid']}-{size}.jpg"
        if cached.exists():
            result[row["uid"]] = cached.read_bytes()
            continue
        stage = image_stage(outcome_stage, stages)
        if stage is None or not row.get("key"):
            continue
        ledger = shard_prefix(storage.join(job_root, stage), int(row["shard"]))
        if ledger not in sources:
            sources[ledger] = _source(ledger)
        source = sources[ledger]
        if source is None:
            continue
        tar_uri = source.prefix + ".tar"
        blurred[tar_uri] = source.blurred
        wanted[tar_uri][row["key"]] = row
    for tar_uri, by_key in sorted(wanted.items()):
        for key, data in _read_members(tar_uri, by_key).items():
            row = by_key[key]
            try:
                thumbnail = make_thumbnail(data, size, None if blurred[tar_uri] else row.get("face_bboxes"))
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                log.warning("report: no thumbnail for %s in %s: %s", key, tar_uri, exc)
                continue
            (cache_dir / f"{row['uid']}-{size}.jpg").write_bytes(thumbnail)
            result[row["uid"]] = thumbnail
    return {uid: "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii") for uid, data in result.items()}


def _source(ledger: str) -> ImageSource | None:
    try:
        return image_source(ledger)
    except (ShardFormatError, OSError) as exc:
        log.warning("report: cannot read %s.parquet: %s", ledger, exc)
        return None
