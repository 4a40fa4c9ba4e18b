"""Run the downloader service: ``python -m services.downloader`` (settings from ``WINNOW_*``)."""

from __future__ import annotations

from services.downloader.server import downloader_bindings
from services.downloader.settings import DownloaderSettings
from services.downloader.stage import DownloadStage
from shared.logs import configure_logging
from shared.service.runner import StageService


def main() -> None:
    settings = DownloaderSettings()
    configure_logging(settings.log_level, settings.log_json)
    stage = DownloadStage(settings.download_options())
    service = StageService(stage, settings, downloader_bindings(
        stage, input_topic=settings.input_topic, output_uri=settings.output_uri,
        samples_per_shard=settings.samples_per_shard))
    service.install_signal_handlers()
    service.start()
    service.wait()


if __name__ == "__main__":
    main()
