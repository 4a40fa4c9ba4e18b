"""The bus on Apache Kafka (kafka-python): acks from all replicas, offsets committed by hand.

While the broker is unreachable (a rolling restart, a network cut) every call raises
``BusUnavailable`` instead of kafka-python's own errors, so the worker can drop its consumer and
join the group again later; nothing is committed meanwhile, so nothing is lost.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import structlog
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import CommitFailedError, KafkaConnectionError, KafkaTimeoutError, RetriableError, \
    TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata

from winnow.shared.bus.base import BusUnavailable, Message

# kafka-python's errors that mean "the broker cannot be reached now", not "this request is wrong".
_UNREACHABLE = (KafkaConnectionError, KafkaTimeoutError, RetriableError)


@contextlib.contextmanager
def broker_calls(what: str) -> Iterator[None]:
    """Turn kafka-python's connection and timeout errors into ``BusUnavailable``."""
    try:
        yield
    except _UNREACHABLE as exc:
        raise BusUnavailable(f"kafka {what}: {type(exc).__name__}: {exc}") from exc

log = structlog.get_logger(__name__)


class KafkaBus:
    """One producer per bus; one KafkaConsumer per ``consumer()`` call.

    ``max_poll_interval_ms`` bounds how long one message may take before the group assumes the
    consumer is dead and hands its partitions to another member; shards take minutes, so the
    default is generous.

    ``metadata_max_age_ms`` is short because a group leader that assigns before its first
    metadata response gives every member no partitions (kafka-python 3.0.12 logs "No partition
    metadata for topic") and rejoins only when metadata next changes: with the 5-minute default a
    replica, or the whole group, sits idle that long.
    """

    def __init__(self, bootstrap_servers: str, *, client_id: str = "winnow", max_poll_interval_ms: int = 1_800_000,
                 session_timeout_ms: int = 10_000, request_timeout_ms: int = 30_000, replication_factor: int = 1,
                 default_partitions: int = 4, metadata_max_age_ms: int = 15_000,
                 security: dict | None = None) -> None:
        self.default_partitions = default_partitions
        self.bootstrap_servers = bootstrap_servers
        self.replication_factor = replication_factor
        self.client_id = client_id
        self._security = security or {}
        self._max_poll_interval_ms = max_poll_interval_ms
        self._session_timeout_ms = session_timeout_ms
        self._request_timeout_ms = request_timeout_ms
        self._metadata_max_age_ms = metadata_max_age_ms
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
        with broker_calls("admin"):
            admin = KafkaAdminClient(bootstrap_servers=self.bootstrap_servers, client_id=self.client_id,
                                     **self._security)
        try:
            with broker_calls("create topics"):
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
        with broker_calls("send"):
            future = self._producer_instance().send(topic, key=key.encode(), value=value)
            future.get(timeout=self._request_timeout_ms / 1000)

    def consumer(self, topics: list[str], group_id: str) -> KafkaBusConsumer:
        with broker_calls("join group"):
            consumer = self._new_consumer(topics, group_id)
        return KafkaBusConsumer(consumer)

    def _new_consumer(self, topics: list[str], group_id: str) -> KafkaConsumer:
        return KafkaConsumer(
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
            metadata_max_age_ms=self._metadata_max_age_ms,
            **self._security,
        )

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=10)
            self._producer = None


class KafkaBusConsumer:
    """One group member. kafka-python keeps reconnecting on its own while the broker is away and
    its ``poll`` simply returns nothing, so ``connected`` reads the group coordinator: unknown for
    longer than ``grace_s`` (a rejoin takes a moment) means this member is not consuming."""

    def __init__(self, consumer: KafkaConsumer, grace_s: float = 10.0) -> None:
        self._consumer = consumer
        self._grace_s = grace_s
        self._coordinator_lost_at: float | None = None

    def connected(self) -> bool:
        """Whether this member is in touch with its group coordinator (so it receives its partitions)."""
        coordinator = getattr(self._consumer, "_coordinator", None)
        if coordinator is None or not coordinator.coordinator_unknown():
            self._coordinator_lost_at = None
            return True
        now = time.monotonic()
        if self._coordinator_lost_at is None:
            self._coordinator_lost_at = now
        return now - self._coordinator_lost_at < self._grace_s

    def poll(self, timeout: float = 1.0, max_messages: int = 1) -> list[Message]:
        with broker_calls("poll"):
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
            with broker_calls("commit"):
                self._consumer.commit({partition: OffsetAndMetadata(message.offset + 1, "", -1)})
        except CommitFailedError as exc:
            # The group rebalanced while the message was processed: its new owner gets it again,
            # and the stage's completion marker makes that second delivery cheap and harmless.
            log.warning("commit_failed_after_rebalance", topic=message.topic, partition=message.partition,
                        offset=message.offset, error=str(exc))

    def close(self) -> None:
        try:
            self._consumer.close(autocommit=False)
        except Exception as exc:  # noqa: BLE001 - closing a consumer of an unreachable broker
            log.warning("consumer_close_failed", error=str(exc))
