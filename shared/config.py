"""Typed service settings, read from the environment once in ``main`` and passed inward.

Every service reads ``WINNOW_*`` variables (for example ``WINNOW_KAFKA_BOOTSTRAP_SERVERS``,
``WINNOW_GRPC_ADDRESS``); a service adds its own fields with its own prefix. A stage's own
settings are not declared again: :func:`option_fields` makes them from the stage's frozen options
dataclass, which owns their defaults, and ``settings.options()`` gives the dataclass back.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, Field, create_model
from pydantic_settings import BaseSettings, SettingsConfigDict

from winnow.shared.access import AccessPolicy
from winnow.shared.option_flags import build_options, option_items


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
        """The policy every path in a request or bus message goes through (``winnow.shared.access``)."""
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


class StageOptionFields(BaseModel):
    """Settings fields made from a stage's options dataclass (:func:`option_fields`)."""

    options_type: ClassVar[type]
    #: settings field -> the option it sets: ("batch_size",), or ("pool_index", "flat_limit") in a nested dataclass
    option_paths: ClassVar[dict[str, tuple[str, ...]]]

    def options(self) -> Any:
        """The options dataclass these settings describe (options not made settings keep their defaults)."""
        return build_options(self.options_type, {path: getattr(self, name) for name, path in self.option_paths.items()})


def option_fields(options_type: type, *, names: Mapping[str, str] | None = None,
                  exclude: Collection[str] = ()) -> type[StageOptionFields]:
    """A pydantic mixin with one field per option of the frozen dataclass ``options_type``, its
    type, default and help: ``class SafetySettings(option_fields(SafetyOptions), CurationSettings)``.

    Options are listed by :func:`winnow.shared.option_flags.option_items`: a nested options
    dataclass gives ``{option}_{inner}`` fields unless ``names`` maps the dotted path
    (``"pool_index.flat_limit"``) to another name; ``exclude`` names options (dotted paths too)
    that are not settings. The mixin comes first among the bases, so the options' defaults win
    over a base's field of the same name.
    """
    fields: dict[str, Any] = {}
    paths: dict[str, tuple[str, ...]] = {}
    for item in option_items(options_type, names=names, exclude=exclude):
        if item.default_factory is not None:
            fields[item.name] = (item.hint, Field(default_factory=item.default_factory, description=item.help or None))
        else:
            fields[item.name] = (item.hint, Field(item.default, description=item.help or None))
        paths[item.name] = item.path
    mixin = create_model(f"{options_type.__name__}Fields", __base__=StageOptionFields, **fields)
    mixin.options_type, mixin.option_paths = options_type, paths
    return mixin
