"""Run the embed service: ``python -m services.embed`` (settings from ``WINNOW_*``).

``WINNOW_CLIP_MODELS`` maps model keys to open_clip models, as JSON, e.g.
``{"b32": {"arch": "ViT-B-32", "pretrained": "openai"}, "l14": {"arch": "ViT-L-14", "pretrained": "openai"}}``.
With ``WINNOW_TRITON_URL`` set, each key is served by the Triton model ``clip_<key>`` (or the
spec's ``triton_model``).
"""

from __future__ import annotations

from pydantic import Field

from services.embed.server import bindings
from services.embed.stage import EmbedStage
from shared.curation_settings import CurationSettings
from shared.models.provider import clip_factory
from shared.service.runner import serve_forever
from shared.topics import shards_topic

DATACOMP_CLIP_MODELS = {"b32": {"arch": "ViT-B-32", "pretrained": "openai"},
                        "l14": {"arch": "ViT-L-14", "pretrained": "openai"}}


class EmbedSettings(CurationSettings):
    service_name: str = "embed"
    input_topic: str = shards_topic("blur")
    output_topic: str = shards_topic("embed")
    clip_models: dict[str, dict[str, str]] = Field(default_factory=lambda: dict(DATACOMP_CLIP_MODELS))
    device: str = "cpu"


def build_stage(settings: EmbedSettings) -> EmbedStage:
    return EmbedStage({key: clip_factory(spec["arch"], spec.get("pretrained"), settings.triton_url,
                                         spec.get("triton_model", f"clip_{key}"), settings.device)
                       for key, spec in settings.clip_models.items()}, batch_size=settings.batch_size)


def main() -> None:
    serve_forever(EmbedSettings(), lambda settings: (stage := build_stage(settings), bindings(stage)))


if __name__ == "__main__":
    main()
