"""Evaluation metrics with DataComp's definitions, vectorised in numpy.

The definitions follow what DataComp's evaluation calls:

* classification (clip_benchmark ``zeroshot_classification``): top-k accuracy, and the mean
  per-class recall, which is scikit-learn's ``balanced_accuracy_score`` (the recall of each class
  that occurs in the targets, averaged);
* retrieval (clip_benchmark ``zeroshot_retrieval``): ``image_retrieval_recall@k`` is, for each
  caption, whether its image is among the k best images; ``text_retrieval_recall@k`` is, for each
  image, whether at least one of its captions is among the k best captions; DataComp's main
  metric ``mean_recall@1`` is the mean of the two recall@1;
* WILDS and fairness (the ``wilds`` package's ``Accuracy``, ``Recall``, ``F1`` and
  ``standard_group_eval``): group-wise means over integer metadata, the worst group, and macro
  recall and F1 over the labels that occur in the targets;
* WinoGAViL: the Jaccard index of the chosen and the true associations, averaged per number of
  candidates.

Ranks break ties by index (the lower index ranks first), the same order as ``argmax``: a model
whose scores are all equal gets the first class, not every class.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RETRIEVAL_KS = (1, 5, 10)


def target_ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of each row's target column among that row's scores (ties: lower index first)."""
    scores = np.asarray(scores)
    targets = np.asarray(targets, dtype=np.int64)
    if scores.ndim != 2 or targets.shape != (scores.shape[0],):
        raise ValueError(f"scores must be (N, C) and targets (N,), got {scores.shape} and {targets.shape}")
    rows = np.arange(scores.shape[0])
    target_scores = scores[rows, targets][:, None]
    columns = np.arange(scores.shape[1])[None, :]
    ahead = (scores > target_scores) | ((scores == target_scores) & (columns < targets[:, None]))
    return ahead.sum(axis=1)


def top_k_accuracy(scores: np.ndarray, targets: np.ndarray, ks: Sequence[int] = (1,)) -> dict[int, float]:
    """Fraction of rows whose target is among the k highest scores, for each k."""
    if len(targets) == 0:
        return {k: float("nan") for k in ks}
    ranks = target_ranks(scores, targets)
    return {k: float(np.mean(ranks < k)) for k in ks}


def mean_per_class_recall(targets: np.ndarray, predictions: np.ndarray) -> float:
    """scikit-learn's ``balanced_accuracy_score``: the mean recall of the classes present in ``targets``."""
    targets = np.asarray(targets, dtype=np.int64)
    predictions = np.asarray(predictions, dtype=np.int64)
    if len(targets) == 0:
        return float("nan")
    classes, inverse = np.unique(targets, return_inverse=True)
    hits = np.bincount(inverse, weights=(predictions == targets).astype(np.float64), minlength=len(classes))
    support = np.bincount(inverse, minlength=len(classes))
    return float(np.mean(hits / support))


def classification_metrics(logits: np.ndarray, targets: np.ndarray, num_classes: int) -> dict[str, float | None]:
    """DataComp's ``evaluate_webdataset`` metrics: acc1, acc5 (None under 5 classes), mean per-class recall."""
    ks = (1, 5) if num_classes >= 5 else (1,)
    accuracy = top_k_accuracy(logits, targets, ks)
    predictions = np.asarray(logits).argmax(axis=1) if len(targets) else np.zeros(0, np.int64)
    return {
        "acc1": accuracy[1],
        "acc5": accuracy.get(5),
        "mean_per_class_recall": mean_per_class_recall(targets, predictions),
    }


