"""A small CLIP trained offline on real image-text pairs, for the embedded default.

No pretrained CLIP ships inside a package, so winnow trains its own: Debian's openclipart-png
(clip art with titles as captions), minus the files held out for the openclipart retrieval
evaluation (``winnow.services.evaluator.is_eval_holdout``), at 64 px with ``winnow-tiny-ViT``. The final
weights go to ``{models_dir}/winnow-tiny-clip.pt`` with a JSON of how they were made and their
evaluation figures, where ``--clip_model b32=winnow-tiny-ViT:{that file}`` picks them up.
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from winnow.services.evaluator.local_sets import OPENCLIPART_DIR, clipart_title, is_eval_holdout
from winnow.shared.shards import SUCCESS, ShardWriter, sample_key, shard_prefix

MODEL_FILE = "winnow-tiny-clip.pt"
_MAX_FILE_BYTES = 400_000  # the package also holds 100+ megapixel drawings: skip them
_MAX_PIXELS = 4_000_000


@dataclass(frozen=True)
class TrainingSet:
    folder: Path
    samples: int
    shards: int


def clipart_thumbnail(path: Path, side: int = 64) -> bytes | None:
    """A clip-art PNG matted on white and squashed to ``side`` px, as JPEG; None when it is too big."""
    if path.stat().st_size > _MAX_FILE_BYTES:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Image.open(path) as image:
            if image.width * image.height > _MAX_PIXELS:
                return None
            image = image.convert("RGBA")
            image.thumbnail((2 * side, 2 * side))
            canvas = Image.new("RGBA", image.size, (255, 255, 255, 255))
            canvas.alpha_composite(image)
            image = canvas.convert("RGB").resize((side, side), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def build_openclipart_training_set(out: Path, side: int = 64, per_shard: int = 1000,
                                   limit: int | None = None) -> TrainingSet:
    """Every usable, not held-out openclipart PNG with its title (the first ``limit``), as winnow
    shards under ``out``."""
    paths = sorted(p for p in OPENCLIPART_DIR.rglob("*.png") if not is_eval_holdout(p))
    if not paths:
        raise FileNotFoundError(f"no openclipart images under {OPENCLIPART_DIR} (apt-get install openclipart-png)")
    samples: list[tuple[str, str, bytes]] = []
    for path in paths:
        caption = clipart_title(path)
        if not caption:
            continue
        jpeg = clipart_thumbnail(path, side)
        if jpeg is None:
            continue
        samples.append((path.as_uri(), caption, jpeg))
        if limit is not None and len(samples) >= limit:
            break
    out.mkdir(parents=True, exist_ok=True)
    shards = -(-len(samples) // per_shard)
    for shard_id in range(shards):
        writer = ShardWriter(shard_prefix(str(out), shard_id), stage="openclipart", job_id="offline-clip",
                             shard_id=shard_id)
        for index, (source, caption, jpeg) in enumerate(samples[shard_id * per_shard:(shard_id + 1) * per_shard]):
            key = sample_key(shard_id, index, per_shard)
            uid = f"{shard_id * per_shard + index:032x}"
            row = {"key": key, "uid": uid, "url": source, "text": caption, "status": SUCCESS, "width": side,
                   "height": side}
            writer.add(row, {"jpg": jpeg, "txt": caption.encode(), "json": json.dumps(row).encode()})
        writer.close()
    return TrainingSet(out, len(samples), shards)


def train_offline_clip(workdir: Path, models_dir: Path, samples_seen: int = 60_000, eval_data: str = "") -> dict:
    """Build the set, train, evaluate when ``eval_data`` is given, save weights and figures."""
    import torch

    from winnow.services.trainer.train import TrainConfig, train

    data = build_openclipart_training_set(workdir / "openclipart")
    scale = workdir / "offline_clip_scale.json"
    scale.write_text(json.dumps({"name": "offline_clip", "model": "winnow-tiny-ViT", "samples_seen": samples_seen,
                                 "batch_size": 64, "learning_rate": 5e-4, "warmup": 50, "beta2": None}))
    trained = train(TrainConfig(scale=str(scale), data=(str(data.folder),), output_dir=str(workdir / "runs"),
                                exp_name="offline_clip", num_checkpoints=4, workers=1))
    report = {"model": "winnow-tiny-ViT", "training_samples": data.samples, "samples_seen": trained.samples_seen,
              "final_loss": trained.final_loss, "evaluation": {}}
    if eval_data:
        from winnow.services.evaluator.evaluate import evaluate

        results = evaluate(str(trained.checkpoint), eval_data, ["local"], arch="winnow-tiny-ViT")
        report["evaluation"] = {t.key: {"metric": t.main_metric, "score": t.score} for t in results.tasks}
    models_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = torch.load(trained.checkpoint, map_location="cpu", weights_only=True)
    # the weights alone (open_clip's format), without the optimizer's state
    torch.save({"state_dict": checkpoint["state_dict"], "epoch": checkpoint.get("epoch")}, models_dir / MODEL_FILE)
    (models_dir / f"{MODEL_FILE}.json").write_text(json.dumps(report, indent=1))
    return report
