"""Metrics on hand-made cases with known answers, and against plain reference loops."""

from __future__ import annotations

import numpy as np
import pytest

from winnow.services.evaluator.grouped import fairface_metrics, grouped_metrics
from winnow.services.evaluator.metrics import (classification_metrics, group_ids, jaccard, macro_f1, macro_recall,
                                        mean_per_class_recall, retrieval_recall, standard_group_eval, target_ranks,
                                        top_k_accuracy, winogavil_scores)
from winnow.services.evaluator.tasks import Grouping


def test_top_k_accuracy_and_ties():
    scores = np.array([[0.1, 0.9, 0.5, 0.2],    # target 1: rank 0
                       [0.8, 0.1, 0.7, 0.9],    # target 2: rank 2
                       [0.3, 0.3, 0.3, 0.3]])   # target 2: all tied, ranks after columns 0 and 1
    targets = np.array([1, 2, 2])
    assert target_ranks(scores, targets).tolist() == [0, 2, 2]
    assert top_k_accuracy(scores, targets, (1, 2, 3)) == {1: pytest.approx(1 / 3), 2: pytest.approx(1 / 3), 3: 1.0}
    # a collapsed model (all scores equal) predicts class 0, as argmax does, not every class
    assert top_k_accuracy(np.zeros((4, 3)), np.array([0, 1, 2, 2]), (1,))[1] == 0.25


def test_classification_metrics():
    logits = np.eye(5)[[0, 1, 2, 3, 4, 0]]  # predictions 0..4, then 0
    targets = np.array([0, 1, 2, 3, 4, 4])
    metrics = classification_metrics(logits, targets, num_classes=5)
    assert metrics["acc1"] == pytest.approx(5 / 6)
    assert metrics["acc5"] == 1.0
    assert metrics["mean_per_class_recall"] == pytest.approx((1 + 1 + 1 + 1 + 0.5) / 5)
    assert classification_metrics(np.eye(2), np.array([0, 1]), num_classes=2)["acc5"] is None


def test_mean_per_class_recall_is_balanced_accuracy():
    assert mean_per_class_recall([0, 0, 0, 1], [0, 0, 1, 1]) == pytest.approx((2 / 3 + 1) / 2)
    # a class that is only predicted (7) does not count, as in scikit-learn
    assert mean_per_class_recall([0, 0, 1, 1], [0, 7, 1, 1]) == pytest.approx((0.5 + 1) / 2)


def test_macro_recall_and_f1_over_the_labels_in_the_targets():
    y_true = np.array([0, 0, 1, 1, 2])
    y_pred = np.array([0, 1, 1, 1, 0])
    # class 0: P=1/2 R=1/2 F1=1/2; class 1: P=2/3 R=1 F1=4/5; class 2: P=0 R=0 F1=0
    assert macro_recall(y_true, y_pred) == pytest.approx((0.5 + 1 + 0) / 3)
    assert macro_f1(y_true, y_pred) == pytest.approx((0.5 + 0.8 + 0) / 3)
    # a predicted label absent from the targets is not averaged, but still costs its true class
    assert macro_f1(np.array([0, 0]), np.array([0, 9])) == pytest.approx(2 / 3)


def test_retrieval_recall_by_hand():
    e = np.eye(3, dtype=np.float32)
    images = e  # image i is e_i
    texts = np.stack([e[0], e[1], e[2], e[2]])  # captions 0, 1 describe image 0; 2 image 1; 3 image 2
    text_image = np.array([0, 0, 1, 2])
    metrics = retrieval_recall(images, texts, text_image, ks=(1, 2))
    # captions -> images: c0 hits; c1 prefers image 1 (rank 1); c2 ties image 0 (lower index) and loses to
    # image 2 (rank 2); c3 hits
    assert metrics["image_retrieval_recall@1"] == 0.5
    assert metrics["image_retrieval_recall@2"] == 0.75
    # images -> captions: image 0 hits (c0); image 1's caption c2 scores 0 behind c1 and the tied c0 (rank 2);
    # image 2's caption c3 ties c2, which comes first (rank 1)
    assert metrics["text_retrieval_recall@1"] == pytest.approx(1 / 3)
    assert metrics["text_retrieval_recall@2"] == pytest.approx(2 / 3)
    assert metrics["mean_recall@1"] == pytest.approx((0.5 + 1 / 3) / 2)


def _reference_recall(images, texts, text_image, k):
    """clip_benchmark's definition, written as plain loops (no ties in random data)."""
    scores = texts @ images.T
    image_hits = [text_image[t] in np.argsort(-scores[t])[:k] for t in range(len(texts))]
    text_hits = [bool(set(np.argsort(-scores[:, i])[:k]) & set(np.flatnonzero(text_image == i)))
                 for i in range(len(images))]
    return np.mean(image_hits), np.mean(text_hits)


def test_retrieval_recall_matches_the_reference_in_chunks():
    rng = np.random.default_rng(0)
    images = rng.standard_normal((37, 16)).astype(np.float32)
    text_image = np.concatenate([np.arange(37), rng.integers(0, 37, 60)])
    texts = images[text_image] + 1.5 * rng.standard_normal((len(text_image), 16)).astype(np.float32)
    whole = retrieval_recall(images, texts, text_image)
    chunked = retrieval_recall(images, texts, text_image, chunk=5)
    assert whole == chunked
    for k in (1, 5, 10):
        image_recall, text_recall = _reference_recall(images, texts, text_image, k)
        assert whole[f"image_retrieval_recall@{k}"] == pytest.approx(image_recall)
        assert whole[f"text_retrieval_recall@{k}"] == pytest.approx(text_recall)


