"""DataComp's baselines on small hand-checked metadata: for each, the exact uids it must keep."""

from __future__ import annotations

import argparse
import importlib.util

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from winnow.services.filter import baselines as B
from winnow.services.filter import cli as filter_cli
from winnow.services.filter.apply import FilterConfig, apply_filter
from winnow.shared.subset import load_subset, uids_to_hex


class ListedLanguages:
    """A STAND-IN for the fastText language identifier, used ONLY to unit-test the filter rules:
    a caption listed in ``languages`` gets that language, every other caption is English.
    It records what it was asked, so tests see that only rows passing the cheap rules are
    identified. The real identifier is tested in ``test_real_language_identifier`` below."""

    name = "listed-languages-test-stand-in"

    def __init__(self, languages: dict[str, str] | None = None) -> None:
        self.languages = languages or {}
        self.seen: list[str] = []

    def detect(self, texts: list[str]) -> list[tuple[str, float]]:
        self.seen.extend(texts)
        return [(self.languages.get(t, "en"), 1.0) for t in texts]


def uid(i: int) -> str:
    return f"{i:032x}"


def kept(result) -> set[str]:
    return set(uids_to_hex(result.uids).tolist())


def write_parquet(path, rows: list[dict], schema: pa.Schema | None = None) -> None:
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


# --- caption measures -------------------------------------------------------------------------

TRICKY = ["", "  two  words ", "a\tb\nc\rd\x0be\x0cf", "x\x1cy\x1dz", "a\u00a0b\u2003c\u3000d", "nbsp\u200bzero-width",
          "café naïve 😀 ok", "\n", "a\n\nb", "trailing\n", "a\x85b", "tab\t"]


def test_word_and_character_counts_are_pythons():
    assert B.word_counts(TRICKY).tolist() == [len(t.split()) for t in TRICKY]
    assert B.char_counts(TRICKY).tolist() == [len(t) for t in TRICKY]
    assert B.word_counts([None]).tolist() == [0] and B.char_counts([None]).tolist() == [0]


def test_fasttext_token_counts_follow_its_tokenizer():
    # fastText splits on space, \n, \r, \t, \v, \f, \0 and turns every newline into "</s>".
    texts = ["a b", "a\nb", "\n", "a\n\nb", "a\u00a0b", "a\x00b  c", "", "trailing\n"]
    assert B.fasttext_token_counts(texts).tolist() == [2, 3, 1, 4, 1, 3, 0, 2]


# --- basic filter -----------------------------------------------------------------------------

BASIC_ROWS = [
    # (uid, text, width, height, kept?)
    (0, "a photo of a dog", 640, 480, True),
    (1, "two words", 640, 480, False),  # 2 words: needs more than 2
    (2, "ab cd e", 640, 480, True),  # 3 words, 7 characters
    (3, "a b c", 640, 480, False),  # 5 characters: needs more than 5
    (4, "a b cd", 640, 480, True),  # 6 characters
    (5, "une photo d'un chien", 640, 480, False),  # not English
    (6, "a photo of a dog", 199, 400, False),  # shorter side < 200
    (7, "a photo of a dog", 200, 600, True),  # shorter side 200, aspect ratio exactly 3
    (8, "a photo of a dog", 200, 601, False),  # aspect ratio > 3
    (9, "a photo of a dog", 601, 200, False),  # aspect ratio > 3, landscape
    (10, None, 640, 480, False),  # no caption
    (11, "a photo of a dog", None, 480, False),  # unknown size
    (12, "a\tphoto\nof dogs", 300, 300, True),  # any whitespace separates words
    (13, "a photo of a dog", 0, 0, False),
]


