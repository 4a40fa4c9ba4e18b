"""Run the dedup service: ``python -m services.dedup`` (settings from ``WINNOW_*``).

The pool registry makes dedup stateful: run one replica per job (or per disjoint set of jobs).
"""

from __future__ import annotations

from services.dedup.server import bindings
from services.dedup.stage import DedupOptions, DedupStage
from shared.curation_settings import CurationSettings
from shared.models.provider import model_factory
from shared.service.runner import serve_forever
from shared.topics import shards_topic


class DedupSettings(CurationSettings):
    service_name: str = "dedup"
    input_topic: str = shards_topic("safety")
    output_topic: str = shards_topic("dedup")
    eval_index_dir: str = ""
    registry_dir: str = ""
    pool_threshold: float | None = None


def build_stage(settings: DedupSettings) -> DedupStage:
    return DedupStage(model_factory("near_duplicate", settings.model_preset, settings.triton_url),
                      DedupOptions(eval_index_dir=settings.eval_index_dir, registry_dir=settings.registry_dir,
                                   pool_threshold=settings.pool_threshold, batch_size=settings.batch_size))


def main() -> None:
    serve_forever(DedupSettings(), lambda settings: (stage := build_stage(settings), bindings(stage)))


if __name__ == "__main__":
    main()
