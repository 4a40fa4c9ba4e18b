"""Triton-backed implementations of the model interfaces in :mod:`winnow.shared.models.base`.

Each takes a :class:`~winnow.shared.triton.client.TritonClient` and the name of a served model, reads the
model's configuration once (its kind, batch size and, for embeddings, ``dim`` and ``threshold``)
and then answers exactly as the in-process class does: same inputs, same outputs, same checks.

Inputs are cut into requests of at most the model's ``max_batch_size`` rows, sent together
(:meth:`~winnow.shared.triton.client.TritonClient.infer_many`) for the server's dynamic batcher to merge.
Images travel as lossless raw frames (:func:`winnow.shared.triton.contract.encode_image`), zero-padded
to the widest of their request; consecutive images of similar size share a request, and an image
that would make the padding cost more than half again the pixels starts a new one. A model that
declares an image fit (``winnow_image_fit``, e.g. a CLIP image tower) gets each image fitted
first (:func:`winnow.shared.triton.contract.fit_image`): the same answer from a fraction of the bytes,
and all of one size, so the requests are full batches.
"""

from __future__ import annotations

import numpy as np

from winnow.shared.models._checks import check_images, check_texts
from winnow.shared.models.base import ImageNeed
from winnow.shared.triton import contract
from winnow.shared.triton.client import TritonClient
from winnow.shared.triton.contract import ModelKind

MAX_REQUEST_BYTES = 64 * 1024 * 1024  # a request holds at least one image, however large
_PADDING_ALLOWANCE = 1.5  # padded bytes / real bytes above which images go to separate requests


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
        fit = self.parameters.get(contract.PARAM_IMAGE_FIT)
        self.image_fit = int(fit) if fit else None
        self._signature = contract.SIGNATURES[self.kind]

    def _texts(self, texts: list[str]) -> list[dict[str, np.ndarray]]:
        check_texts(texts, self.name)
        encoded = []
        for i, text in enumerate(texts):
            try:
                encoded.append(text.encode("utf-8"))
            except UnicodeEncodeError as exc:
                raise ValueError(f"{self.name}: text {i} cannot be encoded as UTF-8: {exc}") from None
        groups = [encoded[start : start + self.max_batch_size] for start in range(0, len(encoded), self.max_batch_size)]
        return self._infer(groups)

    def _images(self, images: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        check_images(images, self.name)
        if self.image_fit is not None:
            images = [contract.fit_image(image, self.image_fit) for image in images]
        groups: list[list[bytes]] = []
        group: list[bytes] = []
        widest = real = 0
        for image in images:
            frame = contract.encode_image(image)
            padded = max(widest, len(frame)) * (len(group) + 1)
            if group and (
                len(group) == self.max_batch_size
                or padded > MAX_REQUEST_BYTES
                or padded > _PADDING_ALLOWANCE * (real + len(frame))
            ):
                groups.append(group)
                group, widest, real = [], 0, 0
            group.append(frame)
            widest = max(widest, len(frame))
            real += len(frame)
        if group:
            groups.append(group)
        return self._infer(groups)

    def _infer(self, groups: list[list[bytes]]) -> list[dict[str, np.ndarray]]:
        item, length = (tensor.name for tensor in self._signature.inputs)
        requests = []
        for group in groups:
            rows, lengths = contract.pack_rows(group)
            requests.append({item: rows, length: lengths})
        outputs = [output.name for output in self._signature.outputs]
        return self.client.infer_many(self.model, requests, outputs)

    @staticmethod
    def _vectors(answers: list[dict[str, np.ndarray]], output: str, width: int | None) -> np.ndarray:
        shape = (-1,) if width is None else (-1, width)
        parts = [answer[output].astype(np.float32, copy=False).reshape(shape) for answer in answers]
        if not parts:
            return np.zeros((0,) if width is None else (0, width), np.float32)
        return np.concatenate(parts)

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

    def embed_images(self, images: list[np.ndarray]) -> np.ndarray:
        return self._vectors(self._images(images), contract.EMBEDDING, int(self.parameters[contract.PARAM_DIM]))


class _RemoteClipText(_RemoteModel):
    kind = ModelKind.CLIP_TEXT

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        return self._vectors(self._texts(texts), contract.EMBEDDING, int(self.parameters[contract.PARAM_DIM]))


class RemoteClipEncoder:
    """A CLIP model served as two Triton models, one per tower (kinds clip_image and clip_text)."""

    def __init__(self, client: TritonClient, image_model: str, text_model: str) -> None:
        self._image = _RemoteClipImage(client, image_model)
        self._text = _RemoteClipText(client, text_model)
        image_dim = int(self._image.parameters[contract.PARAM_DIM])
        text_dim = int(self._text.parameters[contract.PARAM_DIM])
        if image_dim != text_dim:
            raise ValueError(
                f"CLIP towers disagree: {image_model!r} has dim {image_dim}, {text_model!r} has {text_dim}"
            )
        self.dim = image_dim
        self.name = f"triton:{image_model}+{text_model}"
        fit = self._image.image_fit
        self.image_need = ImageNeed(shorter=fit) if fit else None

    def embed_images(self, images: list[np.ndarray]) -> np.ndarray:
        return self._image.embed_images(images)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        return self._text.embed_texts(texts)


class RemoteLanguageIdentifier(_RemoteModel):
    kind = ModelKind.LANGUAGE_ID

    def detect(self, texts: list[str]) -> list[tuple[str, float]]:
        detected: list[tuple[str, float]] = []
        for answer in self._texts(texts):
            codes = [row.tobytes().rstrip(b"\0").decode("utf-8") for row in answer[contract.LANGUAGE]]
            probabilities = answer[contract.PROBABILITY].reshape(-1)
            detected += [(code, float(p)) for code, p in zip(codes, probabilities, strict=True)]
        return detected


_REMOTE_CLASSES: dict[ModelKind, type[_RemoteModel]] = {
    cls.kind: cls
    for cls in (RemoteTextToxicity, RemoteImageNSFW, RemoteFaceDetector, RemoteNearDuplicateDescriptor,
                RemoteLanguageIdentifier)
}


def remote_model(kind: str | ModelKind, client: TritonClient, model: str) -> _RemoteModel | RemoteClipEncoder:
    """The Triton-backed model of ``kind`` served as ``model``.

    ``kind="clip"`` gives a :class:`RemoteClipEncoder` over the two towers ``<model>_image`` and
    ``<model>_text`` (the names :func:`winnow.ops.triton.repository.clip_model_specs` gives them).
    """
    if kind == "clip":
        return RemoteClipEncoder(client, contract.clip_tower_name(model, ModelKind.CLIP_IMAGE),
                                 contract.clip_tower_name(model, ModelKind.CLIP_TEXT))
    kind = ModelKind(kind)
    if kind not in _REMOTE_CLASSES:
        raise ValueError(f"{kind.value} is one tower of a CLIP model: use kind 'clip' or RemoteClipEncoder")
    return _REMOTE_CLASSES[kind](client, model)