def _per_label_counts(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True positives, false positives and false negatives of each label in ``unique(y_true)``."""
    labels = np.unique(y_true)
    true_index = np.searchsorted(labels, y_true)
    pred_in = np.isin(y_pred, labels)
    pred_index = np.searchsorted(labels, y_pred)
    correct = y_pred == y_true
    tp = np.bincount(true_index[correct], minlength=len(labels))
    fn = np.bincount(true_index[~correct], minlength=len(labels))
    fp = np.bincount(pred_index[pred_in & ~correct], minlength=len(labels))
    return tp, fp, fn


def macro_recall(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """WILDS ``Recall(average="macro")``: recall averaged over the labels that occur in ``y_true``."""
    y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    if len(y_true) == 0:
        return 0.0
    tp, _, fn = _per_label_counts(y_true, y_pred)
    return float(np.mean(tp / (tp + fn)))


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """WILDS ``F1(average="macro")``: F1 averaged over the labels in ``y_true`` (0 where undefined)."""
    y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    if len(y_true) == 0:
        return 0.0
    tp, fp, fn = _per_label_counts(y_true, y_pred)
    denominator = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.zeros(len(tp), np.float64), where=denominator > 0)
    return float(np.mean(f1))


def retrieval_recall(image_embeddings: np.ndarray, text_embeddings: np.ndarray, text_image: np.ndarray,
                     ks: Sequence[int] = RETRIEVAL_KS, chunk: int = 1024) -> dict[str, float]:
    """clip_benchmark's retrieval recall@k in both directions, plus DataComp's ``mean_recall@1``.

    ``text_image[j]`` is the index of the image that caption ``j`` describes; an image may have
    several captions. Scores are dot products (the embeddings are L2-normalised), computed in
    chunks so that the full captions-by-images matrix never has to fit in memory.
    """
    images = np.asarray(image_embeddings, np.float32)
    texts = np.asarray(text_embeddings, np.float32)
    text_image = np.asarray(text_image, np.int64)
    if len(texts) != len(text_image):
        raise ValueError(f"{len(texts)} caption embeddings but {len(text_image)} caption-to-image indices")
    if len(images) == 0 or len(texts) == 0:
        raise ValueError("retrieval needs at least one image and one caption")
    image_ranks = np.concatenate([
        target_ranks(texts[start:start + chunk] @ images.T, text_image[start:start + chunk])
        for start in range(0, len(texts), chunk)])
    text_ranks = np.concatenate([_best_positive_ranks(images[start:start + chunk] @ texts.T,
                                                      np.arange(start, min(start + chunk, len(images))), text_image)
                                 for start in range(0, len(images), chunk)])
    metrics: dict[str, float] = {}
    for k in ks:
        metrics[f"image_retrieval_recall@{k}"] = float(np.mean(image_ranks < k))
        metrics[f"text_retrieval_recall@{k}"] = float(np.mean(text_ranks < k))
    if 1 in ks:
        metrics["mean_recall@1"] = 0.5 * (metrics["text_retrieval_recall@1"] + metrics["image_retrieval_recall@1"])
    return metrics


def _best_positive_ranks(scores: np.ndarray, image_ids: np.ndarray, text_image: np.ndarray) -> np.ndarray:
    """For each image row, the rank of its best-scoring caption among all captions (inf without captions)."""
    positive = text_image[None, :] == image_ids[:, None]
    masked = np.where(positive, scores, -np.inf)
    best = masked.max(axis=1)
    best_index = np.argmax(positive & (scores == best[:, None]), axis=1)
    columns = np.arange(scores.shape[1])[None, :]
    ahead = (scores > best[:, None]) | ((scores == best[:, None]) & (columns < best_index[:, None]))
    ranks = ahead.sum(axis=1).astype(np.float64)
    ranks[~positive.any(axis=1)] = np.inf
    return ranks


# --- WILDS-style group evaluation -----------------------------------------------------------------


def group_ids(metadata: np.ndarray, fields: Sequence[str], group_by: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """WILDS ``CombinatorialGrouper``: one group per combination of the ``group_by`` fields' values.

    Each field's cardinality is its largest value plus one (so unseen values give empty groups);
    the first field (in ``fields`` order) varies fastest. Returns each row's group and each
    group's name as WILDS's ``group_field_str`` writes it, e.g. ``race:3_gender:1``.
    """
    metadata = np.asarray(metadata)
    if metadata.ndim != 2 or metadata.shape[1] != len(fields):
        raise ValueError(f"metadata must be (N, {len(fields)}) for fields {list(fields)}, got {metadata.shape}")
    indices = [i for i, name in enumerate(fields) if name in group_by]
    if len(indices) != len(group_by):
        raise ValueError(f"group fields {list(group_by)} are not all among {list(fields)}")
    values = metadata[:, indices]
    if not np.all(values == np.round(values)):
        raise ValueError("group metadata must be integers")
    values = values.astype(np.int64)
    if values.size and values.min() < 0:
        raise ValueError("group metadata cannot be negative")
    cardinality = values.max(axis=0) + 1 if len(values) else np.ones(len(indices), np.int64)
    factors = np.concatenate(([1], np.cumprod(cardinality)[:-1])).astype(np.int64)
    groups = values @ factors
    names = []
    ordered = [fields[i] for i in indices]
    for group in range(int(np.prod(cardinality))):
        parts = [f"{ordered[i]}:{(group // factors[i]) % cardinality[i]}" for i in reversed(range(len(indices)))]
        names.append("_".join(parts))
    return groups, names


def group_means(values: np.ndarray, groups: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-group mean of ``values`` (0 for an empty group) and per-group counts."""
    counts = np.bincount(groups, minlength=n_groups)
    sums = np.bincount(groups, weights=np.asarray(values, np.float64), minlength=n_groups)
    return np.divide(sums, counts, out=np.zeros(n_groups), where=counts > 0), counts


def standard_group_eval(name: str, values: np.ndarray, metadata: np.ndarray, fields: Sequence[str],
                        group_by: Sequence[str]) -> dict[str, float]:
    """WILDS ``standard_group_eval`` for an element-wise metric (e.g. per-sample correctness).

    Keys: ``{name}_avg`` (mean over all rows), ``{name}_{group}`` and ``count_{group}`` for every
    group (empty ones included, as 0), and ``{name}_wg``, the worst (lowest) non-empty group.
    """
    values = np.asarray(values, np.float64)
    groups, names = group_ids(metadata, fields, group_by)
    means, counts = group_means(values, groups, len(names))
    results: dict[str, float] = {f"{name}_avg": float(values.mean()) if len(values) else 0.0}
    for index, group_name in enumerate(names):
        results[f"{name}_{group_name}"] = float(means[index])
        results[f"count_{group_name}"] = float(counts[index])
    nonempty = means[counts > 0]
    results[f"{name}_wg"] = float(nonempty.min()) if len(nonempty) else 0.0
    return results


# --- WinoGAViL --------------------------------------------------------------------------------------


def jaccard(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """scikit-learn's binary ``jaccard_score``: |true ∩ predicted| / |true ∪ predicted| (0 if both empty)."""
    y_true, y_pred = np.asarray(y_true, bool), np.asarray(y_pred, bool)
    union = np.sum(y_true | y_pred)
    return float(np.sum(y_true & y_pred) / union) if union else 0.0


def winogavil_scores(scores: np.ndarray, candidate_counts: np.ndarray) -> dict[str, float]:
    """DataComp's WinoGAViL summary: mean Jaccard overall, per 5/6/10/12 candidates and for 5-6 and 10-12."""
    scores = np.asarray(scores, np.float64)
    counts = np.asarray(candidate_counts)

    def mean(mask) -> float:
        return float(scores[mask].mean()) if np.any(mask) else float("nan")

    return {
        "avg_jaccard_score": mean(np.ones(len(scores), bool)),
        "jaccard_score_5": mean(counts == 5),
        "jaccard_score_6": mean(counts == 6),
        "jaccard_score_10": mean(counts == 10),
        "jaccard_score_12": mean(counts == 12),
        "jaccard_score_5-6": mean(counts <= 6),
        "jaccard_score_10-12": mean(counts >= 10),
    }
