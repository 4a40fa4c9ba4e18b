"""Run the downloader service: ``python -m services.downloader`` (settings from ``WINNOW_*``)."""

from __future__ import annotations

from services.downloader.server import downloader_bindings
from services.downloader.settings import DownloaderSettings
from services.downloader.stage import DownloadStage
from shared.service.runner import serve_forever


def build(settings: DownloaderSettings):
    stage = DownloadStage(settings.download_options())
    return stage, downloader_bindings(stage, input_topic=settings.input_topic, output_uri=settings.output_uri,
                                      samples_per_shard=settings.samples_per_shard,
                                      policy=settings.access_policy())


def main() -> None:
    serve_forever(DownloaderSettings(), build)


if __name__ == "__main__":
    main()
