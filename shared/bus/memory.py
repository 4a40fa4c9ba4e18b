"""An in-process bus with Kafka's semantics: partitions by key, consumer groups, committed offsets."""

from __future__ import annotations

import itertools
import threading
import zlib
from collections import defaultdict

from winnow.shared.bus.base import Message


class InProcessBus:
    """Topics live in memory; partitions are assigned round-robin to a group's live consumers."""

    def __init__(self, default_partitions: int = 4) -> None:
        self._default_partitions = default_partitions
        self._logs: dict[str, list[list[Message]]] = {}
        self._committed: dict[tuple[str, str, int], int] = defaultdict(int)
        self._members: dict[str, list[InProcessConsumer]] = defaultdict(list)
        self._changed = threading.Condition()
        self._ids = itertools.count()

    def ensure_topics(self, topics: list[str], partitions: int | None = None) -> None:
        with self._changed:
            for topic in topics:
                self._logs.setdefault(topic, [[] for _ in range(partitions or self._default_partitions)])

    def send(self, topic: str, key: str, value: bytes) -> None:
        self.ensure_topics([topic])
        with self._changed:
            partitions = self._logs[topic]
            index = zlib.crc32(key.encode()) % len(partitions)
            log = partitions[index]
            log.append(Message(topic, index, len(log), key, value))
            self._changed.notify_all()

    def consumer(self, topics: list[str], group_id: str) -> InProcessConsumer:
        self.ensure_topics(topics)
        consumer = InProcessConsumer(self, topics, group_id, next(self._ids))
        with self._changed:
            self._members[group_id].append(consumer)
            self._rebalance(group_id)
        return consumer

    def pending(self, topic: str, group_id: str) -> int:
        """Messages on ``topic`` that ``group_id`` has not committed yet (the consumer lag)."""
        with self._changed:
            return sum(len(log) - self._committed[(group_id, topic, p)]
                       for p, log in enumerate(self._logs.get(topic, [])))

    def close(self) -> None:
        with self._changed:
            self._changed.notify_all()

    # -- internals, called with the condition held --------------------------------------------

    def _rebalance(self, group_id: str) -> None:
        members = self._members[group_id]
        previous = {m.member_id: m._assigned for m in members}
        for member in members:
            member._assigned = {}
        if not members:
            return
        slots = [(t, p) for t in sorted({t for m in members for t in m.topics}) for p in range(len(self._logs[t]))]
        for i, (topic, partition) in enumerate(slots):
            owner = members[i % len(members)]
            if topic in owner.topics:
                # A member that keeps a partition keeps its position (cooperative rebalancing);
                # a partition that moves starts from the group's committed offset.
                kept = previous[owner.member_id].get((topic, partition))
                owner._assigned[(topic, partition)] = (
                    kept if kept is not None else self._committed[(group_id, topic, partition)])
        self._changed.notify_all()

    def _leave(self, consumer: InProcessConsumer) -> None:
        with self._changed:
            members = self._members[consumer.group_id]
            if consumer in members:
                members.remove(consumer)
                self._rebalance(consumer.group_id)


class InProcessConsumer:
    def __init__(self, bus: InProcessBus, topics: list[str], group_id: str, member_id: int) -> None:
        self._bus = bus
        self.topics = list(topics)
        self.group_id = group_id
        self.member_id = member_id
        self._assigned: dict[tuple[str, int], int] = {}
        self._closed = False

    def _take(self, max_messages: int) -> list[Message]:
        taken: list[Message] = []
        for (topic, partition), position in sorted(self._assigned.items()):
            log = self._bus._logs[topic][partition]
            while position < len(log) and len(taken) < max_messages:
                taken.append(log[position])
                position += 1
            self._assigned[(topic, partition)] = position
        return taken

    def poll(self, timeout: float = 1.0, max_messages: int = 1) -> list[Message]:
        with self._bus._changed:
            if self._closed:
                return []
            taken = self._take(max_messages)
            if not taken and timeout > 0:
                self._bus._changed.wait(timeout)
                taken = self._take(max_messages)
            return taken

    def commit(self, message: Message) -> None:
        with self._bus._changed:
            if (message.topic, message.partition) not in self._assigned:
                return  # the partition moved to another member; its delivery will repeat
            slot = (self.group_id, message.topic, message.partition)
            self._bus._committed[slot] = max(self._bus._committed[slot], message.offset + 1)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._bus._leave(self)
