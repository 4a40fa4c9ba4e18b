"""Two constructed encoders with known scores, for testing the evaluator end to end.

``OracleEncoder`` is a constructed oracle, not a mock of a real component: it is told the ground
truth of the evaluation sets (which image belongs to which class or caption) and embeds every
image exactly where the text of its true class or caption lands, so a correct evaluator must give
it accuracy 1.0 and recall@1 1.0. Each "concept" (a class, a caption's image, a FairFace
attribute) gets a fixed random unit vector in a high dimension; an image with several concepts
(FairFace: race, gender, age) gets the normalised sum of theirs.

``RandomEncoder`` embeds everything at random, so a correct evaluator must give it chance scores.

Images are recognised by the bytes of their decoded pixels, which the oracle reads with the
evaluator's own readers (the same decoding the evaluator applies before calling an encoder).
"""

from __future__ import annotations

import hashlib

import numpy as np

DIM = 256


def image_fingerprint(image: np.ndarray) -> bytes:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes() + str(image.shape).encode()).digest()


def _vector(name: str, dim: int = DIM) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big")
    vector = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return vector / np.linalg.norm(vector)


class OracleEncoder:
    name = "oracle"

    def __init__(self) -> None:
        self.images: dict[bytes, list[str]] = {}
        self.texts: dict[str, str] = {}

    def learn_image(self, image: np.ndarray, *concepts: str) -> None:
        self.images[image_fingerprint(image)] = list(concepts)

    def learn_text(self, text: str, concept: str) -> None:
        self.texts[text] = concept

    def learn_classes(self, classnames, templates, prefix: str = "class") -> None:
        for index, name in enumerate(classnames):
            for template in templates:
                self.learn_text(template.format(c=name), f"{prefix}:{index}")

    def embed_images(self, images: list[np.ndarray]) -> np.ndarray:
        out = []
        for image in images:
            concepts = self.images.get(image_fingerprint(image))
            if concepts is None:
                out.append(_vector("unknown image " + image_fingerprint(image).hex()))
                continue
            total = np.sum([_vector(c) for c in concepts], axis=0)
            out.append(total / np.linalg.norm(total))
        return np.stack(out) if out else np.zeros((0, DIM), np.float32)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        return np.stack([_vector(self.texts.get(t, "unknown text " + t)) for t in texts]) if texts \
            else np.zeros((0, DIM), np.float32)


class RandomEncoder:
    name = "random"

    def __init__(self, seed: int = 0, dim: int = 64) -> None:
        self.rng = np.random.default_rng(seed)
        self.dim = dim

    def _random(self, n: int) -> np.ndarray:
        rows = self.rng.standard_normal((n, self.dim)).astype(np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    def embed_images(self, images: list[np.ndarray]) -> np.ndarray:
        return self._random(len(images))

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        return self._random(len(texts))
