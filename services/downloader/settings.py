"""The downloader service's settings (``WINNOW_*`` environment variables).

The download options are ``DownloadSpec``'s fields (``WINNOW_IMAGE_SIZE``, ``WINNOW_RESIZE_MODE``,
``WINNOW_RETRIES``, ...) with DataComp's defaults; img2dataset's output layout and the options
that have one value on winnow (the interpolations) are not settings.
"""

from __future__ import annotations

from pydantic import Field

from winnow.services.downloader.flags import LAYOUT_OPTIONS
from winnow.services.downloader.job import DATACOMP_PROFILE, DownloadSpec
from winnow.services.downloader.stage import DownloadOptions
from winnow.shared.config import ServiceSettings, option_fields
from winnow.shared.topics import shards_topic

#: DownloadSpec's fields that are no setting: img2dataset's layout, the one interpolation of each
#: kind, EXIF (not in DataComp's layout) and DataComp's other spelling of ``bbox_col=None``.
NOT_SETTINGS = (*LAYOUT_OPTIONS, "upscale_interpolation", "downscale_interpolation", "extract_exif",
                "skip_bbox_blurring")


class DownloaderSettings(option_fields(DownloadSpec, exclude=NOT_SETTINGS), ServiceSettings):
    service_name: str = "downloader"
    input_topic: str = shards_topic("pool")
    output_topic: str = shards_topic("downloader")
    output_uri: str = Field("runs", description="directory under which submitted jobs are written, one per job id")
    samples_per_shard: int = 10_000

    def job_storage_roots(self) -> tuple[str, ...]:
        return (self.output_uri,)

    def download_options(self) -> DownloadOptions:
        """The download stage's options (``ValueError`` names a value it cannot take)."""
        return self.options().stage_options(DATACOMP_PROFILE)