def test_basic_filter_mask():
    identifier = ListedLanguages({"une photo d'un chien": "fr"})
    texts = [r[1] for r in BASIC_ROWS]
    mask = B.basic_filter_mask(pa.array(texts, pa.string()), pa.array([r[2] for r in BASIC_ROWS], pa.int64()),
                               pa.array([r[3] for r in BASIC_ROWS], pa.int64()), identifier)
    assert mask.tolist() == [r[4] for r in BASIC_ROWS]
    # Only rows that passed the caption and size rules were sent for language identification,
    # with newlines as spaces (as DataComp feeds fastText).
    assert sorted(identifier.seen) == sorted(["a photo of a dog"] * 2 + ["ab cd e", "a b cd", "une photo d'un chien",
                                              "a\tphoto of dogs"])


def test_basic_filter_end_to_end(tmp_path):
    rows = [{"uid": uid(r[0]), "text": r[1], "original_width": r[2], "original_height": r[3]} for r in BASIC_ROWS]
    write_parquet(tmp_path / "00000000.parquet", rows[:7])
    write_parquet(tmp_path / "00000001.parquet", rows[7:])
    config = FilterConfig(name="basic_filter", metadata_dir=str(tmp_path), save_path=str(tmp_path / "s.npy"))
    result = apply_filter(config, language_identifier=ListedLanguages({"une photo d'un chien": "fr"}))
    assert kept(result) == {uid(r[0]) for r in BASIC_ROWS if r[4]}
    assert result.candidates == len(BASIC_ROWS)
    assert np.array_equal(load_subset(str(tmp_path / "s.npy")), result.uids)


# --- CLIP score ---------------------------------------------------------------------------------

def datacomp_threshold(scores, fraction):
    """DataComp's get_threshold, verbatim in meaning: -np.sort(-x)[int(len(x) * fraction)]."""
    return -np.sort(-np.asarray(scores))[int(len(scores) * fraction)]


def test_threshold_keeps_ties():
    scores = np.array([0.30, 0.25, 0.30, 0.20, 0.31], dtype=np.float32)
    assert B.clip_score_mask(scores, 0.30).tolist() == [True, False, True, False, True]
    # A score stored as float32(0.28) passes a 0.28 threshold (compared in float32, as pandas does).
    assert B.clip_score_mask(np.array([0.28, 0.2799], dtype=np.float32), 0.28).tolist() == [True, False]


@pytest.mark.parametrize("n, fraction", [(10, 0.3), (10, 0.25), (10, 0.7), (100, 0.29), (7, 0.5), (1, 0.5)])
def test_fraction_threshold_is_datacomps(n, fraction):
    scores = np.random.default_rng(n).random(n).astype(np.float32)
    threshold = B.threshold_for_fraction(scores, fraction)
    assert threshold == datacomp_threshold(scores, fraction)
    # Distinct scores: exactly int(N * fraction) + 1 rows are >= the threshold.
    assert B.clip_score_mask(scores, threshold).sum() == int(n * fraction) + 1


def test_fraction_index_uses_float_truncation():
    # 100 * 0.29 == 28.999999999999996, so DataComp's index is 28, not 29.
    scores = np.arange(100, dtype=np.float32)[::-1] / 100
    assert B.threshold_for_fraction(scores, 0.29) == np.float32(0.71)
    assert B.clip_score_mask(scores, B.threshold_for_fraction(scores, 0.29)).sum() == 29


def test_fraction_with_ties_and_missing_scores():
    scores = np.array([0.9, 0.5, 0.5, 0.5, 0.1, np.nan, 0.3, 0.2], dtype=np.float32)
    # N=8, fraction 0.25 -> index 2 of [0.9, 0.5, 0.5, 0.5, 0.3, 0.2, 0.1, nan] = 0.5: all three 0.5s stay.
    threshold = B.threshold_for_fraction(scores, 0.25)
    assert threshold == np.float32(0.5) == datacomp_threshold(scores, 0.25)
    assert B.clip_score_mask(scores, threshold).tolist() == [True, True, True, True, False, False, False, False]
    assert B.clip_score_mask(scores, B.threshold_for_fraction(scores, 1.0)).sum() == 7  # every scored row
    with pytest.raises(ValueError):
        B.threshold_for_fraction(scores, 0.0)


