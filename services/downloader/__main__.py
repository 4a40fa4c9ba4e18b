"""Run the downloader service: ``python -m winnow.services.downloader`` (settings from ``WINNOW_*``)."""

from __future__ import annotations

from winnow.services.downloader.server import downloader_bindings
from winnow.services.downloader.job import DATACOMP_PROFILE, build_stage
from winnow.services.downloader.settings import DownloaderSettings
from winnow.shared.service.runner import serve_forever


def build(settings: DownloaderSettings):
    stage = build_stage(settings.options(), DATACOMP_PROFILE)
    return stage, downloader_bindings(stage, input_topic=settings.input_topic, output_uri=settings.output_uri,
                                      samples_per_shard=settings.samples_per_shard,
                                      policy=settings.access_policy())


def main() -> None:
    serve_forever(DownloaderSettings(), build)


if __name__ == "__main__":
    main()
