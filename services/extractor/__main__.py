"""Run the extractor service: ``python -m winnow.services.extractor`` (settings from ``WINNOW_*``).

It consumes crawl-file references (``winnow.crawl``, queued by ``SubmitCrawl`` or
``winnow extract --submit``) and publishes one pool shard per file to the downloader's topic.
"""

from __future__ import annotations

from pydantic import Field

from winnow.services.extractor.captions import CaptionRules
from winnow.services.extractor.extract import ExtractOptions
from winnow.services.extractor.server import extractor_bindings
from winnow.services.extractor.stage import ExtractStage
from winnow.shared.config import ServiceSettings
from winnow.shared.service.runner import serve_forever
from winnow.shared.topics import shards_topic
from winnow.shared.topics import CRAWL_TOPIC


class ExtractorSettings(ServiceSettings):
    service_name: str = "extractor"
    input_topic: str = CRAWL_TOPIC
    output_topic: str = shards_topic("pool")
    output_uri: str = Field("runs", description="directory under which submitted crawl jobs are written, one per job id")
    min_caption_chars: int = Field(CaptionRules.min_chars, description="shorter alt text is dropped (characters)")
    max_caption_chars: int = Field(CaptionRules.max_chars, description="longer alt text is dropped (characters)")
    dedup_across_files: bool = Field(True, description="drop pairs another file of the same job already kept")

    def job_storage_roots(self) -> tuple[str, ...]:
        return (self.output_uri,)

    def extract_options(self) -> ExtractOptions:
        return ExtractOptions(min_caption_chars=self.min_caption_chars, max_caption_chars=self.max_caption_chars)


def build(settings: ExtractorSettings):
    stage = ExtractStage(settings.extract_options(), dedup_across_files=settings.dedup_across_files)
    return stage, extractor_bindings(stage, input_topic=settings.input_topic, output_uri=settings.output_uri,
                                     policy=settings.access_policy())


def main() -> None:
    serve_forever(ExtractorSettings(), build)


if __name__ == "__main__":
    main()
