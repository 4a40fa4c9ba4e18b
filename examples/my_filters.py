"""An example of a filter of your own (see ``services/filter/user_filter.py`` for the contract).

    PYTHONPATH=examples winnow filter --name my_filters:english_top30 \\
        --metadata_dir runs/x/embed --save_path runs/x/english_top30.npy

Keeps the top 30% by CLIP score among English captions with at least 5 words, and says why
every other candidate went.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from winnow.services.filter.apply import default_language_identifier
from winnow.services.filter.baselines import detect_english, threshold_for_fraction, word_counts

MIN_WORDS = 5
FRACTION = 0.3


def english_top30(metadata: pa.Table, embeddings: dict[str, np.ndarray]):
    """Keep-mask and a reason per row: ``too_few_words``, ``not_english`` or ``low_clip_score``."""
    texts = metadata["text"]
    wordy = word_counts(texts) >= MIN_WORDS
    english = detect_english(texts, default_language_identifier(), where=wordy)
    eligible = wordy & english
    # The CLIP score is the cosine of the image and text embeddings of one model (b32, l14, ...).
    model = sorted(key[: -len("_img")] for key in embeddings if key.endswith("_img"))[0]
    image, text = embeddings[f"{model}_img"].astype(np.float32), embeddings[f"{model}_txt"].astype(np.float32)
    scores = (image * text).sum(axis=1)
    keep = np.zeros(len(texts), dtype=bool)
    if eligible.any():
        keep = eligible & (scores >= threshold_for_fraction(scores[eligible], FRACTION))
    reasons = np.where(~wordy, "too_few_words", np.where(~english, "not_english", "low_clip_score"))
    return keep, [None if kept else reason for kept, reason in zip(keep.tolist(), reasons.tolist())]


english_top30.columns = ["text"]  # read only what the filter uses (the uid always comes along)
