"""The bus contract, checked on both implementations: the in-process bus and real Apache Kafka."""

from __future__ import annotations

import time

import pytest

from winnow.shared.bus import InProcessBus
from winnow.shared.bus.kafka import KafkaBus


@pytest.fixture(params=["memory", pytest.param("kafka", marks=pytest.mark.kafka)])
def bus(request):
    if request.param == "memory":
        bus = InProcessBus()
    else:
        bus = KafkaBus(request.getfixturevalue("kafka_bootstrap"), client_id="test-bus")
    yield bus
    bus.close()


def _drain(consumer, expected: int, timeout: float = 20.0) -> list:
    got, deadline = [], time.monotonic() + timeout
    while len(got) < expected and time.monotonic() < deadline:
        got += consumer.poll(timeout=0.5, max_messages=50)
    return got


def test_committed_messages_are_not_redelivered_and_uncommitted_ones_are(bus, unique):
    topic, group = f"t-{unique}", f"g-{unique}"
    bus.ensure_topics([topic], partitions=4)
    for i in range(12):
        bus.send(topic, f"key-{i}", f"value-{i}".encode())

    first = bus.consumer([topic], group)
    messages = _drain(first, 12)
    assert sorted(m.value for m in messages) == sorted(f"value-{i}".encode() for i in range(12))
    committed = [m for m in messages if m.partition == messages[0].partition]
    first.commit(max(committed, key=lambda m: m.offset))
    first.close()

    second = bus.consumer([topic], group)
    again = _drain(second, 12 - len(committed))
    assert sorted(m.value for m in again) == sorted(m.value for m in messages if m not in committed)
    assert not _drain(second, 1, timeout=1.5)
    second.close()


def test_a_key_always_lands_on_the_same_partition(bus, unique):
    topic = f"t-{unique}"
    bus.ensure_topics([topic], partitions=4)
    for i in range(6):
        bus.send(topic, "same-key", f"{i}".encode())
    consumer = bus.consumer([topic], f"g-{unique}")
    messages = _drain(consumer, 6)
    assert len({m.partition for m in messages}) == 1
    assert [m.value for m in messages] == [f"{i}".encode() for i in range(6)]
    consumer.close()


def test_a_group_shares_partitions_between_members(unique):
    bus = InProcessBus(default_partitions=4)
    topic, group = f"t-{unique}", f"g-{unique}"
    for i in range(40):
        bus.send(topic, f"k{i}", b"v")
    a, b = bus.consumer([topic], group), bus.consumer([topic], group)
    got_a, got_b = _drain(a, 40, timeout=1), _drain(b, 40, timeout=1)
    assert got_a and got_b
    assert len(got_a) + len(got_b) == 40
    assert not {(m.partition) for m in got_a} & {(m.partition) for m in got_b}
    for message in got_a:
        a.commit(message)
    a.close()
    # b inherits a's partitions from a's committed positions: nothing is delivered twice.
    assert _drain(b, 1, timeout=0.5) == []
    assert bus.pending(topic, group) == len(got_b)
