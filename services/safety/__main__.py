"""Run the safety service: ``python -m services.safety`` (settings from ``WINNOW_*``)."""

from __future__ import annotations

from services.safety.server import bindings
from services.safety.stage import SafetyOptions, SafetyStage
from shared.curation_settings import CurationSettings
from shared.models.provider import model_factory
from shared.models.registry import preset
from shared.service.runner import serve_forever
from shared.topics import shards_topic


class SafetySettings(CurationSettings):
    service_name: str = "safety"
    input_topic: str = shards_topic("downloader")
    output_topic: str = shards_topic("safety")
    toxicity_threshold: float | None = None  # None = the preset's
    nsfw_threshold: float | None = None


def build_stage(settings: SafetySettings) -> SafetyStage:
    toxicity, nsfw = preset("text_toxicity", settings.model_preset), preset("image_nsfw", settings.model_preset)
    options = SafetyOptions(
        toxicity_threshold=settings.toxicity_threshold if settings.toxicity_threshold is not None else toxicity.threshold,
        nsfw_threshold=settings.nsfw_threshold if settings.nsfw_threshold is not None else nsfw.threshold,
        batch_size=settings.batch_size)
    return SafetyStage(model_factory("text_toxicity", settings.model_preset, settings.triton_url),
                       model_factory("image_nsfw", settings.model_preset, settings.triton_url), options)


def main() -> None:
    serve_forever(SafetySettings(), lambda settings: (stage := build_stage(settings), bindings(stage)))


if __name__ == "__main__":
    main()
