"""Run a stage plugin as a service: ``python -m winnow.services.plugin`` (or ``winnow-stage``).

    WINNOW_STAGE_PLUGIN=sharpness WINNOW_STAGE_OPTIONS='{"min_sharpness": "50"}' \\
    WINNOW_INPUT_TOPIC=winnow.shards.downloader WINNOW_OUTPUT_TOPIC=winnow.shards.sharpness \\
    WINNOW_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 python -m winnow.services.plugin

The same shell as winnow's own stages: the bus worker (at-least-once, retries, dead-letter
topic), gRPC health (SERVING after the stage's ``setup()``), metrics and SIGTERM. The consumer
group and the service name default to the plugin's name.
"""

from __future__ import annotations

from pydantic import Field

from winnow.shared.config import ServiceSettings
from winnow.shared.service.runner import serve_forever
from winnow.shared.stage_plugins import load_stage


class PluginStageSettings(ServiceSettings):
    service_name: str = ""
    stage_plugin: str = Field("", description="the stage's name in the winnow.stages entry-point group")
    stage_options: dict[str, str] = Field(default_factory=dict, description="the stage's options, as JSON")


def build(settings: PluginStageSettings):
    if not settings.stage_plugin:
        raise SystemExit("set WINNOW_STAGE_PLUGIN to a stage in the winnow.stages entry-point group")
    if not settings.input_topic:
        raise SystemExit("set WINNOW_INPUT_TOPIC: the topic of the shards this stage reads (winnow.shards.<stage>)")
    return load_stage(settings.stage_plugin, settings.stage_options), lambda bus: []


def main() -> None:
    settings = PluginStageSettings()
    if not settings.service_name:
        settings = settings.model_copy(update={"service_name": settings.stage_plugin})
    serve_forever(settings, build)


if __name__ == "__main__":
    main()
