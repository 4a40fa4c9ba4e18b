"""Run the dedup service: ``python -m services.dedup`` (settings from ``WINNOW_*``).

The pool registry makes dedup stateful: run one replica per job (or per disjoint set of jobs).
"""

from __future__ import annotations

from pydantic import Field

from services.dedup.pool_index import PoolIndexConfig
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
    pool_flat_limit: int = Field(65_536, description="float descriptors: an exact flat index up to this many kept "
                                 "images, then pool_index_factory (hashes are always searched exactly)")
    pool_index_factory: str = Field("IVF1024,Flat", description="faiss index_factory string past pool_flat_limit")
    pool_search_params: str = Field("nprobe=32", description="faiss ParameterSpace string for that index")


def build_stage(settings: DedupSettings) -> DedupStage:
    return DedupStage(model_factory("near_duplicate", settings.model_preset, settings.triton_url),
                      DedupOptions(eval_index_dir=settings.eval_index_dir, registry_dir=settings.registry_dir,
                                   pool_threshold=settings.pool_threshold, batch_size=settings.batch_size,
                                   pool_index=PoolIndexConfig(flat_limit=settings.pool_flat_limit,
                                                              factory=settings.pool_index_factory,
                                                              search_params=settings.pool_search_params)))


def main() -> None:
    serve_forever(DedupSettings(), lambda settings: (stage := build_stage(settings), bindings(stage)))


if __name__ == "__main__":
    main()
