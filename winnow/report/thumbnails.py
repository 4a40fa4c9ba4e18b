"""Small JPEG thumbnails of sampled shard images, for the report's grids; cached on local disk.

A sample's image is in the tar of the last stage that kept it: for a sample dropped by stage S,
the stage before S (the downloader's tar for the first curation stage); for a sample kept to the
end or dropped by the filter, the last stage's (faces already blurred when the blur stage ran).
Only the members asked for are read (``tarfile`` seeks over the rest).
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

from shared import storage
from shared.shards import IMAGE_EXTENSIONS, shard_prefix

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


def make_thumbnail(data: bytes, size: int = DEFAULT_SIZE) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGB")
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
    wanted: dict[str, dict[str, str]] = defaultdict(dict)  # tar uri -> key -> uid
    for outcome_stage, row in rows:
        cached = cache_dir / f"{row['uid']}-{size}.jpg"
        if cached.exists():
            result[row["uid"]] = cached.read_bytes()
            continue
        stage = image_stage(outcome_stage, stages)
        if stage is None or not row.get("key"):
            continue
        tar_uri = shard_prefix(storage.join(job_root, stage), int(row["shard"])) + ".tar"
        wanted[tar_uri][row["key"]] = row["uid"]
    for tar_uri, by_key in sorted(wanted.items()):
        for key, data in _read_members(tar_uri, by_key).items():
            try:
                thumbnail = make_thumbnail(data, size)
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                log.warning("report: no thumbnail for %s in %s: %s", key, tar_uri, exc)
                continue
            (cache_dir / f"{by_key[key]}-{size}.jpg").write_bytes(thumbnail)
            result[by_key[key]] = thumbnail
    return {uid: "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii") for uid, data in result.items()}
