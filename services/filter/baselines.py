"""DataComp's filtering baselines as vectorised functions: columns in, boolean keep-masks out.

Each function follows ``baselines/apply_filter.py`` of DataComp (mlfoundations/datacomp)
exactly, rule for rule:

- basic: English caption (the language identifier's top label is ``en``), more than 2 words
  (Python's ``str.split()``) and more than 5 characters, shorter image side >= 200 and
  aspect ratio (longer / shorter side) <= 3;
- CLIP score: score >= threshold; by fraction, the threshold is the score at index
  ``int(N * fraction)`` of the scores sorted in descending order, so ties at it are kept;
- LAION-2B: B/32 score >= 0.28 and English;
- text-based: English, and some word of the caption (``str.split()``) has as its first WordNet
  synset one of ImageNet-21k's synsets;
- image-based: a caption filter (English, more than 1 fastText token, more than 5 characters),
  then keep the samples whose L/14 image embedding's nearest k-means centroid (largest inner
  product) is the nearest centroid of some target (ImageNet training) image embedding.

Language identification, WordNet look-ups and k-means are passed in or kept in small functions,
so the rules themselves are tested on hand-made columns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from winnow.shared.models.base import LanguageIdentifier

ENGLISH = "en"
BASIC_MIN_WORDS = 3  # DataComp: number of words > 2
BASIC_MIN_CHARS = 6  # DataComp: number of characters > 5
BASIC_MIN_IMAGE_SIDE = 200
BASIC_MAX_ASPECT_RATIO = 3.0
LAION2B_B32_THRESHOLD = 0.28
IMAGE_CAPTION_MIN_TOKENS = 2  # DataComp's caption_filter: fastText tokens > 1
IMAGE_CAPTION_MIN_CHARS = 6
KMEANS_ITERATIONS = 20
LANGUAGE_BATCH = 8192

SCORE_COLUMNS = {"b32": "clip_b32_similarity_score", "l14": "clip_l14_similarity_score"}

# The characters Python's ``str.split()`` splits on, as an RE2 class (RE2's ``\s`` is ASCII only).
_PY_WHITESPACE = r"\t-\r\x1c-\x20\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}"
_PY_WORD = f"[^{_PY_WHITESPACE}]+"
_PY_WHITESPACE_RUN = f"[{_PY_WHITESPACE}]+"
# fastText's tokenizer splits on these bytes and turns each newline into an end-of-sentence token.
_FASTTEXT_TOKEN = r"[^ \n\r\t\x0b\x0c\x00]+"

Texts = pa.Array | pa.ChunkedArray | Sequence[str | None]
SynsetLookup = Callable[[str], "int | None"]


def _string_array(texts: Texts) -> pa.Array | pa.ChunkedArray:
    if isinstance(texts, (pa.Array, pa.ChunkedArray)):
        if pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type):
            return texts
        return texts.cast(pa.string())
    return pa.array(list(texts), type=pa.string())


def _to_numpy(values: pa.Array | pa.ChunkedArray, fill) -> np.ndarray:
    return pc.fill_null(values, fill).to_numpy(zero_copy_only=False)


def word_counts(texts: Texts) -> np.ndarray:
    """``len(text.split())`` for each text (null counts 0)."""
    return _to_numpy(pc.count_substring_regex(_string_array(texts), _PY_WORD), 0).astype(np.int64)


def char_counts(texts: Texts) -> np.ndarray:
    """``len(text)`` in code points for each text (null counts 0)."""
    return _to_numpy(pc.utf8_length(_string_array(texts)), 0).astype(np.int64)


def fasttext_token_counts(texts: Texts) -> np.ndarray:
    """``len(fasttext.tokenize(text))``: tokens between fastText's separators, plus one
    end-of-sentence token per newline."""
    texts = _string_array(texts)
    tokens = _to_numpy(pc.count_substring_regex(texts, _FASTTEXT_TOKEN), 0)
    newlines = _to_numpy(pc.count_substring(texts, "\n"), 0)
    return (tokens + newlines).astype(np.int64)


def detect_english(texts: Texts, identifier: LanguageIdentifier, where: np.ndarray | None = None,
                   batch_size: int = LANGUAGE_BATCH) -> np.ndarray:
    """True where the identifier's top label is English.

    Only rows where ``where`` is true are sent to the identifier (the others are False), so a
    filter identifies the language of the rows its cheaper rules kept. Newlines become spaces
    first, as DataComp does; nothing else is done to the text, and a blank caption is asked like
    any other (DataComp's behaviour). A null caption is not English (DataComp cannot read one).
    """
    texts = _string_array(texts)
    n = len(texts)
    result = np.zeros(n, dtype=bool)
    present = _to_numpy(pc.is_valid(texts), False).astype(bool)
    rows = np.nonzero(present if where is None else (np.asarray(where, dtype=bool) & present))[0]
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        batch = pc.replace_substring(texts.take(pa.array(chunk)), "\n", " ").to_pylist()
        labels = identifier.detect(batch)
        if len(labels) != len(batch):
            raise RuntimeError(f"language identifier {getattr(identifier, 'name', identifier)!r} returned "
                               f"{len(labels)} results for {len(batch)} texts")
        result[chunk] = [lang == ENGLISH for lang, _ in labels]
    return result


def image_size_mask(widths, heights, *, min_side: int = BASIC_MIN_IMAGE_SIDE,
                    max_aspect_ratio: float = BASIC_MAX_ASPECT_RATIO) -> np.ndarray:
    """Shorter side >= ``min_side`` and longer / shorter side <= ``max_aspect_ratio`` (null fails)."""
    w = _to_numpy(widths, 0).astype(np.float64) if isinstance(widths, (pa.Array, pa.ChunkedArray)) \
        else np.nan_to_num(np.asarray(widths, dtype=np.float64))
    h = _to_numpy(heights, 0).astype(np.float64) if isinstance(heights, (pa.Array, pa.ChunkedArray)) \
        else np.nan_to_num(np.asarray(heights, dtype=np.float64))
    shorter, longer = np.minimum(w, h), np.maximum(w, h)
    with np.errstate(divide="ignore", invalid="ignore"):
        aspect = longer / shorter
    return (shorter >= min_side) & (aspect <= max_aspect_ratio)


def basic_filter_mask(texts: Texts, widths, heights, identifier: LanguageIdentifier) -> np.ndarray:
    """DataComp's basic filter."""
    cheap = (word_counts(texts) >= BASIC_MIN_WORDS) & (char_counts(texts) >= BASIC_MIN_CHARS)
    cheap &= image_size_mask(widths, heights)
    return cheap & detect_english(texts, identifier, where=cheap)


def _scores(scores) -> np.ndarray:
    if isinstance(scores, (pa.Array, pa.ChunkedArray)):
        if pa.types.is_floating(scores.type):
            return _to_numpy(scores, np.nan)
        return _to_numpy(scores.cast(pa.float64()), np.nan)
    return np.asarray(scores)


def threshold_for_fraction(scores, fraction: float) -> float:
    """The score at index ``int(N * fraction)`` of the scores in descending order (DataComp's
    ``get_threshold``); missing scores (NaN) sort last. ``fraction`` 1.0 keeps every scored row."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    values = _scores(scores)
    n = len(values)
    if n == 0:
        raise ValueError("cannot take a fraction of no rows")
    index = int(n * fraction)
    if index >= n:  # fraction 1.0: DataComp's index would run past the end
        return float(np.nanmin(values)) if np.isfinite(values).any() else float("nan")
    # The element at ``index`` of -sort(-x), found without a full sort; NaNs go last as there.
    return float(-np.partition(-values, index)[index])


def clip_score_mask(scores, threshold: float) -> np.ndarray:
    """Score >= threshold, compared in the scores' own precision (as pandas does in DataComp)."""
    values = _scores(scores)
    return values >= np.asarray(threshold, dtype=values.dtype if values.dtype.kind == "f" else np.float64)


def laion2b_mask(b32_scores, texts: Texts, identifier: LanguageIdentifier) -> np.ndarray:
    """DataComp's LAION-2B reproduction: B/32 CLIP score >= 0.28 and English."""
    keep = clip_score_mask(b32_scores, LAION2B_B32_THRESHOLD)
    return keep & detect_english(texts, identifier, where=keep)


def contains_synset_mask(texts: Texts, first_synset: SynsetLookup, synsets: Iterable[int],
                         chunk_rows: int = 1 << 20) -> np.ndarray:
    """True where some word of the text (``str.split()``) has its first synset in ``synsets``.

    ``first_synset(word)`` is WordNet's ``wordnet.synsets(word)[0].offset()`` (None when the
    word has none); it is called once per distinct word.
    """
    texts = _string_array(texts)
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    wanted = frozenset(int(s) for s in synsets)
    verdicts: dict[str, bool] = {}
    result = np.zeros(len(texts), dtype=bool)
    for start in range(0, len(texts), chunk_rows):
        words = pc.split_pattern_regex(texts.slice(start, chunk_rows), _PY_WHITESPACE_RUN)
        parents = pc.list_parent_indices(words).to_numpy()
        flat = pc.list_flatten(words)
        nonempty = pc.greater(pc.binary_length(flat), 0)
        flat, parents = flat.filter(nonempty), parents[nonempty.to_numpy(zero_copy_only=False)]
        if len(flat) == 0:
            continue
        encoded = flat.dictionary_encode()
        vocabulary = encoded.dictionary.to_pylist()
        for word in vocabulary:
            if word not in verdicts:
                synset = first_synset(word)
                verdicts[word] = synset is not None and int(synset) in wanted
        word_hits = np.fromiter((verdicts[w] for w in vocabulary), dtype=bool, count=len(vocabulary))
        hits = word_hits[encoded.indices.to_numpy()]
        result[start + parents[hits]] = True
    return result


def text_based_mask(texts: Texts, first_synset: SynsetLookup, synsets: Iterable[int],
                    identifier: LanguageIdentifier) -> np.ndarray:
    """DataComp's text-based filter: English and a caption word names an ImageNet-21k synset."""
    named = contains_synset_mask(texts, first_synset, synsets)
    return named & detect_english(texts, identifier, where=named)


def image_caption_mask(texts: Texts, identifier: LanguageIdentifier, where: np.ndarray | None = None) -> np.ndarray:
    """The caption filter of DataComp's image-based baseline (and of its clustering):
    English, more than 1 fastText token, more than 5 characters."""
    cheap = (fasttext_token_counts(texts) >= IMAGE_CAPTION_MIN_TOKENS) & (char_counts(texts) >= IMAGE_CAPTION_MIN_CHARS)
    if where is not None:
        cheap &= np.asarray(where, dtype=bool)
    return cheap & detect_english(texts, identifier, where=cheap)


def _float32_rows(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-d array, got shape {x.shape}")
    return x


def train_kmeans(embeddings: np.ndarray, num_clusters: int, *, seed: int = 0,
                 niter: int = KMEANS_ITERATIONS) -> np.ndarray:
    """faiss k-means (L2) as DataComp's ``image_based_clustering.py`` runs it: 20 iterations,
    no sub-sampling of the training points; on every GPU faiss sees, else on the CPU."""
    import faiss

    x = _float32_rows(embeddings)
    if num_clusters < 1:
        raise ValueError(f"num_clusters must be positive, got {num_clusters}")
    if len(x) < num_clusters:
        raise ValueError(f"k-means needs at least as many embeddings as clusters: {len(x)} < {num_clusters}")
    kmeans = faiss.Kmeans(x.shape[1], num_clusters, niter=niter, seed=seed, verbose=False,
                          max_points_per_centroid=10_000_000, gpu=faiss.get_num_gpus() > 0)
    kmeans.train(x)
    return np.asarray(kmeans.centroids, dtype=np.float32).reshape(num_clusters, x.shape[1])


def nearest_centroids(embeddings: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """For each embedding, the centroid with the largest inner product (DataComp's
    ``argmax(einsum('ik,jk->ij'))``), exactly, through a faiss flat index."""
    import faiss

    x, c = _float32_rows(embeddings), _float32_rows(centroids)
    if x.shape[1] != c.shape[1]:
        raise ValueError(f"embeddings have dimension {x.shape[1]}, centroids {c.shape[1]}")
    if len(x) == 0:
        return np.zeros(0, dtype=np.int64)
    index = faiss.IndexFlatIP(c.shape[1])
    if faiss.get_num_gpus() > 0:
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(c)
    _, labels = index.search(x, 1)
    return labels[:, 0].astype(np.int64)


def target_clusters(target_embeddings: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """The distinct clusters nearest to some target embedding."""
    return np.unique(nearest_centroids(target_embeddings, centroids))


def cluster_member_mask(embeddings: np.ndarray, centroids: np.ndarray, clusters: np.ndarray,
                        where: np.ndarray | None = None) -> np.ndarray:
    """True where the embedding's nearest centroid is one of ``clusters``; only rows where
    ``where`` is true are assigned (the others are False)."""
    n = len(embeddings)
    rows = np.arange(n) if where is None else np.nonzero(np.asarray(where, dtype=bool))[0]
    keep = np.zeros(n, dtype=bool)
    if len(rows):
        keep[rows] = np.isin(nearest_centroids(np.asarray(embeddings)[rows], centroids), clusters)
    return keep


def image_based_mask(embeddings: np.ndarray, centroids: np.ndarray, target_embeddings: np.ndarray,
                     where: np.ndarray | None = None) -> np.ndarray:
    """True where the embedding's nearest centroid is nearest to some target embedding."""
    return cluster_member_mask(embeddings, centroids, target_clusters(target_embeddings, centroids), where)
