"""Safety and blur stages with the real offline models on real images."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from winnow.services.blur.stage import BlurOptions, BlurStage
from winnow.services.safety.stage import SafetyOptions, SafetyStage
from winnow.shared.models.provider import model_factory
from winnow.shared.shards import ImageSource, image_source, iter_tar_samples, read_stats, read_table
from tests.infra.images import skimage_photos


def _ledger(refs) -> pa.Table:
    return pa.concat_tables([read_table(ref.uri) for ref in refs], promote_options="permissive")


@pytest.fixture(scope="module")
def safety_stage():
    stage = SafetyStage(model_factory("text_toxicity", "offline"), model_factory("image_nsfw", "offline"),
                        SafetyOptions(toxicity_threshold=0.5, nsfw_threshold=0.5))
    stage.setup()
    return stage


def test_a_toxic_caption_is_dropped_and_the_plain_ones_kept(safety_stage, downloaded, curation_pool):
    _, refs = downloaded
    out = [safety_stage.process(ref) for ref in refs]
    ledger = _ledger(out)
    rows = {r["uid"]: r for r in ledger.to_pylist()}
    toxic = rows[curation_pool["uid"]["toxic"]]
    assert (toxic["status"], toxic["reason"], toxic["dropped_by"]) == ("dropped", "toxic_caption", "safety")
    assert toxic["toxicity_score"] >= 0.5
    kept = [r for r in rows.values() if r["status"] == "success"]
    assert len(kept) == len(rows) - 2  # the toxic one, and the broken URL carried as it was
    assert all(r["toxicity_score"] < 0.5 and r["nsfw_score"] < 0.5 for r in kept)
    assert rows[curation_pool["uid"]["broken"]]["reason"] == "http_404"
    stats = [read_stats(ref.uri) for ref in out]
    assert sum(s.count for s in stats) == len(rows) - 1, "stats count what entered this stage"
    assert sum(s.reasons["toxic_caption"] for s in stats) == 1
    # Safety annotates: no tar of its own; its ledger names the downloader's tar, which holds every kept image.
    for before, after in zip(refs, out):
        assert not Path(after.uri + ".tar").exists()
        assert image_source(after.uri) == ImageSource(before.uri, blurred=False)
    downloaded_keys = {k for ref in refs for k, _ in iter_tar_samples(ref.uri)}
    assert {r["key"] for r in kept} <= downloaded_keys
    assert rows[curation_pool["uid"]["toxic"]]["key"] in downloaded_keys


def test_a_face_gets_a_box_and_the_images_stay_where_they_are(downloaded, curation_pool):
    """By default blur only annotates: face_bboxes, no tar; the resharder blurs from the boxes."""
    _, refs = downloaded
    stage = BlurStage(model_factory("face_detector", "offline"))
    out = [stage.process(ref) for ref in refs]
    rows = {r["uid"]: r for r in _ledger(out).to_pylist()}
    (box,) = rows[curation_pool["uid"]["face"]]["face_bboxes"]
    assert 0.25 < box[0] < box[2] < 0.65 and 0.0 < box[1] < box[3] < 0.5, box
    for before, after in zip(refs, out):
        assert not Path(after.uri + ".tar").exists()
        assert image_source(after.uri) == ImageSource(before.uri, blurred=False)
        assert Path(before.uri + ".tar").exists()
    assert set(read_stats(out[0].uri).extra["timings"]) == {"read_s", "decode_s", "model_s", "write_s"}


def test_blurred_at_rest_a_face_gets_a_box_and_is_blurred_there_only(downloaded, curation_pool):
    _, refs = downloaded
    stage = BlurStage(model_factory("face_detector", "offline"), BlurOptions(write_blurred_images=True))
    out = [stage.process(ref) for ref in refs]
    for before, after in zip(refs, out):
        assert image_source(after.uri) == ImageSource(after.uri, blurred=True)
        assert not Path(before.uri + ".tar").exists(), "the job's unblurred tar is removed once blurred"
    assert [stage.process(ref).uri for ref in refs] == [r.uri for r in out], "a redelivered shard is skipped"
    rows = {r["uid"]: r for r in _ledger(out).to_pylist()}
    face = rows[curation_pool["uid"]["face"]]
    assert face["status"] == "success"
    (box,) = face["face_bboxes"]
    x0, y0, x1, y1 = box
    assert 0.25 < x0 < x1 < 0.65 and 0.0 < y0 < y1 < 0.5, box
    cat = rows[curation_pool["uid"]["original"]]
    assert cat["face_bboxes"] == []

    files = {k: f for ref in out for k, f in iter_tar_samples(ref.uri)}
    blurred = np.asarray(Image.open(io.BytesIO(files[face["key"]]["jpg"])).convert("RGB"), np.float32)
    original = np.asarray(Image.open(next(p for p in skimage_photos() if p.stem == "astronaut")).convert("RGB"),
                          np.float32)
    assert blurred.shape == original.shape
    h, w = original.shape[:2]
    inside = (slice(int(y0 * h) + 5, int(y1 * h) - 5), slice(int(x0 * w) + 5, int(x1 * w) - 5))
    difference = np.abs(blurred - original)
    outside = np.ones((h, w), bool)
    outside[int(y0 * h) - 40:int(y1 * h) + 40, int(x0 * w) - 40:int(x1 * w) + 40] = False
    assert difference[inside].mean() > 8, "the face is visibly blurred"
    assert difference[outside].mean() < 3, "the rest of the image is left as it was (up to JPEG noise)"


def test_boxes_the_blur_stage_finds_are_not_taken_for_blurred(downloaded):
    """A source blurred at download (the pool's own face_bboxes) is not blurred for the faces the
    blur stage finds: its ledger says not blurred, so the resharder blurs them."""
    _, refs = downloaded
    for ref in refs:
        table = pq.read_table(ref.uri + ".parquet")
        metadata = {**table.schema.metadata, b"winnow_images_blurred": b"true"}
        pq.write_table(table.replace_schema_metadata(metadata), ref.uri + ".parquet")
        assert image_source(ref.uri).blurred
    out = [BlurStage(model_factory("face_detector", "offline")).process(ref) for ref in refs]
    assert [image_source(r.uri) for r in out] == [ImageSource(r.uri, blurred=False) for r in refs]


@pytest.mark.parametrize("module, options", [("safety", "SafetyOptions"), ("dedup", "DedupOptions"),
                                             ("blur", "BlurOptions"), ("embed", "EmbedOptions")])
def test_each_service_reads_its_stages_options_with_their_defaults(module, options):
    """The service's settings are made from the stage's options: no default is declared twice."""
    import importlib

    settings = importlib.import_module(f"winnow.services.{module}.__main__")
    stage = importlib.import_module(f"winnow.services.{module}.stage")
    settings_class = next(v for k, v in vars(settings).items() if k.endswith("Settings") and k != "CurationSettings")
    assert settings_class().options() == getattr(stage, options)()


def test_the_service_environment_keeps_its_names(monkeypatch):
    from winnow.services.blur.__main__ import BlurSettings
    from winnow.services.dedup.__main__ import DedupSettings
    from winnow.services.embed.__main__ import EmbedSettings
    from winnow.services.safety.__main__ import SafetySettings

    for key, value in {"WINNOW_TOXICITY_THRESHOLD": "0.3", "WINNOW_BATCH_SIZE": "8", "WINNOW_WRITE_BLURRED_IMAGES": "true",
                       "WINNOW_EVAL_INDEX_DIR": "/idx", "WINNOW_REGISTRY_DIR": "/reg",
                       "WINNOW_POOL_FLAT_LIMIT": "128", "WINNOW_CLIP_MODELS": '{"b32": {"arch": "ViT-B-32"}}'}.items():
        monkeypatch.setenv(key, value)
    safety = SafetySettings().options()
    assert (safety.toxicity_threshold, safety.nsfw_threshold, safety.batch_size) == (0.3, None, 8)
    assert BlurSettings().options().write_blurred_images
    dedup = DedupSettings().options()
    assert (dedup.eval_index_dir, dedup.registry_dir, dedup.pool_index.flat_limit) == ("/idx", "/reg", 128)
    assert EmbedSettings().options().clip_models == {"b32": {"arch": "ViT-B-32"}}
