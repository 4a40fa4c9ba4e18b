"""Run the safety service: ``python -m winnow.services.safety`` (settings from ``WINNOW_*``)."""

from __future__ import annotations

from winnow.services.safety.server import bindings
from winnow.services.safety.stage import SafetyOptions, build_stage
from winnow.shared.config import option_fields
from winnow.shared.curation_settings import CurationSettings
from winnow.shared.service.runner import serve_forever
from winnow.shared.topics import shards_topic


class SafetySettings(option_fields(SafetyOptions), CurationSettings):
    service_name: str = "safety"
    input_topic: str = shards_topic("downloader")
    output_topic: str = shards_topic("safety")


def main() -> None:
    serve_forever(SafetySettings(), lambda settings: (
        stage := build_stage(settings.options(), settings.model_preset, settings.triton_url), bindings(stage)))


if __name__ == "__main__":
    main()
