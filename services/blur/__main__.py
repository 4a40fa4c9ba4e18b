"""Run the blur service: ``python -m services.blur`` (settings from ``WINNOW_*``)."""

from __future__ import annotations

from services.blur.server import bindings
from services.blur.stage import BlurOptions, BlurStage
from shared.curation_settings import CurationSettings
from shared.models.provider import model_factory
from shared.service.runner import serve_forever
from shared.topics import shards_topic


class BlurSettings(CurationSettings):
    service_name: str = "blur"
    input_topic: str = shards_topic("dedup")
    output_topic: str = shards_topic("blur")
    batch_size: int = 32
    # WINNOW_WRITE_BLURRED_IMAGES=true: keep blurred images at rest (a tar per shard; the job's
    # unblurred downloader tar is then removed), for policies that forbid unblurred faces at rest.
    write_blurred_images: bool = False


def build_stage(settings: BlurSettings) -> BlurStage:
    return BlurStage(model_factory("face_detector", settings.model_preset, settings.triton_url),
                     BlurOptions(batch_size=settings.batch_size, write_blurred_images=settings.write_blurred_images))


def main() -> None:
    serve_forever(BlurSettings(), lambda settings: (stage := build_stage(settings), bindings(stage)))


if __name__ == "__main__":
    main()
