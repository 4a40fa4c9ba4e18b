"""Decoding at the size the models need: a JPEG decoded at a reduced DCT scale changes what the
offline models answer by little, and their verdicts not at all, on real web-size images."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from winnow.shared.image_decode import decode_rgb
from winnow.shared.models.base import ImageNeed, image_need
from winnow.shared.models.provider import model_factory
from winnow.shared.models.registry import preset
from tests.infra.images import make_jpeg_corpus, skimage_photos


def _jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def web_jpegs(tmp_path_factory) -> list[bytes]:
    """Distinct real photos and clip art, shorter side 1000-1400 px, and the astronaut (a face) at 2400 px."""
    paths = make_jpeg_corpus(tmp_path_factory.mktemp("corpus"), 30, min_side=1000)
    astronaut = next(p for p in skimage_photos() if p.stem == "astronaut")
    big = Image.open(astronaut).convert("RGB").resize((2400, 2400), Image.Resampling.BICUBIC)
    return [p.read_bytes() for p in paths] + [_jpeg(big)]


def _decoded(data: list[bytes], need: ImageNeed | None) -> list[np.ndarray]:
    return [decode_rgb(d, need) for d in data]


def test_a_reduced_decode_keeps_what_the_model_needs():
    image = _jpeg(Image.new("RGB", (1600, 1200), (10, 200, 30)))
    assert decode_rgb(image, ImageNeed(shorter=224)).shape == (300, 400, 3)  # 1/4: the smallest keeping 224
    assert decode_rgb(image, ImageNeed(longer=1024)).shape == (1200, 1600, 3)  # 1/2 would be 800 < 1024
    assert decode_rgb(image, ImageNeed(shorter=2000)).shape == (1200, 1600, 3)  # never larger than stored
    cmyk = io.BytesIO()
    Image.new("CMYK", (800, 600), (0, 0, 0, 0)).save(cmyk, "JPEG")
    assert decode_rgb(cmyk.getvalue(), ImageNeed(shorter=64)).shape == (600, 800, 3)  # Pillow decodes CMYK
    png = io.BytesIO()
    Image.new("RGB", (800, 600)).save(png, "PNG")
    assert decode_rgb(png.getvalue(), ImageNeed(shorter=64)).shape == (600, 800, 3)  # only JPEGs are reduced


def test_nsfw_scores_move_little_and_no_verdict_changes(web_jpegs):
    nsfw = model_factory("image_nsfw", "offline")()
    need = image_need(nsfw)
    reduced = _decoded(web_jpegs, need)
    full = _decoded(web_jpegs, None)
    assert sum(r.shape != f.shape for r, f in zip(reduced, full)) == len(full), "every image is reduced"
    before, after = nsfw.score(full), nsfw.score(reduced)
    change = np.abs(before - after)
    print(f"nsfw |change|: max {change.max():.4f}, mean {change.mean():.4f}")
    assert change.mean() < 0.02 and change.max() < 0.15
    threshold = preset("image_nsfw", "offline").threshold
    assert ((before >= threshold) == (after >= threshold)).all(), "no verdict changes at the preset's threshold"
    # at any threshold, only an image whose score sits within the change of it can flip: at most one here
    for cut in np.linspace(0.05, 0.95, 19):
        assert ((before >= cut) != (after >= cut)).sum() <= 1, cut


def test_near_duplicate_hashes_move_little_and_no_pair_changes(web_jpegs):
    descriptor = model_factory("near_duplicate", "offline")()
    full = descriptor.describe(_decoded(web_jpegs, None))
    reduced = descriptor.describe(_decoded(web_jpegs, image_need(descriptor)))
    flipped = (np.sign(full) != np.sign(reduced)).sum(axis=1)
    print(f"pHash bits flipped by the reduced decode: max {flipped.max()}, mean {flipped.mean():.1f} of {full.shape[1]}")
    assert flipped.max() <= 24, "far inside the near-duplicate radius of 56 bits"
    # every pair of images (and each image with its own reduced copy) gets the same verdict
    assert ((full @ full.T >= descriptor.threshold) == (reduced @ reduced.T >= descriptor.threshold)).all()
    assert (np.sum(full * reduced, axis=1) >= descriptor.threshold).all()


def test_faces_are_found_in_the_same_places(web_jpegs):
    detector = model_factory("face_detector", "offline")()
    need = image_need(detector)
    # the images large enough to be reduced for a detector that looks at 1024 px: the astronaut among them
    large = [d for d in web_jpegs if max(Image.open(io.BytesIO(d)).size) >= 2 * need.longer]
    assert len(large) >= 2
    full, reduced = detector.detect(_decoded(large, None)), detector.detect(_decoded(large, need))
    assert [len(f) for f in full] == [len(r) for r in reduced]
    assert sum(len(f) for f in full) >= 1, "the astronaut's face"
    for f, r in zip(full, reduced):
        if len(f):
            assert np.abs(f[:, :4] - r[:, :4]).max() < 0.01
