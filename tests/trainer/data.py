"""A small real image-text training set: openclipart PNGs with their titles, as winnow shards."""

from __future__ import annotations

import json
from pathlib import Path

from winnow.services.trainer.offline_clip import clipart_thumbnail
from winnow.shared.shards import SUCCESS, ShardWriter, sample_key, shard_prefix
from tests.infra.images import openclipart_images, title_from_path


def clipart_samples(count: int, side: int = 64) -> list[tuple[str, bytes]]:
    """``count`` (caption, JPEG bytes) pairs: clip art composited on white, squashed to ``side`` px."""
    samples = []
    for path in openclipart_images(limit=3 * count):
        caption = title_from_path(path)
        jpeg = clipart_thumbnail(path, side) if caption else None
        if jpeg is None:
            continue
        samples.append((caption, jpeg))
        if len(samples) == count:
            return samples
    raise RuntimeError(f"openclipart-png gave only {len(samples)} of {count} usable images")


def write_clipart_shards(root: Path, shards: int = 4, per_shard: int = 64, side: int = 64) -> list[tuple[str, bytes]]:
    """Winnow shards (tar with jpg/txt/json, parquet, _stats.json) ``00000000`` ... under ``root``."""
    samples = clipart_samples(shards * per_shard, side)
    root.mkdir(parents=True, exist_ok=True)
    for shard_id in range(shards):
        writer = ShardWriter(shard_prefix(str(root), shard_id), stage="reshard", job_id="train-test",
                             shard_id=shard_id)
        for index, (caption, jpeg) in enumerate(samples[shard_id * per_shard:(shard_id + 1) * per_shard]):
            key = sample_key(shard_id, index, per_shard)
            uid = f"{shard_id * per_shard + index:032x}"
            row = {"key": key, "uid": uid, "url": f"https://openclipart.org/{key}.png", "text": caption,
                   "status": SUCCESS, "width": side, "height": side}
            files = {"jpg": jpeg, "txt": caption.encode(),
                     "json": json.dumps({"key": key, "uid": uid, "caption": caption}).encode()}
            writer.add(row, files)
        writer.close()
    return samples
