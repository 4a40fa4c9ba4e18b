"""Typed service settings, read from the environment once in ``main`` and passed inward.

Every service reads ``WINNOW_*`` variables (for example ``WINNOW_KAFKA_BOOTSTRAP_SERVERS``,
``WINNOW_GRPC_ADDRESS``); a service adds its own fields with its own prefix.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.access import AccessPolicy


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
    grpc_open_reflection: bool = Field(False, description="answer gRPC server reflection without the bearer "
                                                          "token (health always answers, for probes)")
    read_roots: tuple[str, ...] = Field((), description="folders and object-store prefixes that paths in requests "
                                                        "and bus messages may read (JSON list); empty = the "
                                                        "service's job storage")
    write_roots: tuple[str, ...] = Field((), description="folders and object-store prefixes that paths in requests "
                                                         "and bus messages may write (JSON list); empty = the "
                                                         "service's job storage")
    allow_pipe_sources: bool = Field(False, description="let requests and messages name 'pipe:' sources (a shell "
                                                        "command on this host)")
    allow_protocol_chains: bool = Field(False, description="let requests and messages use fsspec caching chains "
                                                           "('simplecache::s3://...')")
    allow_networks: tuple[str, ...] = Field((), description="CIDRs exempt from the private-address guard, for "
                                                            "image URLs and http(s) sources")
    log_level: str = "INFO"
    log_json: bool = True

    def job_storage_roots(self) -> tuple[str, ...]:
        """Where this service keeps jobs: the roots when none are configured."""
        return ("runs",)

    def default_read_roots(self) -> tuple[str, ...]:
        """What this service may read when no read roots are configured (besides its write roots)."""
        return self.job_storage_roots()

    def access_policy(self) -> AccessPolicy:
        """The policy every path in a request or bus message goes through (``shared.access``)."""
        write = tuple(self.write_roots) or self.job_storage_roots()
        # configured write roots without read roots: reading is allowed under the write roots only
        read = tuple(self.read_roots) if self.read_roots or self.write_roots else self.default_read_roots()
        return AccessPolicy(read_roots=read, write_roots=write, allow_pipe_sources=self.allow_pipe_sources,
                            allow_protocol_chains=self.allow_protocol_chains,
                            allow_networks=tuple(self.allow_networks))

    @property
    def group_id(self) -> str:
        return self.consumer_group or self.service_name

    @property
    def dead_letter_topic(self) -> str:
        return f"{self.input_topic}.dlq"
