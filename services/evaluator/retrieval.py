"""Zero-shot image-text retrieval, after clip_benchmark's ``zeroshot_retrieval`` as DataComp calls it.

Every image and every caption is embedded once; each caption ranks all images
(``image_retrieval_recall@k``) and each image ranks all captions (``text_retrieval_recall@k``,
a hit when any of its captions is in the top k); DataComp's main metric is ``mean_recall@1``, the
mean of the two recall@1. Samples come from a webdataset whose ``txt`` member holds one caption per
line (``dataset_type.txt`` = ``retrieval``), or from the Hugging Face arrow cache of
``nlphuji/flickr_1k_test_image_text_retrieval`` / ``nlphuji/mscoco_2014_5k_test_image_text_retrieval`` (columns ``image``
and ``caption``, a list of captions), which is what DataComp reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from winnow.services.evaluator.data import EvalDataError, ImageTextEncoder, batched, hf_image, hf_rows
from winnow.services.evaluator.metrics import RETRIEVAL_KS, retrieval_recall


def hf_retrieval_samples(files: list[Path]) -> Iterator[tuple[np.ndarray, list[str]]]:
    for row in hf_rows(files, ["image", "caption"]):
        captions = row["caption"]
        if isinstance(captions, str):
            captions = [captions]
        yield hf_image(row["image"], files[0].parent), list(captions)


def evaluate_retrieval(encoder: ImageTextEncoder, samples: Iterable[tuple[np.ndarray, list[str]]],
                       batch_size: int = 64) -> tuple[dict, int]:
    """Recall@1/5/10 both ways and ``mean_recall@1`` over ``(image, captions)`` samples; and the image count."""
    image_embeddings, text_embeddings, text_image = [], [], []
    seen = 0
    for batch in batched(samples, batch_size):
        image_embeddings.append(np.asarray(encoder.embed_images([image for image, _ in batch]), np.float32))
        texts = [caption for _, captions in batch for caption in captions]
        text_image.extend(seen + offset for offset, (_, captions) in enumerate(batch) for _ in captions)
        if texts:
            text_embeddings.append(np.asarray(encoder.embed_texts(texts), np.float32))
        seen += len(batch)
    if not seen or not text_embeddings:
        raise EvalDataError("the retrieval set has no images or no captions")
    images = _normalise(np.concatenate(image_embeddings))
    texts = _normalise(np.concatenate(text_embeddings))
    metrics = retrieval_recall(images, texts, np.asarray(text_image), ks=RETRIEVAL_KS)
    return metrics, seen


def _normalise(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=-1, keepdims=True), 1e-12)