def scored_rows(n: int) -> list[dict]:
    # Scores 0.00, 0.01, ... with two ties at 0.05 so fraction cut-offs land on a tie.
    values = [round(0.01 * i, 2) for i in range(n)]
    values[6] = 0.05
    return [{"uid": uid(i), "text": f"caption number {i}", "clip_b32_similarity_score": values[i],
             "clip_l14_similarity_score": values[n - 1 - i]} for i in range(n)]


SCORE_SCHEMA = pa.schema([("uid", pa.string()), ("text", pa.string()), ("clip_b32_similarity_score", pa.float32()),
                          ("clip_l14_similarity_score", pa.float32())])


def test_clip_score_end_to_end_fraction_and_threshold(tmp_path):
    rows = scored_rows(10)  # b32 scores: 0.00 .. 0.09 with 0.05 twice (rows 5 and 6)
    write_parquet(tmp_path / "a.parquet", rows[:5], SCORE_SCHEMA)
    write_parquet(tmp_path / "b.parquet", rows[5:], SCORE_SCHEMA)
    # N=10, fraction 0.4 -> index 4 of [.09 .08 .07 .05 .05 .05 .04 ...] = 0.05: rows 5, 6, 7, 8, 9 and row 5's tie.
    result = apply_filter(FilterConfig(name="clip_score", metadata_dir=str(tmp_path), arch="b32", fraction=0.4))
    assert result.threshold == pytest.approx(0.05)
    assert kept(result) == {uid(i) for i in (5, 6, 7, 8, 9)}
    result = apply_filter(FilterConfig(name="clip_score", metadata_dir=str(tmp_path), arch="l14", threshold=0.07))
    assert kept(result) == {uid(0), uid(1), uid(2)}  # l14 scores are b32's reversed: 0.09, 0.08, 0.07


def test_winnow_ledgers_only_successful_rows_are_candidates(tmp_path):
    rows = scored_rows(10)
    for i, row in enumerate(rows):
        row["key"] = f"{i:05d}"
        row["status"] = "success" if i % 2 == 0 else "failed_to_download"
        if i % 2:
            row["clip_b32_similarity_score"] = None  # failed rows have no image, so no score
    schema = SCORE_SCHEMA.append(pa.field("key", pa.string())).append(pa.field("status", pa.string()))
    write_parquet(tmp_path / "00000000.parquet", rows, schema)
    result = apply_filter(FilterConfig(name="no_filter", metadata_dir=str(tmp_path)))
    assert kept(result) == {uid(i) for i in range(0, 10, 2)}
    # N = 5 candidates (0.00 0.02 0.04 0.05 0.08); fraction 0.4 -> index 2 = 0.04: rows 4, 6, 8.
    result = apply_filter(FilterConfig(name="clip_score", metadata_dir=str(tmp_path), arch="b32", fraction=0.4))
    assert result.candidates == 5 and kept(result) == {uid(4), uid(6), uid(8)}


# --- LAION-2B ----------------------------------------------------------------------------------

def test_laion2b(tmp_path):
    rows = [{"uid": uid(0), "text": "a red bicycle", "clip_b32_similarity_score": 0.28},
            {"uid": uid(1), "text": "a red bicycle", "clip_b32_similarity_score": 0.2799},
            {"uid": uid(2), "text": "un vélo rouge", "clip_b32_similarity_score": 0.35},
            {"uid": uid(3), "text": "x", "clip_b32_similarity_score": 0.40},  # LAION has no length rule
            {"uid": uid(4), "text": "a red bicycle", "clip_b32_similarity_score": None}]
    schema = pa.schema([("uid", pa.string()), ("text", pa.string()), ("clip_b32_similarity_score", pa.float32())])
    write_parquet(tmp_path / "m.parquet", rows, schema)
    identifier = ListedLanguages({"un vélo rouge": "fr"})
    result = apply_filter(FilterConfig(name="laion2b", metadata_dir=str(tmp_path)), language_identifier=identifier)
    assert kept(result) == {uid(0), uid(3)}
    assert sorted(identifier.seen) == sorted(["a red bicycle", "un vélo rouge", "x"])  # only rows >= 0.28


