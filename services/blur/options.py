"""The blur stage's options: ``winnow run --blur.*`` flags and the service's ``WINNOW_*`` settings."""

from __future__ import annotations

from dataclasses import dataclass

from winnow.shared.option_flags import option


@dataclass(frozen=True)
class BlurOptions:
    """The blur stage's options (``WINNOW_WRITE_BLURRED_IMAGES``, ... for the service)."""

    jpeg_quality: int = option(95, help="JPEG quality of blurred images written at rest")
    batch_size: int = option(32, help="images per face-detector call")
    # True: keep blurred images at rest (a tar per shard; the job's unblurred downloader tar is
    # then removed), for policies that forbid unblurred faces at rest; False: only face_bboxes.
    write_blurred_images: bool = option(False, help="keep blurred images at rest (a tar per shard) and remove the "
                                                    "job's unblurred downloader tars")
