"""Run the trainer service: ``python -m winnow.services.trainer`` (settings from ``WINNOW_*``)."""

from __future__ import annotations

from pydantic import Field

from winnow.services.trainer.service import TrainerStage, bindings
from winnow.shared.config import ServiceSettings
from winnow.shared.service.runner import serve_forever
from winnow.shared.topics import shards_topic


class TrainerSettings(ServiceSettings):
    service_name: str = "trainer"
    input_topic: str = shards_topic("reshard")
    output_topic: str = shards_topic("trainer")
    scale: str = "tiny"
    train_output_dir: str = "runs/training"
    num_checkpoints: int = 5
    workers: int = 2
    device: str | None = None
    max_attempts: int = 1  # a failed training is not retried blindly: it goes to the dead-letter topic
    max_message_seconds: int = 7 * 24 * 3600  # a training run is one message
    # networks a pool source's images may be fetched from despite the private-address guard (CIDRs)
    allow_networks: tuple[str, ...] = Field((), description="CIDRs exempt from the downloader's address guard")

    def job_storage_roots(self) -> tuple[str, ...]:
        return (self.train_output_dir,)

    def default_read_roots(self) -> tuple[str, ...]:
        return (self.train_output_dir, "runs")  # its runs, and the pipeline's subsets


def build(settings: TrainerSettings):
    stage = TrainerStage(settings.scale, settings.train_output_dir, settings.num_checkpoints, settings.workers,
                         settings.device, allow_networks=tuple(settings.allow_networks))
    return stage, bindings(stage, settings.access_policy())


def main() -> None:
    serve_forever(TrainerSettings(), build)


if __name__ == "__main__":
    main()