# --- text-based --------------------------------------------------------------------------------

DOG, CAT, RUN = 2084071, 2121620, 1926311
IN21K = frozenset({DOG, CAT})
# A STAND-IN for WordNet in the rule tests: a word's first synset offset (the real one is below).
FIRST_SYNSET = {"dog": DOG, "dogs": DOG, "Dog": DOG, "cat": CAT, "running": RUN}


def test_text_based_mask():
    asked: list[str] = []

    def first_synset(word):
        asked.append(word)
        return FIRST_SYNSET.get(word)

    texts = ["a dog on grass", "Dogs", "dogs,", "running fast", "chat noir cat", "", None, "the cat and the dog"]
    identifier = ListedLanguages({"chat noir cat": "fr"})
    mask = B.text_based_mask(texts, first_synset, IN21K, identifier)
    # "Dogs" has no first synset in this table; "dogs," keeps its comma, as str.split() does.
    assert mask.tolist() == [True, False, False, False, False, False, False, True]
    assert len(asked) == len(set(asked))  # one look-up per distinct word
    assert sorted(identifier.seen) == sorted(["a dog on grass", "chat noir cat", "the cat and the dog"])


def test_text_based_end_to_end(tmp_path):
    texts = ["a dog on grass", "running fast", "the cat sat"]
    write_parquet(tmp_path / "m.parquet", [{"uid": uid(i), "text": t} for i, t in enumerate(texts)])
    synsets_file = tmp_path / "ids.txt"
    synsets_file.write_text(f"n{DOG:08d}\nn{CAT:08d}\n")
    result = apply_filter(FilterConfig(name="text_based", metadata_dir=str(tmp_path), synset_ids=str(synsets_file)),
                          language_identifier=ListedLanguages(), first_synset=FIRST_SYNSET.get)
    assert kept(result) == {uid(0), uid(2)}


@pytest.fixture(scope="module")
def wordnet_first_synset():
    from winnow.services.filter.wordnet import WordNetFirstSynset, WordNetUnavailable

    try:
        return WordNetFirstSynset()
    except WordNetUnavailable as exc:
        pytest.skip(f"WordNet 3.0 is not installed here: {exc}")


def test_real_wordnet_and_imagenet21k_synsets(wordnet_first_synset):
    from winnow.services.filter.wordnet import imagenet21k_synset_offsets

    synsets = imagenet21k_synset_offsets()
    assert len(synsets) == 21843
    assert wordnet_first_synset("dogs") == wordnet_first_synset("Dog") == DOG
    assert wordnet_first_synset("the") is None
    texts = ["two dogs playing", "the of and", "a tabby cat", "qwzx blorp"]
    mask = B.text_based_mask(texts, wordnet_first_synset, synsets, ListedLanguages())
    assert mask.tolist() == [True, False, True, False]


# --- image-based -------------------------------------------------------------------------------

DIM = 16
GROUPS = 4
PER_GROUP = 25


