"""WinoGAViL (visual associations), after DataComp's ``eval_utils/wino_eval.py``.

Each instance has a cue word, 5 to 12 candidate images and the subset of candidates associated
with the cue. The cue becomes a prompt ("A {cue}" / "An {cue}", lowercased), the model picks as
many candidates as there are true associations (the highest prompt-image similarities), and the
instance scores the Jaccard index of picked and true sets. The main metric is the mean over the
instances with 10 or 12 candidates (``jaccard_score_10-12``). Rows come from the Hugging Face
arrow cache of ``nlphuji/winogavil`` (columns ``candidate_images``, ``cue``, ``candidates``,
``associations``), which is what DataComp reads.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from winnow.services.evaluator.data import EvalDataError, ImageTextEncoder, hf_image, hf_rows
from winnow.services.evaluator.metrics import jaccard, winogavil_scores

COLUMNS = ["candidate_images", "cue", "candidates", "associations"]


def cue_prompt(cue: str) -> str:
    cue = cue.lower()
    return f"An {cue}" if cue[:1] in "aeiou" and cue else f"A {cue}"


def hf_association_rows(files: list[Path]) -> Iterable[dict]:
    for row in hf_rows(files, COLUMNS):
        row["candidate_images"] = [hf_image(cell, files[0].parent) for cell in row["candidate_images"]]
        yield row


def evaluate_association(encoder: ImageTextEncoder, rows: Iterable[dict]) -> tuple[dict, int]:
    """DataComp's WinoGAViL metrics over rows of ``candidate_images``, ``cue``, ``candidates``, ``associations``."""
    scores, counts = [], []
    for row in rows:
        images = row["candidate_images"]
        truth = np.isin(row["candidates"], row["associations"])
        if len(images) != len(truth):
            raise EvalDataError(f"cue {row['cue']!r}: {len(images)} images for {len(truth)} candidates")
        image_features = np.asarray(encoder.embed_images(images), np.float32)
        text_features = np.asarray(encoder.embed_texts([cue_prompt(row["cue"])]), np.float32)
        similarity = (text_features @ image_features.T)[0]
        n_true = int(truth.sum())
        chosen = np.argsort(similarity, kind="stable")[len(similarity) - n_true:] if n_true else np.zeros(0, int)
        scores.append(jaccard(truth, np.isin(np.arange(len(images)), chosen)))
        counts.append(len(images))
    if not scores:
        raise EvalDataError("the WinoGAViL set has no rows")
    return winogavil_scores(np.asarray(scores), np.asarray(counts)), len(scores)
