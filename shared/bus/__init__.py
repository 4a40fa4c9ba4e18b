"""The bus: topics of ShardRef messages with consumer groups and explicit offset commits.

Two implementations share one contract (``winnow.shared.bus.base``): Apache Kafka through kafka-python
for services, and an in-process bus with the same at-least-once semantics for ``winnow run``.
"""

from winnow.shared.bus.base import Bus, BusUnavailable, Consumer, Message
from winnow.shared.bus.memory import InProcessBus

__all__ = ["Bus", "BusUnavailable", "Consumer", "InProcessBus", "Message", "open_bus"]


def open_bus(bootstrap_servers: str | None, client_id: str = "winnow", partitions: int = 4, **kafka_options) -> Bus:
    """Kafka when bootstrap servers are given, otherwise a fresh in-process bus."""
    if bootstrap_servers:
        from winnow.shared.bus.kafka import KafkaBus

        return KafkaBus(bootstrap_servers, client_id=client_id, default_partitions=partitions, **kafka_options)
    return InProcessBus(default_partitions=partitions)
