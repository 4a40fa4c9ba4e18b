"""Run the embed service: ``python -m winnow.services.embed`` (settings from ``WINNOW_*``).

``WINNOW_CLIP_MODELS`` maps model keys to open_clip models, as JSON, e.g.
``{"b32": {"arch": "ViT-B-32", "pretrained": "openai"}, "l14": {"arch": "ViT-L-14", "pretrained": "openai"}}``.
With ``WINNOW_TRITON_URL`` set, each key is served by the Triton model ``clip_<key>`` (or the
spec's ``triton_model``).
"""

from __future__ import annotations

from winnow.services.embed.server import bindings
from winnow.services.embed.stage import EmbedOptions, build_stage
from winnow.shared.config import option_fields
from winnow.shared.curation_settings import CurationSettings
from winnow.shared.service.runner import serve_forever
from winnow.shared.topics import shards_topic

class EmbedSettings(option_fields(EmbedOptions), CurationSettings):
    service_name: str = "embed"
    input_topic: str = shards_topic("blur")
    output_topic: str = shards_topic("embed")


def main() -> None:
    serve_forever(EmbedSettings(), lambda settings: (
        stage := build_stage(settings.options(), settings.model_preset, settings.triton_url), bindings(stage)))


if __name__ == "__main__":
    main()
