"""The embed stage: CLIP image and text embeddings per sample, and DataComp's CLIP scores.

For every configured model key (DataComp's ``b32`` and ``l14``) the shard gains a
``{shard:08d}.npz`` sidecar with ``{key}_img`` and ``{key}_txt`` (L2-normalised, float16 as in
DataComp, one row per ledger row in parquet order; rows of samples that are not kept are zeros)
and a ``clip_{key}_similarity_score`` column: the cosine of the image and text embeddings.
Embedding drops nothing.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np

from winnow.services.embed.options import EmbedOptions
from winnow.shared.curation import Sample, SampleStage, Verdict
from winnow.shared.models.base import ClipEncoder, ImageNeed
from winnow.shared.models.provider import clip_factory

def build_stage(options: EmbedOptions, model_preset: str = "offline", triton_url: str = "") -> EmbedStage:
    """The embed stage of ``options``: each CLIP model in process, or on Triton at ``triton_url``
    (``model_preset`` is not used: CLIP models are named by ``clip_models``)."""
    return EmbedStage({key: clip_factory(spec["arch"], spec.get("pretrained"), triton_url,
                                         spec.get("triton_model", f"clip_{key}"), options.device)
                       for key, spec in options.clip_models.items()}, batch_size=options.batch_size)


class EmbedStage(SampleStage):
    name = "embed"
    input_columns = ("text",)
    drop_reasons = ()

    def __init__(self, encoders: dict[str, Callable[[], ClipEncoder]], batch_size: int = 64) -> None:
        if not encoders:
            raise ValueError("the embed stage needs at least one CLIP model (e.g. b32, l14)")
        self._factories = dict(encoders)
        self.output_columns = tuple(f"clip_{key}_similarity_score" for key in self._factories)
        self.encoders: dict[str, ClipEncoder] = {}
        self.batch_size = batch_size

    def setup(self) -> None:
        if not self.encoders:
            self.encoders = {key: make() for key, make in self._factories.items()}

    def image_need(self) -> ImageNeed | None:
        # Full size: CLIP scores rank samples for the filter's cut, and a CLIP served by Triton and
        # one in-process must embed the same pixels (a reduced decode moved a sample across the cut).
        return None

    def judge(self, samples: list[Sample], shard: dict[str, Any]) -> list[Verdict]:
        self.setup()
        images = [s.image for s in samples]
        texts = [s.text for s in samples]
        embeddings = shard.setdefault("embeddings", {})
        columns: list[dict[str, Any]] = [{} for _ in samples]
        for key, encoder in self.encoders.items():
            image_features = encoder.embed_images(images)
            text_features = encoder.embed_texts(texts)
            scores = np.sum(image_features * text_features, axis=1)
            for index, sample in enumerate(samples):
                embeddings[(key, sample.row["key"])] = (image_features[index], text_features[index])
                columns[index][f"clip_{key}_similarity_score"] = float(scores[index])
        return [Verdict(True, columns=c) for c in columns]

    def sidecars(self, rows: list[dict[str, Any]], shard: dict[str, Any]) -> dict[str, bytes]:
        embeddings = shard.get("embeddings", {})
        arrays = {}
        for key, encoder in self.encoders.items():
            image = np.zeros((len(rows), encoder.dim), np.float16)
            text = np.zeros((len(rows), encoder.dim), np.float16)
            for index, row in enumerate(rows):
                pair = embeddings.get((key, row["key"]))
                if pair is not None:
                    image[index], text[index] = pair
            arrays[f"{key}_img"], arrays[f"{key}_txt"] = image, text
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return {"npz": buffer.getvalue()}
