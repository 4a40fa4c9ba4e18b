"""Typed service settings, read from the environment once in ``main`` and passed inward.

Every service reads ``WINNOW_*`` variables (for example ``WINNOW_KAFKA_BOOTSTRAP_SERVERS``,
``WINNOW_GRPC_ADDRESS``); a service adds its own fields with its own prefix.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """What every service shell needs: where to listen, which bus, how to retry."""

    model_config = SettingsConfigDict(env_prefix="WINNOW_", frozen=True, extra="ignore")

    service_name: str = Field("winnow", description="name in logs, metrics and the consumer group")
    grpc_address: str = Field("0.0.0.0:50051", description="host:port of the gRPC API; port 0 picks a free one")
    metrics_port: int = Field(9100, description="Prometheus /metrics port; 0 disables")
    kafka_bootstrap_servers: str = Field("", description="Kafka brokers; empty means the in-process bus")
    kafka_security: dict = Field(default_factory=dict, description="extra kafka-python options (SASL/SSL), as JSON")
    input_topic: str = Field("", description="topic of ShardRefs this service consumes")
    output_topic: str = Field("", description="topic it publishes finished ShardRefs to; empty = none")
    consumer_group: str = Field("", description="consumer group; defaults to the service name")
    topic_partitions: int = Field(8, description="partitions for topics this service creates")
    max_message_seconds: int = Field(1800, description="longest one message may take before Kafka hands its "
                                                       "partition to another replica")
    max_attempts: int = Field(3, description="deliveries of a shard before it goes to the dead-letter topic")
    retry_backoff_s: float = Field(2.0, description="first pause before a failed shard is retried; doubles")
    dependency_wait_s: float = Field(600.0, description="how long a shard waits in place for a dependency that is "
                                                        "down (Triton, the object store) before it spends an "
                                                        "attempt; keep it below max_message_seconds")
    grpc_token: str = Field("", description="bearer token required on every gRPC call; empty = none")
    grpc_tls_cert: str = Field("", description="PEM certificate chain file for TLS; empty = plaintext")
    grpc_tls_key: str = Field("", description="PEM private key file for TLS")
    grpc_max_message_bytes: int = Field(64 * 1024 * 1024, description="largest gRPC request or response")
    log_level: str = "INFO"
    log_json: bool = True

    @property
    def group_id(self) -> str:
        return self.consumer_group or self.service_name

    @property
    def dead_letter_topic(self) -> str:
        return f"{self.input_topic}.dlq"
