"""Run the dedup service: ``python -m winnow.services.dedup`` (settings from ``WINNOW_*``).

The pool registry makes dedup stateful: run one replica per job (or per disjoint set of jobs).
"""

from __future__ import annotations

from winnow.services.dedup.server import bindings
from winnow.services.dedup.options import POOL_INDEX_NAMES, DedupOptions
from winnow.services.dedup.stage import build_stage
from winnow.shared.config import option_fields
from winnow.shared.curation_settings import CurationSettings
from winnow.shared.service.runner import serve_forever
from winnow.shared.topics import shards_topic



class DedupSettings(option_fields(DedupOptions, names=POOL_INDEX_NAMES),
                    CurationSettings):
    service_name: str = "dedup"
    input_topic: str = shards_topic("safety")
    output_topic: str = shards_topic("dedup")


def main() -> None:
    serve_forever(DedupSettings(), lambda settings: (
        stage := build_stage(settings.options(), settings.model_preset, settings.triton_url), bindings(stage)))


if __name__ == "__main__":
    main()
