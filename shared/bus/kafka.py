"""The bus on Apache Kafka (kafka-python): acks from all replicas, offsets committed by hand."""

from __future__ import annotations

import structlog
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import CommitFailedError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata

from shared.bus.base import Message

log = structlog.get_logger(__name__)


class KafkaBus:
    """One producer per bus; one KafkaConsumer per ``consumer()`` call.

    ``max_poll_interval_ms`` bounds how long one message may take before the group assumes the
    consumer is dead and hands its partitions to another member; shards take minutes, so the
    default is generous.
    """

    def __init__(self, bootstrap_servers: str, *, client_id: str = "winnow", max_poll_interval_ms: int = 1_800_000,
                 session_timeout_ms: int = 10_000, request_timeout_ms: int = 30_000, replication_factor: int = 1,
                 default_partitions: int = 4, security: dict | None = None) -> None:
        self.default_partitions = default_partitions
        self.bootstrap_servers = bootstrap_servers
        self.replication_factor = replication_factor
        self.client_id = client_id
        self._security = security or {}
        self._max_poll_interval_ms = max_poll_interval_ms
        self._session_timeout_ms = session_timeout_ms
        self._request_timeout_ms = request_timeout_ms
        self._producer: KafkaProducer | None = None

    def _producer_instance(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = KafkaProducer(
                bootstrap_servers=self.bootstrap_servers,
                client_id=self.client_id,
                acks="all",
                retries=5,
                linger_ms=0,
                request_timeout_ms=self._request_timeout_ms,
                **self._security,
            )
        return self._producer

    def ensure_topics(self, topics: list[str], partitions: int | None = None) -> None:
        partitions = partitions or self.default_partitions
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap_servers, client_id=self.client_id, **self._security)
        try:
            existing = set(admin.list_topics())
            missing = {t: {"num_partitions": partitions, "replication_factor": self.replication_factor}
                       for t in topics if t not in existing}
            if missing:
                try:
                    admin.create_topics(missing, wait_for_metadata=True)
                except TopicAlreadyExistsError:
                    pass  # another replica created it first
                log.info("topics_created", topics=sorted(missing), partitions=partitions)
        finally:
            admin.close()

    def send(self, topic: str, key: str, value: bytes) -> None:
        future = self._producer_instance().send(topic, key=key.encode(), value=value)
        future.get(timeout=self._request_timeout_ms / 1000)

    def consumer(self, topics: list[str], group_id: str) -> KafkaBusConsumer:
        consumer = KafkaConsumer(
            *topics,
            bootstrap_servers=self.bootstrap_servers,
            client_id=self.client_id,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_interval_ms=self._max_poll_interval_ms,
            session_timeout_ms=self._session_timeout_ms,
            heartbeat_interval_ms=max(1000, self._session_timeout_ms // 3),
            fetch_max_wait_ms=100,
            **self._security,
        )
        return KafkaBusConsumer(consumer)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=10)
            self._producer = None


class KafkaBusConsumer:
    def __init__(self, consumer: KafkaConsumer) -> None:
        self._consumer = consumer

    def poll(self, timeout: float = 1.0, max_messages: int = 1) -> list[Message]:
        batches = self._consumer.poll(timeout_ms=int(timeout * 1000), max_records=max_messages)
        return [
            Message(record.topic, record.partition, record.offset,
                    record.key.decode() if record.key is not None else None, record.value)
            for records in batches.values()
            for record in records
        ]

    def commit(self, message: Message) -> None:
        partition = TopicPartition(message.topic, message.partition)
        try:
            self._consumer.commit({partition: OffsetAndMetadata(message.offset + 1, "", -1)})
        except CommitFailedError as exc:
            # The group rebalanced while the message was processed: its new owner gets it again,
            # and the stage's completion marker makes that second delivery cheap and harmless.
            log.warning("commit_failed_after_rebalance", topic=message.topic, partition=message.partition,
                        offset=message.offset, error=str(exc))

    def close(self) -> None:
        self._consumer.close()