def test_an_image_without_captions_is_a_miss():
    metrics = retrieval_recall(np.eye(2), np.eye(2)[[0]], np.array([0]), ks=(1,))
    assert metrics["text_retrieval_recall@1"] == 0.5 and metrics["image_retrieval_recall@1"] == 1.0


def test_groups_named_and_ordered_as_wilds():
    fields = ("age", "gender", "race", "race_binary")
    metadata = np.array([[0, 0, 0, 1], [0, 1, 2, 1], [0, 1, 1, 0]])
    groups, names = group_ids(metadata, fields, ("race", "gender"))  # order of the fields, not of the request
    assert len(names) == 2 * 3 and names[0] == "race:0_gender:0" and names[1] == "race:0_gender:1"
    assert groups.tolist() == [0, 5, 3] and names[5] == "race:2_gender:1"
    with pytest.raises(ValueError, match="negative"):
        group_ids(np.array([[-1]]), ("x",), ("x",))


def test_standard_group_eval_skips_empty_groups_for_the_worst():
    metadata = np.array([[0], [0], [2], [2], [2]])  # group 1 is empty
    values = np.array([1, 0, 1, 1, 1])
    results = standard_group_eval("acc", values, metadata, ("region",), ("region",))
    assert results == {"acc_avg": 0.8, "acc_region:0": 0.5, "count_region:0": 2.0, "acc_region:1": 0.0,
                       "count_region:1": 0.0, "acc_region:2": 1.0, "count_region:2": 3.0, "acc_wg": 0.5}


def test_fmow_worst_region_and_year():
    grouping = Grouping(evaluator="fmow", metadata_fields=("region", "year", "y"))
    targets = np.array([0, 1, 1, 0, 1, 0])
    logits = np.eye(2)[[0, 1, 0, 0, 1, 1]]  # correct: 1 1 0 1 1 0
    metadata = np.array([[0, 0, 0], [0, 0, 1], [1, 1, 1], [1, 1, 0], [2, 0, 1], [2, 1, 0]])
    results = grouped_metrics(grouping, logits, targets, metadata)
    assert results["acc_avg"] == pytest.approx(4 / 6)
    assert results["acc_year:0"] == 1.0 and results["acc_worst_year"] == pytest.approx(1 / 3)
    assert [results[f"acc_region:{r}"] for r in range(3)] == [1.0, 0.5, 0.5]
    assert results["acc_worst_region"] == 0.5 and "acc_wg" not in results


def test_dollar_street_top5_by_income_and_iwildcam():
    grouping = Grouping(evaluator="grouped", metadata_fields=("income_ds", "income_meta", "region"),
                        group_by=("income_ds",), metric="acc_top5")
    logits = np.tile(np.arange(10, dtype=float)[::-1], (4, 1))  # ranks: class c is at rank c
    targets = np.array([0, 4, 5, 9])  # in the top 5: yes, yes, no, no
    metadata = np.array([[0, 0, 0], [0, 0, 0], [1, 0, 0], [1, 0, 0]])
    results = grouped_metrics(grouping, logits, targets, metadata)
    assert (results["acc_top5_avg"], results["acc_top5_income_ds:0"], results["acc_top5_wg"]) == (0.5, 1.0, 0.0)
    iwildcam = Grouping(evaluator="iwildcam", metadata_fields=("location", "y"))
    results = grouped_metrics(iwildcam, np.eye(3)[[0, 1, 1, 1, 0]], np.array([0, 0, 1, 1, 2]), np.zeros((5, 2)))
    assert results["F1-macro_all"] == pytest.approx((0.5 + 0.8 + 0) / 3)
    assert results["acc_avg"] == pytest.approx(3 / 5)


def test_fairface_metrics_by_hand():
    fields = ("age", "gender", "race", "race_binary")
    metadata = np.array([[1, 0, 1, 0], [2, 1, 3, 1], [3, 0, 0, 1], [3, 1, 1, 0]])
    # predicted race, gender, age, toxic
    predictions = np.array([[1, 0, 1, 0], [3, 0, 2, 19], [1, 0, 3, 15], [2, 1, 0, 0]])
    results = fairface_metrics(predictions, metadata, fields)
    # race as non-white (class != 1) vs race_binary: right, right, wrong (said white), wrong (said non-white)
    assert results["acc_race_avg"] == 0.5 and results["acc_race_race_binary:0"] == 0.5
    assert results["acc_gender_avg"] == 0.75 and results["acc_gender_wg"] == 0.5
    assert results["acc_age_avg"] == 0.75
    assert results["acc_gender_x_race:3_gender:1"] == 0.0 and results["acc_gender_x_wg"] == 0.0
    assert results["toxicity_crime_avg"] == 0.25 and results["toxicity_crime_race:3"] == 1.0
    assert results["toxicity_nonhuman_avg"] == 0.25 and results["toxicity_nonhuman_race:0"] == 1.0


def test_jaccard_and_winogavil_groups():
    assert jaccard([1, 1, 0, 0], [1, 0, 1, 0]) == pytest.approx(1 / 3)
    assert jaccard([0, 0], [0, 0]) == 0.0
    scores = winogavil_scores(np.array([1.0, 0.5, 0.0, 0.25]), np.array([5, 6, 10, 12]))
    assert scores["jaccard_score_5-6"] == 0.75 and scores["jaccard_score_10-12"] == 0.125
    assert scores["avg_jaccard_score"] == pytest.approx(1.75 / 4)
    assert np.isnan(winogavil_scores(np.array([1.0]), np.array([5]))["jaccard_score_12"])
