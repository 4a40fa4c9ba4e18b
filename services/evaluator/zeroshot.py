"""Zero-shot classification, after clip_benchmark's ``zeroshot_classification`` as DataComp calls it.

Each class's weight is the mean of its L2-normalised prompt embeddings (one prompt per template,
``template.format(c=classname)``), normalised again; an image's logits are ``100 * image @ W``.
Works with any encoder that has ``embed_images`` and ``embed_texts`` (e.g.
:class:`winnow.shared.models.clip.OpenClipEncoder`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from winnow.services.evaluator.data import EvalDataError, ImageTextEncoder, WdsEvalSet, batched
from winnow.services.evaluator.metrics import classification_metrics

LOGIT_SCALE = 100.0
_TEXTS_PER_CALL = 4096


def _normalise(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, np.float32)
    return rows / np.maximum(np.linalg.norm(rows, axis=-1, keepdims=True), 1e-12)


def zero_shot_classifier(encoder: ImageTextEncoder, classnames: Sequence[str], templates: Sequence[str]) -> np.ndarray:
    """Class weights ``(D, C)``: per class, the renormalised mean of its normalised prompt embeddings."""
    if not classnames or not templates:
        raise EvalDataError("zero-shot classification needs class names and templates")
    classes_per_call = max(1, _TEXTS_PER_CALL // len(templates))
    weights = []
    for chunk in batched(classnames, classes_per_call):
        prompts = [template.format(c=name) for name in chunk for template in templates]
        embedded = _normalise(encoder.embed_texts(prompts)).reshape(len(chunk), len(templates), -1)
        weights.append(_normalise(embedded.mean(axis=1)))
    return np.concatenate(weights).T


@dataclass
class ClassificationOutput:
    logits: np.ndarray  # (N, C), or (N, M, C) for several objectives
    targets: np.ndarray  # (N,)
    metadata: np.ndarray | None  # (N, F) when read


def run_classification(encoder: ImageTextEncoder, classifier: np.ndarray,
                       samples: Iterable[tuple[np.ndarray, int, np.ndarray | None]],
                       batch_size: int = 64) -> ClassificationOutput:
    """Logits of every sample against ``classifier`` (``(D, C)`` or ``(M, D, C)`` for several objectives)."""
    logits, targets, metadata = [], [], []
    for batch in batched(samples, batch_size):
        features = _normalise(encoder.embed_images([image for image, _, _ in batch]))
        if classifier.ndim == 3:
            logits.append(LOGIT_SCALE * np.einsum("bf,mfc->bmc", features, classifier))
        else:
            logits.append(LOGIT_SCALE * features @ classifier)
        targets.extend(label for _, label, _ in batch)
        metadata.extend(meta for _, _, meta in batch)
    if not targets:
        raise EvalDataError("the evaluation set has no samples")
    stacked = np.stack(metadata) if metadata[0] is not None else None
    if stacked is not None and stacked.ndim == 1:
        stacked = stacked[:, None]
    return ClassificationOutput(np.concatenate(logits), np.asarray(targets, np.int64), stacked)


def classify_set(encoder: ImageTextEncoder, eval_set: WdsEvalSet, batch_size: int = 64,
                 with_metadata: bool = False) -> tuple[ClassificationOutput, list[str]]:
    """Build the classifier from the set's class names and templates, then classify every image."""
    classnames = eval_set.classnames()
    classifier = zero_shot_classifier(encoder, classnames, eval_set.templates())
    output = run_classification(encoder, classifier, eval_set.classification_samples(with_metadata), batch_size)
    bad = (output.targets < 0) | (output.targets >= len(classnames))
    if bad.any():
        raise EvalDataError(f"{eval_set.folder}: class indices outside 0..{len(classnames) - 1}: "
                            f"{sorted(set(output.targets[bad].tolist()))[:5]}")
    return output, classnames


def evaluate_zeroshot_classification(encoder: ImageTextEncoder, eval_set: WdsEvalSet,
                                     batch_size: int = 64) -> tuple[dict, int]:
    """DataComp's classification metrics (acc1, acc5, mean_per_class_recall) and the sample count."""
    output, classnames = classify_set(encoder, eval_set, batch_size)
    return classification_metrics(output.logits, output.targets, len(classnames)), len(output.targets)
