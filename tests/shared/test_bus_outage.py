"""A broker outage (stopped, then restarted with its data) costs time, never a shard or a worker.

The broker here is a real Apache Kafka of the test's own (the session's broker is shared by other
tests and must not be restarted): workers keep running through the outage, report that they are
not consuming while it lasts (the service shell turns that into NOT_SERVING), rejoin their group
when the broker is back, and a worker started while the broker is down joins once it is up.
"""

from __future__ import annotations

import threading
import time

import pytest

from winnow.shared.bus.kafka import KafkaBus
from winnow.ops.devstack.kafka import KafkaBroker
from winnow.shared.messages import decode_ref, encode_ref, make_ref
from winnow.shared.ports import free_port
from winnow.shared.service.worker import ShardWorker

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.timeout(400)]


def _ref(shard_id: int):
    return make_ref(job_id="outage", shard_id=shard_id, stage="pool", uri=f"/tmp/outage/{shard_id:08d}",
                    sample_count=1, job_root="/tmp/outage")


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        time.sleep(0.2)


class Recorder:
    """A worker's handle and its consuming reports."""

    def __init__(self) -> None:
        self.handled: list[int] = []
        self.states: list[bool] = []

    def handle(self, ref):
        self.handled.append(ref.shard_id)
        return make_ref(job_id=ref.job_id, shard_id=ref.shard_id, stage="next", uri=ref.uri, sample_count=1,
                        job_root=ref.job_root)


def _start_worker(bus: KafkaBus, recorder: Recorder, group: str) -> tuple[ShardWorker, threading.Thread]:
    worker = ShardWorker(bus, recorder.handle, stage="s", input_topic="in", output_topic="out", group_id=group,
                         on_consuming=recorder.states.append)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return worker, thread


def test_workers_ride_out_a_broker_restart(tmp_path):
    broker = KafkaBroker(tmp_path / "kafka", port=free_port())
    broker.start()
    producer = KafkaBus(broker.bootstrap_servers, client_id="outage-producer", default_partitions=2)
    first, second = Recorder(), Recorder()
    buses = [KafkaBus(broker.bootstrap_servers, client_id=f"outage-{i}", default_partitions=2) for i in range(2)]
    workers = []
    try:
        workers.append(_start_worker(buses[0], first, "group-a"))
        for shard_id in range(3):
            producer.send("in", str(shard_id), encode_ref(_ref(shard_id)))
        _wait(lambda: sorted(first.handled) == [0, 1, 2], 60, "the first three shards")
        assert first.states[-1] is True

        broker.stop()
        _wait(lambda: first.states[-1] is False, 60, "the worker to report that it is not consuming")
        # A second worker starts while the broker is down: it waits instead of dying.
        workers.append(_start_worker(buses[1], second, "group-b"))
        time.sleep(3)
        assert all(thread.is_alive() for _, thread in workers)
        assert second.states in ([], [False])

        broker.restart()
        for shard_id in range(3, 6):
            producer.send("in", str(shard_id), encode_ref(_ref(shard_id)))
        _wait(lambda: set(first.handled) == set(range(6)), 120, "the first worker to resume after the restart")
        _wait(lambda: set(second.handled) == set(range(6)), 120, "the late worker to join and read everything")
        assert first.states[-1] is True and second.states[-1] is True
        assert sorted(set(first.handled)) == list(range(6))
        assert first.handled.count(0) == 1, "shards committed before the outage are not processed again"
        published = KafkaBus(broker.bootstrap_servers, client_id="outage-check").consumer(["out"], "check")
        seen, deadline = set(), time.monotonic() + 30
        while len(seen) < 6 and time.monotonic() < deadline:
            seen |= {decode_ref(m.value).shard_id for m in published.poll(timeout=0.5, max_messages=50)}
        published.close()
        assert seen == set(range(6)), "every shard's result reached the output topic"
    finally:
        for worker, thread in workers:
            worker.stop()
            thread.join(timeout=30)
        for bus in [producer, *buses]:
            bus.close()
        broker.stop()