def grouped_embeddings(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors in 4 tight groups around the first 4 axes; returns (embeddings, group of each)."""
    rng = np.random.default_rng(seed)
    axes = np.eye(DIM, dtype=np.float32)[:GROUPS]
    x = np.concatenate([axes[g] + 0.05 * rng.standard_normal((PER_GROUP, DIM)) for g in range(GROUPS)])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), np.repeat(np.arange(GROUPS), PER_GROUP)


def test_image_based_mask_with_known_centroids():
    x, group = grouped_embeddings()
    centroids = np.eye(DIM, dtype=np.float32)[:GROUPS] * np.array([[1.0], [0.9], [1.1], [1.0]], dtype=np.float32)
    targets = np.eye(DIM, dtype=np.float32)[[1, 3, 3]] + 0.01
    assert B.target_clusters(targets, centroids).tolist() == [1, 3]
    mask = B.image_based_mask(x, centroids, targets)
    assert np.array_equal(mask, np.isin(group, [1, 3]))
    where = np.ones(len(x), dtype=bool)
    where[PER_GROUP] = False  # a row of group 1 that an earlier rule dropped
    assert B.image_based_mask(x, centroids, targets, where=where).sum() == 2 * PER_GROUP - 1


def test_nearest_centroid_is_largest_inner_product_not_l2():
    # DataComp assigns by argmax of x . c: a long centroid wins over a closer short one.
    centroids = np.array([[1.0, 0.0], [3.0, 3.0]], dtype=np.float32)
    x = np.array([[1.0, 0.1]], dtype=np.float32)
    assert B.nearest_centroids(x, centroids).tolist() == [1]
    assert B.nearest_centroids(x, centroids).tolist() == [np.argmax(x @ centroids.T)]


def test_train_kmeans_finds_separated_groups():
    x, group = grouped_embeddings()
    centroids = B.train_kmeans(x, GROUPS, seed=0)  # faiss' random start; seed 0 starts in 4 distinct groups
    assert centroids.shape == (GROUPS, DIM) and centroids.dtype == np.float32
    labels = B.nearest_centroids(x, centroids)
    assert len(set(labels.tolist())) == GROUPS
    assert all(len(set(labels[group == g].tolist())) == 1 for g in range(GROUPS))
    for c in range(GROUPS):  # Lloyd's fixed point: each centroid is the mean of its members
        np.testing.assert_allclose(centroids[c], x[labels == c].mean(axis=0), atol=1e-5)
    assert np.array_equal(centroids, B.train_kmeans(x, GROUPS, seed=0))
    with pytest.raises(ValueError, match="at least as many"):
        B.train_kmeans(x[:3], GROUPS)


def image_pool(tmp_path, with_status: bool = False):
    x, group = grouped_embeddings()
    n = len(x)
    texts = [f"a picture of thing {i}" for i in range(n)]
    texts[PER_GROUP + 1] = "hi"  # group 1, fails the caption filter (5 characters... and 1 token)
    texts[3 * PER_GROUP + 2] = "une image de chose"  # group 3, not English
    b32 = np.linspace(0.0, 0.5, n, dtype=np.float32)
    rows = [{"uid": uid(i), "text": texts[i], "clip_b32_similarity_score": float(b32[i]),
             "clip_l14_similarity_score": float(b32[i])} for i in range(n)]
    half = n // 2
    write_parquet(tmp_path / "00000000.parquet", rows[:half], SCORE_SCHEMA)
    write_parquet(tmp_path / "00000001.parquet", rows[half:], SCORE_SCHEMA)
    np.savez(tmp_path / "00000000.npz", l14_img=x[:half].astype(np.float16), b32_img=x[:half])
    np.savez(tmp_path / "00000001.npz", l14_img=x[half:].astype(np.float16), b32_img=x[half:])
    targets = np.eye(DIM, dtype=np.float32)[[1, 3]] + 0.02 * np.random.default_rng(9).standard_normal((2, DIM))
    np.save(tmp_path.parent / "targets.npy", targets.astype(np.float32))
    identifier = ListedLanguages({"une image de chose": "fr"})
    return group, b32, identifier, str(tmp_path.parent / "targets.npy")


def test_image_based_end_to_end(tmp_path):
    pool = tmp_path / "pool"
    pool.mkdir()
    group, b32, identifier, targets = image_pool(pool)
    expected = {uid(i) for i in range(len(group)) if group[i] in (1, 3)} - {uid(PER_GROUP + 1), uid(3 * PER_GROUP + 2)}
    result = apply_filter(FilterConfig(name="image_based", metadata_dir=str(pool), image_based_targets=targets,
                                       num_clusters=GROUPS, seed=0), language_identifier=identifier)
    assert kept(result) == expected
    assert result.details["target_clusters"] == 2
    # The intersection with the top 30% by B/32 score (rows at index >= 69 of 100: 0.3 -> index 30).
    threshold = datacomp_threshold(b32, 0.3)
    result = apply_filter(FilterConfig(name="image_based_intersect_clip_score", metadata_dir=str(pool),
                                       image_based_targets=targets, num_clusters=GROUPS, arch="b32", fraction=0.3),
                          language_identifier=identifier)
    assert result.threshold == threshold
    assert kept(result) == {u for u in expected if b32[int(u, 16)] >= threshold}
    # Given centroids instead of clustering the pool.
    np.save(tmp_path / "centroids.npy", np.eye(DIM, dtype=np.float32)[:GROUPS])
    result = apply_filter(FilterConfig(name="image_based", metadata_dir=str(pool), image_based_targets=targets,
                                       centroids=str(tmp_path / "centroids.npy")), language_identifier=identifier)
    assert kept(result) == expected


# --- options and the command line ------------------------------------------------------------------

@pytest.mark.parametrize("options, message", [
    (dict(name="clip_score", arch="b32"), "exactly one"),
    (dict(name="clip_score", threshold=0.3, fraction=0.3, arch="b32"), "exactly one"),
    (dict(name="clip_score", threshold=0.3), "--arch"),
    (dict(name="laion2b", threshold=0.3), "only for the clip_score"),
    (dict(name="basic_filter", arch="l14"), "only for the clip_score"),
    (dict(name="image_based"), "--image_based_targets"),
    (dict(name="clip_score", fraction=1.5, arch="b32"), "fraction"),
    (dict(name="no_filter", image_based_targets="t.npy"), "only for the image_based"),
    (dict(name="best_filter"), "--name"),
])
def test_options_are_checked_like_datacomp(options, message):
    with pytest.raises(ValueError, match=message):
        FilterConfig(metadata_dir="unused", **options).validate()


def test_missing_columns_and_empty_folders_are_clear_errors(tmp_path):
    from winnow.services.filter.metadata import MetadataError

    with pytest.raises(MetadataError, match="no .parquet"):
        apply_filter(FilterConfig(name="no_filter", metadata_dir=str(tmp_path)))
    write_parquet(tmp_path / "m.parquet", [{"uid": uid(0)}])
    with pytest.raises(MetadataError, match="clip_l14_similarity_score"):
        apply_filter(FilterConfig(name="clip_score", metadata_dir=str(tmp_path), arch="l14", threshold=0.2))


def test_cli_writes_the_subset(tmp_path):
    rows = scored_rows(10)
    write_parquet(tmp_path / "a.parquet", rows, SCORE_SCHEMA)
    parser = argparse.ArgumentParser(prog="winnow")
    filter_cli.add_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "out" / "subset.npy"
    args = parser.parse_args(["filter", "--name", "clip_score", "--arch", "b32", "--fraction", "0.4",
                              "--metadata_dir", str(tmp_path), "--save_path", str(out)])
    assert args.func(args) == 0
    assert set(uids_to_hex(load_subset(str(out))).tolist()) == {uid(i) for i in (5, 6, 7, 8, 9)}


@pytest.mark.skipif(importlib.util.find_spec("winnow.shared.models.language") is None,
                    reason="winnow.shared.models.language (FastLangDetect) is not in this checkout yet")
def test_real_language_identifier(tmp_path):
    from winnow.shared.models.language import FastLangDetect

    rows = [{"uid": uid(0), "text": "a photo of a small dog sleeping on a sofa", "original_width": 640,
             "original_height": 480},
            {"uid": uid(1), "text": "une photo d'un petit chien qui dort sur un canapé", "original_width": 640,
             "original_height": 480},
            {"uid": uid(2), "text": "ein Foto von einem kleinen Hund, der auf einem Sofa schläft",
             "original_width": 640, "original_height": 480}]
    write_parquet(tmp_path / "m.parquet", rows)
    result = apply_filter(FilterConfig(name="basic_filter", metadata_dir=str(tmp_path)),
                          language_identifier=FastLangDetect())
    assert kept(result) == {uid(0)}
