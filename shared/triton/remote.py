"""Triton-backed implementations of the model interfaces in :mod:`shared.models.base`.

Each takes a :class:`~shared.triton.client.TritonClient` and the name of a served model, reads the
model's configuration once (its kind, batch size and, for embeddings, ``dim`` and ``threshold``)
and then answers exactly as the in-process class does: same inputs, same outputs, same checks.
Inputs are split into requests of at most the model's ``max_batch_size`` rows (and about
:data:`MAX_REQUEST_BYTES`); the server's dynamic batcher merges requests from concurrent callers.
Images travel as lossless raw frames (:func:`shared.triton.contract.encode_image`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from shared.models._checks import check_images, check_texts
from shared.triton import contract
from shared.triton.client import TritonClient
from shared.triton.contract import ModelKind

MAX_REQUEST_BYTES = 64 * 1024 * 1024  # a request holds at least one image, however large


class _RemoteModel:
    kind: ModelKind

    def __init__(self, client: TritonClient, model: str) -> None:
        self.client = client
        self.model = model
        self.name = f"triton:{model}"
        config = client.model_config(model)
        self.parameters = {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}
        served = self.parameters.get(contract.PARAM_KIND)
        if served != self.kind.value:
            raise ValueError(f"Triton model {model!r} serves {served or 'no winnow kind'}, not {self.kind.value}")
        self.max_batch_size = max(1, int(config.get("max_batch_size", 1)))
        self._signature = contract.SIGNATURES[self.kind]

    def _texts(self, texts: list[str]) -> Iterator[dict[str, np.ndarray]]:
        check_texts(texts, self.name)
        for start in range(0, len(texts), self.max_batch_size):
            chunk = texts[start : start + self.max_batch_size]
            try:
                rows = contract.encode_texts(chunk)
            except UnicodeEncodeError as exc:
                raise ValueError(f"{self.name}: a text in rows {start}-{start + len(chunk) - 1} "
                                 f"is not encodable as UTF-8: {exc}") from None
            yield self._infer(rows)

    def _images(self, images: list[np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        check_images(images, self.name)
        rows: list[bytes] = []
        size = 0
        for image in images:
            if rows and (len(rows) == self.max_batch_size or size + image.nbytes > MAX_REQUEST_BYTES):
                yield self._infer(np.array(rows, dtype=np.object_).reshape(-1, 1))
                rows, size = [], 0
            rows.append(contract.encode_image(image))
            size += image.nbytes
        if rows:
            yield self._infer(np.array(rows, dtype=np.object_).reshape(-1, 1))

    def _infer(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        outputs = [output.name for output in self._signature.outputs]
        return self.client.infer(self.model, {self._signature.input.name: rows}, outputs)

    def _vectors(self, answers: Iterator[dict[str, np.ndarray]], output: str, width: int | None) -> np.ndarray:
        parts = [answer[output].astype(np.float32, copy=False) for answer in answers]
        if width is None:
            return np.concatenate([p.reshape(-1) for p in parts]) if parts else np.zeros((0,), np.float32)
        return np.concatenate([p.reshape(-1, width) for p in parts]) if parts else np.zeros((0, width), np.float32)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model!r} on {self.client.url})"


class RemoteTextToxicity(_RemoteModel):
    kind = ModelKind.TEXT_TOXICITY

    def score(self, texts: list[str]) -> np.ndarray:
        return self._vectors(self._texts(texts), contract.SCORE, None)


class RemoteImageNSFW(_RemoteModel):
    kind = ModelKind.IMAGE_NSFW

    def score(self, images: list[np.ndarray]) -> np.ndarray:
        return self._vectors(self._images(images), contract.SCORE, None)


class RemoteFaceDetector(_RemoteModel):
    kind = ModelKind.FACE_DETECTOR

    def detect(self, images: list[np.ndarray]) -> list[np.ndarray]:
        faces: list[np.ndarray] = []
        for answer in self._images(images):
            boxes = answer[contract.BOXES].astype(np.float32, copy=False)
            for i, count in enumerate(answer[contract.BOX_COUNT].reshape(-1)):
                faces.append(np.ascontiguousarray(boxes[i, : int(count)]).reshape(-1, 5))
        return faces


class RemoteNearDuplicateDescriptor(_RemoteModel):
    kind = ModelKind.NEAR_DUPLICATE

    def __init__(self, client: TritonClient, model: str) -> None:
        super().__init__(client, model)
        self.dim = int(self.parameters[contract.PARAM_DIM])
        self.threshold = float(self.parameters[contract.PARAM_THRESHOLD])

    def describe(self, images: list[np.ndarray]) -> np.ndarray:
        return self._vectors(self._images(images), contract.DESCRIPTOR, self.dim)


class _RemoteClipImage(_RemoteModel):
    kind = ModelKind.CLIP_IMAGE


class _RemoteClipText(_RemoteModel):
    kind = ModelKind.CLIP_TEXT


class RemoteClipEncoder:
    """A CLIP model served as two Triton models, one per tower (kinds clip_image and clip_text)."""

    def __init__(self, client: TritonClient, image_model: str, text_model: str) -> None:
        self._image = _RemoteClipImage(client, image_model)
        self._text = _RemoteClipText(client, text_model)
        image_dim = int(self._image.parameters[contract.PARAM_DIM])
        text_dim = int(self._text.parameters[contract.PARAM_DIM])
        if image_dim != text_dim:
            raise ValueError(f"CLIP towers disagree: {image_model!r} has dim {image_dim}, {text_model!r} has {text_dim}")
        self.dim = image_dim
        self.name = f"triton:{image_model}+{text_model}"

    def embed_images(self, images: list[np.ndarray]) -> np.ndarray:
        return self._image._vectors(self._image._images(images), contract.EMBEDDING, self.dim)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        return self._text._vectors(self._text._texts(texts), contract.EMBEDDING, self.dim)


class RemoteLanguageIdentifier(_RemoteModel):
    kind = ModelKind.LANGUAGE_ID

    def detect(self, texts: list[str]) -> list[tuple[str, float]]:
        detected: list[tuple[str, float]] = []
        for answer in self._texts(texts):
            languages: Sequence[bytes] = answer[contract.LANGUAGE].reshape(-1)
            probabilities = answer[contract.PROBABILITY].reshape(-1)
            detected += [(code.decode("utf-8"), float(p)) for code, p in zip(languages, probabilities, strict=True)]
        return detected
