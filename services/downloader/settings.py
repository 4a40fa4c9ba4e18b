"""The downloader service's settings (``WINNOW_*`` environment variables)."""

from __future__ import annotations

from pydantic import Field

from winnow.services.downloader.fetch import DEFAULT_USER_AGENT, DISALLOWED_DIRECTIVES, FetchOptions, ProxySettings
from winnow.services.downloader.layout import ShardLayout
from winnow.services.downloader.resize import ResizeMode, ResizeOptions
from winnow.services.downloader.stage import DownloadOptions
from winnow.shared.config import ServiceSettings
from winnow.shared.topics import shards_topic


class DownloaderSettings(ServiceSettings):
    service_name: str = "downloader"
    input_topic: str = shards_topic("pool")
    output_topic: str = shards_topic("downloader")
    output_uri: str = Field("runs", description="directory under which submitted jobs are written, one per job id")
    samples_per_shard: int = 10_000
    image_size: int = 512
    resize_mode: ResizeMode = ResizeMode.keep_ratio_largest
    resize_only_if_bigger: bool = True
    encode_format: str = "jpg"
    encode_quality: int = 95
    skip_reencode: bool = False
    min_image_size: int = 0
    max_aspect_ratio: float = float("inf")
    max_image_pixels: int = 89_478_485
    thread_count: int = 32
    timeout: float = 10.0
    total_timeout: float = 60.0
    retries: int = 2
    max_bytes: int = 32 * 1024 * 1024
    per_domain_concurrency: int = 8
    user_agent: str = DEFAULT_USER_AGENT
    user_agent_token: str = "winnow"
    allow_networks: tuple[str, ...] = Field((), description="CIDRs exempt from the private-address guard")
    verify_hash: tuple[str, str] | None = Field(None, description="[column, hash type], e.g. ['sha256', 'sha256']")
    compute_hash: str | None = "sha256"
    bbox_col: str | None = Field("face_bboxes", description="blur these boxes before resizing (DataComp's flow)")
    disallowed_header_directives: tuple[str, ...] = DISALLOWED_DIRECTIVES
    ignore_ssl_certificate: bool = False
    respect_robots_txt: bool = False

    def job_storage_roots(self) -> tuple[str, ...]:
        return (self.output_uri,)

    def download_options(self) -> DownloadOptions:
        return DownloadOptions(
            fetch=FetchOptions(timeout=self.timeout, total_timeout=self.total_timeout, retries=self.retries,
                               max_bytes=self.max_bytes, per_domain_concurrency=self.per_domain_concurrency,
                               user_agent=self.user_agent, user_agent_token=self.user_agent_token,
                               allow_networks=tuple(self.allow_networks),
                               disallowed_header_directives=tuple(self.disallowed_header_directives),
                               ignore_ssl_certificate=self.ignore_ssl_certificate,
                               respect_robots_txt=self.respect_robots_txt,
                               proxies=ProxySettings.from_environment()),
            resize=ResizeOptions(image_size=self.image_size, resize_mode=self.resize_mode,
                                 resize_only_if_bigger=self.resize_only_if_bigger, encode_format=self.encode_format,
                                 encode_quality=self.encode_quality, skip_reencode=self.skip_reencode,
                                 min_image_size=self.min_image_size, max_aspect_ratio=self.max_aspect_ratio,
                                 max_image_pixels=self.max_image_pixels),
            layout=ShardLayout(compute_hash=self.compute_hash),
            thread_count=self.thread_count,
            verify_hash=tuple(self.verify_hash) if self.verify_hash else None,
            bbox_col=self.bbox_col,
        )
