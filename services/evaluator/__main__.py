"""Run the evaluator service: ``python -m winnow.services.evaluator`` (settings from ``WINNOW_*``)."""

from __future__ import annotations

from pydantic import Field

from winnow.services.evaluator.service import EvaluatorStage, bindings
from winnow.shared.config import ServiceSettings
from winnow.shared.service.runner import serve_forever
from winnow.shared.topics import shards_topic


class EvaluatorSettings(ServiceSettings):
    service_name: str = "evaluator"
    input_topic: str = shards_topic("trainer")
    output_topic: str = shards_topic("evaluator")
    eval_data_dir: str = ""  # `winnow eval-data build --out DIR`, or DataComp's downloaded sets
    tasks: list[str] | None = None
    device: str | None = None
    batch_size: int = 64
    train_output_dir: str = Field("runs/training", description="the trainer's runs: what requests and messages "
                                                               "may evaluate when no roots are set")

    def job_storage_roots(self) -> tuple[str, ...]:
        return (self.train_output_dir,)


def build(settings: EvaluatorSettings):
    stage = EvaluatorStage(settings.eval_data_dir, settings.tasks, settings.device, settings.batch_size)
    return stage, bindings(stage, settings.access_policy())


def main() -> None:
    serve_forever(EvaluatorSettings(), build)


if __name__ == "__main__":
    main()
