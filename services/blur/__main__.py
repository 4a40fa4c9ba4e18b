"""Run the blur service: ``python -m winnow.services.blur`` (settings from ``WINNOW_*``)."""

from __future__ import annotations

from winnow.services.blur.server import bindings
from winnow.services.blur.stage import BlurOptions, build_stage
from winnow.shared.config import option_fields
from winnow.shared.curation_settings import CurationSettings
from winnow.shared.service.runner import serve_forever
from winnow.shared.topics import shards_topic


class BlurSettings(option_fields(BlurOptions), CurationSettings):
    service_name: str = "blur"
    input_topic: str = shards_topic("dedup")
    output_topic: str = shards_topic("blur")


def main() -> None:
    serve_forever(BlurSettings(), lambda settings: (
        stage := build_stage(settings.options(), settings.model_preset, settings.triton_url), bindings(stage)))


if __name__ == "__main__":
    main()
