"""The bus contract that both the Kafka and the in-process implementations follow.

- ``send`` returns once the message is durably accepted (Kafka: acknowledged by the broker).
- A consumer belongs to a group; the group's partitions are shared among its live consumers.
- ``commit(message)`` stores the group's position *after* that message. Messages delivered but
  not committed are delivered again to whichever consumer next owns the partition.
- Any call may raise ``BusUnavailable`` while the broker cannot be reached; the caller drops the
  consumer and opens a new one later, which starts again from the group's committed offsets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from winnow.shared.outages import DependencyUnavailable


class BusUnavailable(DependencyUnavailable):
    """The broker cannot be reached (or did not answer in time): try again later, nothing is lost."""


@dataclass(frozen=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes


class Consumer(Protocol):
    def poll(self, timeout: float = 1.0, max_messages: int = 1) -> list[Message]:
        """Up to ``max_messages`` messages, waiting at most ``timeout`` seconds."""

    def commit(self, message: Message) -> None:
        """Mark ``message`` and everything before it on its partition as processed."""

    def close(self) -> None: ...


class Bus(Protocol):
    def ensure_topics(self, topics: list[str], partitions: int | None = None) -> None:
        """Create the topics that do not exist yet (with the bus's default partition count)."""

    def send(self, topic: str, key: str, value: bytes) -> None: ...

    def consumer(self, topics: list[str], group_id: str) -> Consumer: ...

    def close(self) -> None: ...
