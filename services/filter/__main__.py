"""Run the filter service: ``python -m winnow.services.filter`` (settings from ``WINNOW_*``).

It consumes the last curation stage's ShardRefs; when a job is complete it applies the
configured DataComp baseline and reshards the subset, then publishes one ShardRef to
``winnow.shards.reshard`` for the trainer.
"""

from __future__ import annotations

from winnow.services.filter.apply import FilterConfig
from winnow.services.filter.stage import FilterOptions, FilterStage
from winnow.shared.config import ServiceSettings
from winnow.shared.service.runner import serve_forever
from winnow.shared.topics import shards_topic


class FilterSettings(ServiceSettings):
    service_name: str = "filter"
    input_topic: str = shards_topic("embed")
    output_topic: str = shards_topic("reshard")
    filter_name: str = "clip_score"
    threshold: float | None = None
    fraction: float | None = 0.3
    arch: str | None = "l14"
    image_based_targets: str | None = None
    num_clusters: int = 100_000
    shard_size: int = 10_000
    shuffle_buffer: int = 0
    blur_faces: bool | None = None  # None: blur the face_bboxes a winnow ledger says are not yet blurred
    language_model: str = "offline"  # fastText lid.176: offline (.ftz) or production (DataComp's .bin)


def build(settings: FilterSettings):
    scored = "clip_score" in settings.filter_name
    config = FilterConfig(name=settings.filter_name, metadata_dir="", threshold=settings.threshold if scored else None,
                          fraction=(settings.fraction if settings.threshold is None else None) if scored else None,
                          arch=settings.arch if scored else None, image_based_targets=settings.image_based_targets,
                          num_clusters=settings.num_clusters, language_model=settings.language_model)
    stage = FilterStage(FilterOptions(config, shard_size=settings.shard_size, shuffle_buffer=settings.shuffle_buffer,
                                      blur_faces=settings.blur_faces))
    return stage, lambda bus: []


def main() -> None:
    serve_forever(FilterSettings(), build)


if __name__ == "__main__":
    main()
