"""Small deterministic models implementing the interfaces of :mod:`winnow.shared.models.base`.

They stand in for real models in the transport tests only: the tests check that Triton answers
what the same object answers in-process, so what they compute matters less than that it depends
on every input and is exact. Each is built inside Triton from its class (the factory).
"""

from __future__ import annotations

import hashlib
import time

import numpy as np

from winnow.shared.models._checks import check_images, check_texts

TOXIC_WORDS = frozenset({"idiot", "stupid", "hate", "moron", "dumb"})
POISON_TEXT = "__raise__"  # a text the toy toxicity model fails on, to test error isolation


def _unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float64)
    return (rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)).astype(np.float32)


class WordListToxicity:
    """Share of a text's words that are on a fixed list of insults."""

    name = "toy-word-list-toxicity"

    def score(self, texts: list[str]) -> np.ndarray:
        check_texts(texts, self.name)
        if POISON_TEXT in texts:
            raise RuntimeError(f"{self.name}: refusing the poison text")
        scores = []
        for text in texts:
            words = [w.strip(".,!?").lower() for w in text.split()]
            scores.append(sum(w in TOXIC_WORDS for w in words) / max(1, len(words)))
        return np.asarray(scores, dtype=np.float32)


class SlowToxicity(WordListToxicity):
    """Sleeps before answering: for client timeouts."""

    name = "toy-slow-toxicity"

    def __init__(self, seconds: float = 3.0) -> None:
        self.seconds = seconds

    def score(self, texts: list[str]) -> np.ndarray:
        time.sleep(self.seconds)
        return super().score(texts)


class BrightnessNSFW:
    """Mean brightness in [0, 1]."""

    name = "toy-brightness-nsfw"

    def score(self, images: list[np.ndarray]) -> np.ndarray:
        check_images(images, self.name)
        return np.asarray([image.mean() / 255.0 for image in images], dtype=np.float32)


class GridFaceDetector:
    """``height % 4`` boxes per image on a diagonal, scored by the brightness under them (ragged output)."""

    name = "toy-grid-faces"

    def detect(self, images: list[np.ndarray]) -> list[np.ndarray]:
        check_images(images, self.name)
        faces = []
        for image in images:
            height, width = image.shape[:2]
            boxes = []
            for k in range(height % 4):
                x0, y0 = 0.2 * k, 0.15 * k
                x1, y1 = x0 + 0.2, y0 + 0.25
                patch = image[int(y0 * height) : int(y1 * height), int(x0 * width) : int(x1 * width)]
                boxes.append([x0, y0, x1, y1, patch.mean() / 255.0 if patch.size else 0.0])
            faces.append(np.asarray(boxes, dtype=np.float32).reshape(-1, 5))
        return faces


class GridDescriptor:
    """A 4 x 4 grid of mean grey levels, L2-normalised."""

    name = "toy-grid-descriptor"
    dim = 16
    threshold = 0.9

    def describe(self, images: list[np.ndarray]) -> np.ndarray:
        check_images(images, self.name)
        rows = []
        for image in images:
            grey = image.astype(np.float64).mean(axis=2)
            cells = [cell for band in np.array_split(grey, 4, axis=0) for cell in np.array_split(band, 4, axis=1)]
            rows.append([cell.mean() if cell.size else 0.0 for cell in cells])
        return _unit(np.asarray(rows).reshape(-1, self.dim))


class StatsClip:
    """Images: channel means and deviations and the size; texts: bytes of their SHA-256."""

    name = "toy-stats-clip"
    dim = 8

    def embed_images(self, images: list[np.ndarray]) -> np.ndarray:
        check_images(images, self.name)
        rows = [[*image.mean(axis=(0, 1)), *image.std(axis=(0, 1)), image.shape[0] / 100, image.shape[1] / 100]
                for image in images]
        return _unit(np.asarray(rows).reshape(-1, self.dim))

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        check_texts(texts, self.name)
        rows = [list(hashlib.sha256(text.encode("utf-8")).digest()[: self.dim]) for text in texts]
        return _unit(np.asarray(rows, dtype=np.float64).reshape(-1, self.dim) + 1.0)


class KeywordLanguage:
    """English if a text has "the", French if "le", else German, with a made-up probability."""

    name = "toy-keyword-language"

    def detect(self, texts: list[str]) -> list[tuple[str, float]]:
        check_texts(texts, self.name)
        answers = []
        for text in texts:
            words = text.lower().split()
            if "the" in words:
                answers.append(("en", 0.5 + 0.5 * words.count("the") / len(words)))
            elif "le" in words:
                answers.append(("fr", 0.75))
            else:
                answers.append(("de", 0.25))
        return answers
