"""End-to-end check of the real KRaft Kafka broker fixture with kafka-python.

Covers what winnow relies on: topic admin, keyed produce, consumer groups with
explicit (manual) offset commits, no redelivery of committed records, and
redelivery of uncommitted ones to the next group member.
"""
from __future__ import annotations

import time
import uuid

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.structs import OffsetAndMetadata, TopicPartition

from winnow.ops.devstack.kafka import KafkaBroker

pytestmark = pytest.mark.kafka

N_PARTITIONS = 4


@pytest.fixture(scope="module")
def kafka_bootstrap(tmp_path_factory):
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"))
    bootstrap = broker.start()
    print(f"kafka broker {bootstrap} started in {broker.start_seconds:.2f}s")
    try:
        yield bootstrap
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def admin(kafka_bootstrap):
    client = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, request_timeout_ms=10000)
    try:
        yield client
    finally:
        client.close()


def _consumer(bootstrap: str, group: str, topic: str) -> KafkaConsumer:
    c = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        # Keep group membership changes quick on a test broker (broker minimum is 6s).
        session_timeout_ms=10000,
        heartbeat_interval_ms=1000,
        max_poll_interval_ms=30000,
        fetch_max_wait_ms=100,
        # A leader that assigns before its first metadata response leaves the group without
        # partitions until metadata next refreshes (seen once in CI): refresh within the wait.
        metadata_max_age_ms=5000,
    )
    # The same race once more (seen again in CI: c3 got no partitions for 30 s): the topic's
    # metadata is fetched before the first poll joins the group, so the leader has it to assign.
    assert c.partitions_for_topic(topic) == set(range(N_PARTITIONS))
    c.subscribe([topic])
    return c


def _wait_assigned(consumer: KafkaConsumer, n: int = N_PARTITIONS, timeout: float = 30) -> set:
    """Poll (without consuming) until the group rebalance gave us all partitions."""
    deadline = time.monotonic() + timeout
    while len(consumer.assignment()) < n:
        assert time.monotonic() < deadline, f"no full assignment: {consumer.assignment()}"
        recs = consumer.poll(timeout_ms=200)
        assert not recs, "records returned while waiting for assignment"
    return consumer.assignment()


def _drain(consumer: KafkaConsumer, expected: int | None, timeout: float = 30,
           quiet: float = 2.0) -> list:
    """Poll until `expected` records arrived (or, if None, until `quiet` seconds w/o records)."""
    out = []
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    while time.monotonic() < deadline:
        batch = consumer.poll(timeout_ms=200)
        for recs in batch.values():
            out.extend(recs)
        if batch:
            last = time.monotonic()
        if expected is not None and len(out) >= expected:
            break
        if expected is None and consumer.assignment() and time.monotonic() - last > quiet:
            break
    return out


def _produce(bootstrap: str, topic: str, keys: list[str]) -> dict[str, int]:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        futures = {k: producer.send(topic, key=k.encode(), value=f"v-{k}".encode()) for k in keys}
        producer.flush(timeout=30)
        return {k: f.get(timeout=30).partition for k, f in futures.items()}
    finally:
        producer.close(timeout=10)


def test_consumer_group_commit_and_redelivery(kafka_bootstrap, admin):
    topic = f"winnow-test-{uuid.uuid4().hex[:8]}"
    group = f"g-{uuid.uuid4().hex[:8]}"
    tps = [TopicPartition(topic, p) for p in range(N_PARTITIONS)]

    admin.create_topics({topic: {"num_partitions": N_PARTITIONS, "replication_factor": 1}},
                        wait_for_metadata=True)
    desc = {t["name"]: t for t in admin.describe_topics([topic])}
    assert len(desc[topic]["partitions"]) == N_PARTITIONS

    # 20 keyed messages; same key -> same partition.
    keys = [f"key-{i}" for i in range(20)]
    partition_of = _produce(kafka_bootstrap, topic, keys)
    assert len(set(partition_of.values())) > 1

    # First member consumes everything and commits explicitly.
    c1 = _consumer(kafka_bootstrap, group, topic)
    got = _drain(c1, expected=20)
    assert sorted(r.key.decode() for r in got) == sorted(keys)
    for r in got:
        assert r.partition == partition_of[r.key.decode()]
        assert r.value == f"v-{r.key.decode()}".encode()
    c1.commit()  # commits positions of all consumed partitions
    ends = c1.end_offsets(tps)
    for tp in tps:
        if ends[tp]:
            assert c1.committed(tp) == ends[tp]
    c1.close()

    # Same group again: nothing may be redelivered.
    c2 = _consumer(kafka_bootstrap, group, topic)
    _wait_assigned(c2)
    for tp in tps:
        assert c2.position(tp) == ends[tp]
    assert _drain(c2, expected=None, timeout=10, quiet=2.0) == []

    # New uncommitted work: c2 reads it but commits only partition 0 (explicit offset).
    more = [f"more-{i}" for i in range(12)]
    more_part = _produce(kafka_bootstrap, topic, more)
    got2 = _drain(c2, expected=len(more))
    assert sorted(r.key.decode() for r in got2) == sorted(more)
    p0 = [r for r in got2 if r.partition == 0]
    if p0:
        c2.commit({TopicPartition(topic, 0): OffsetAndMetadata(max(r.offset for r in p0) + 1, "", -1)})
    c2.close()

    # A new member of the group gets exactly the uncommitted records back.
    expect_again = sorted(k for k in more if more_part[k] != 0)
    c3 = _consumer(kafka_bootstrap, group, topic)
    got3 = _drain(c3, expected=len(expect_again), timeout=60)
    assert sorted(r.key.decode() for r in got3) == expect_again, f"c3's partitions: {c3.assignment()}"
    # ...and nothing beyond them.
    assert _drain(c3, expected=None, timeout=5, quiet=1.5) == []
    c3.commit()
    c3.close()

    admin.delete_topics([topic])
    deadline = time.monotonic() + 30
    while topic in admin.list_topics():
        assert time.monotonic() < deadline, "topic not deleted"
        time.sleep(0.2)
