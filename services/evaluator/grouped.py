"""WILDS and fairness tasks: zero-shot classification plus metrics over groups of per-sample metadata.

After DataComp's ``eval_utils/wilds_eval.py`` and ``fairness_eval.py``. Each sample carries an
``npy`` member with integer metadata (the task's ``grouping.metadata_fields``); the evaluators are:

* ``grouped``: WILDS ``standard_group_eval`` of accuracy (Camelyon17 by slide, GeoDE by region) or
  top-5 accuracy (Dollar Street by income) -> ``{metric}_avg``, one value per group, ``{metric}_wg``;
* ``iwildcam``: accuracy, macro recall and macro F1 over the labels present (``F1-macro_all``);
* ``fmow``: accuracy by year (``acc_worst_year``) and by region (``acc_worst_region``, the lowest
  non-empty region; a region is left out only if its name contains "Other", which DataComp's
  integer-only metadata never has);
* ``fairface`` (FairFace, UTKFace; no main metric): four zero-shot heads from ``objective:name``
  class names and templates (race, gender, age, toxic); race as white / non-white (class 1 is
  the white class), gender and age by ``race_binary``, gender by gender x race, and how often a
  face is given a crime-related (toxic class >= 18) or non-human (14-17) label, by race.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from winnow.services.evaluator.data import EvalDataError, ImageTextEncoder, WdsEvalSet
from winnow.services.evaluator.metrics import (classification_metrics, group_ids, group_means, macro_f1, macro_recall,
                                        standard_group_eval, target_ranks)
from winnow.services.evaluator.tasks import Grouping
from winnow.services.evaluator.zeroshot import classify_set, run_classification, zero_shot_classifier

FAIRFACE_OBJECTIVES = ("race", "gender", "age", "toxic")
_INVALID_LOGIT = -1e9


def _check_metadata(metadata: np.ndarray | None, grouping: Grouping) -> np.ndarray:
    if metadata is None or metadata.ndim != 2 or metadata.shape[1] != len(grouping.metadata_fields):
        shape = None if metadata is None else metadata.shape
        raise EvalDataError(f"metadata must have one column per field {list(grouping.metadata_fields)}, got {shape}")
    return metadata


def grouped_metrics(grouping: Grouping, logits: np.ndarray, targets: np.ndarray, metadata: np.ndarray) -> dict:
    """The WILDS / fairness metrics of one classification run (added to acc1, acc5, mean_per_class_recall)."""
    metadata = _check_metadata(metadata, grouping)
    fields = grouping.metadata_fields
    predictions = logits.argmax(axis=1)
    correct = (predictions == targets).astype(np.float64)
    if grouping.evaluator == "grouped":
        if grouping.metric == "acc_top5":
            values = (target_ranks(logits, targets) < 5).astype(np.float64)
        elif grouping.metric == "acc":
            values = correct
        else:
            raise ValueError(f"unknown grouped metric {grouping.metric!r}")
        return standard_group_eval(grouping.metric, values, metadata, fields, grouping.group_by)
    if grouping.evaluator == "iwildcam":
        return {"acc_avg": float(correct.mean()), "recall-macro_all": macro_recall(targets, predictions),
                "F1-macro_all": macro_f1(targets, predictions)}
    if grouping.evaluator == "fmow":
        results = standard_group_eval("acc", correct, metadata, fields, ["year"])
        results["acc_worst_year"] = results.pop("acc_wg")
        groups, names = group_ids(metadata, fields, ["region"])
        means, counts = group_means(correct, groups, len(names))
        kept = []
        for index, name in enumerate(names):
            results[f"acc_{name}"] = float(means[index])
            results[f"count_{name}"] = float(counts[index])
            if counts[index] > 0 and "Other" not in name:
                kept.append(float(means[index]))
        results["acc_worst_region"] = min(kept) if kept else 0.0
        return results
    raise ValueError(f"grouping evaluator {grouping.evaluator!r} is not a single-head classification")


def evaluate_grouped(encoder: ImageTextEncoder, eval_set: WdsEvalSet, grouping: Grouping,
                     batch_size: int = 64) -> tuple[dict, int]:
    if grouping.evaluator == "fairface":
        return evaluate_fairface(encoder, eval_set, grouping, batch_size)
    output, classnames = classify_set(encoder, eval_set, batch_size, with_metadata=True)
    metrics = classification_metrics(output.logits, output.targets, len(classnames))
    metrics.update(grouped_metrics(grouping, output.logits, output.targets, output.metadata))
    return metrics, len(output.targets)


def split_objectives(lines: list[str], what: str) -> dict[str, list[str]]:
    """``objective:text`` lines (FairFace's class names and templates) grouped by objective."""
    out: dict[str, list[str]] = defaultdict(list)
    for line in lines:
        objective, sep, text = line.partition(":")
        if not sep:
            raise EvalDataError(f"FairFace {what} must read 'objective:text', got {line!r}")
        out[objective].append(text)
    missing = set(FAIRFACE_OBJECTIVES) - set(out)
    if missing:
        raise EvalDataError(f"FairFace {what} lack the objectives {sorted(missing)}")
    return out


def evaluate_fairface(encoder: ImageTextEncoder, eval_set: WdsEvalSet, grouping: Grouping,
                      batch_size: int = 64) -> tuple[dict, int]:
    classnames = split_objectives(eval_set.classnames(), "class names")
    templates = split_objectives(eval_set.templates(), "templates")
    heads = [zero_shot_classifier(encoder, classnames[o], templates[o]) for o in FAIRFACE_OBJECTIVES]
    widths = [head.shape[1] for head in heads]
    classifier = np.zeros((len(heads), heads[0].shape[0], max(widths)), np.float32)
    for index, head in enumerate(heads):
        classifier[index, :, :head.shape[1]] = head
    output = run_classification(encoder, classifier,
                                eval_set.classification_samples(with_metadata=True, with_label=False), batch_size)
    invalid = np.arange(max(widths))[None, :] >= np.asarray(widths)[:, None]
    logits = np.where(invalid[None], _INVALID_LOGIT, output.logits)
    predictions = logits.argmax(axis=-1)
    return fairface_metrics(predictions, _check_metadata(output.metadata, grouping), grouping.metadata_fields), \
        len(predictions)


def fairface_metrics(predictions: np.ndarray, metadata: np.ndarray, fields: tuple[str, ...]) -> dict:
    """DataComp's ``FairFaceEvaluator`` from per-objective predictions ``(N, 4)`` (race, gender, age, toxic)."""
    column = {name: metadata[:, fields.index(name)] for name in ("age", "gender", "race", "race_binary")}
    head = {name: predictions[:, FAIRFACE_OBJECTIVES.index(name)] for name in FAIRFACE_OBJECTIVES}
    results: dict[str, float] = {}
    non_white = (head["race"] != 1).astype(np.int64)
    results.update(standard_group_eval("acc_race", non_white == column["race_binary"], metadata, fields,
                                       ["race_binary"]))
    for label in ("gender", "age"):
        results.update(standard_group_eval(f"acc_{label}", head[label] == column[label], metadata, fields,
                                           ["race_binary"]))
    results.update(standard_group_eval("acc_gender_x", head["gender"] == column["gender"], metadata, fields,
                                       ["gender", "race"]))
    toxic = head["toxic"]
    results.update(standard_group_eval("toxicity_crime", toxic >= 18, metadata, fields, ["race"]))
    results.update(standard_group_eval("toxicity_nonhuman", (toxic >= 14) & (toxic < 18), metadata, fields, ["race"]))
    return results
