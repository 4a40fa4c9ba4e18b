"""The worker loop: downstream message before the commit, retries, dead letters, poison messages."""

from __future__ import annotations

import threading
import time

import pytest

from winnow.shared.bus import InProcessBus
from winnow.shared.bus.kafka import KafkaBus
from winnow.shared.messages import DeadLetter, decode_ref, encode_ref, make_ref
from winnow.shared.service.worker import ShardWorker
from winnow.shared.shards import ShardFormatError


@pytest.fixture(params=["memory", pytest.param("kafka", marks=pytest.mark.kafka)])
def bus(request):
    bus = (InProcessBus() if request.param == "memory"
           else KafkaBus(request.getfixturevalue("kafka_bootstrap"), client_id="test-worker"))
    yield bus
    bus.close()


def _ref(shard_id: int, attempt: int = 0):
    return make_ref(job_id="job", shard_id=shard_id, stage="pool", uri=f"/tmp/none/{shard_id:08d}",
                    sample_count=1, job_root="/tmp/none", attempt=attempt)


def _collect(bus, topic: str, group: str, expected: int, timeout: float = 30.0) -> list:
    consumer = bus.consumer([topic], group)
    got, deadline = [], time.monotonic() + timeout
    while len(got) < expected and time.monotonic() < deadline:
        got += consumer.poll(timeout=0.5, max_messages=50)
    consumer.close()
    return got


def _run_until(worker: ShardWorker, condition, timeout: float = 30.0) -> None:
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)
    worker.stop()
    thread.join(timeout=15)
    assert condition(), "worker did not get there in time"


def test_each_shard_is_processed_and_published_downstream(bus, unique):
    source, sink = f"in-{unique}", f"out-{unique}"
    bus.ensure_topics([source, sink])
    for shard_id in range(5):
        bus.send(source, str(shard_id), encode_ref(_ref(shard_id)))
    seen = []

    def handle(ref):
        seen.append(ref.shard_id)
        out = make_ref(job_id=ref.job_id, shard_id=ref.shard_id, stage="next", uri=ref.uri + "-next",
                       sample_count=1, job_root=ref.job_root)
        return out

    worker = ShardWorker(bus, handle, stage="next", input_topic=source, output_topic=sink, group_id=f"g-{unique}")
    _run_until(worker, lambda: len(seen) == 5)
    published = _collect(bus, sink, f"check-{unique}", 5)
    assert sorted(decode_ref(m.value).shard_id for m in published) == [0, 1, 2, 3, 4]
    assert all(decode_ref(m.value).stage == "next" for m in published)
    # Everything was committed: a new worker in the same group finds nothing to do.
    again = []
    worker2 = ShardWorker(bus, lambda ref: again.append(ref), stage="next", input_topic=source, output_topic=None,
                          group_id=f"g-{unique}")
    thread = threading.Thread(target=worker2.run, kwargs={"idle_exit_s": 3}, daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert again == []


def test_a_failing_shard_is_retried_then_dead_lettered_and_the_others_go_on(bus, unique):
    source = f"in-{unique}"
    bus.ensure_topics([source])
    for shard_id in range(3):
        bus.send(source, str(shard_id), encode_ref(_ref(shard_id)))
    attempts: dict[int, list[int]] = {}

    def handle(ref):
        attempts.setdefault(ref.shard_id, []).append(ref.attempt)
        if ref.shard_id == 1:
            raise RuntimeError("storage is on fire")
        return None

    worker = ShardWorker(bus, handle, stage="s", input_topic=source, output_topic=None, group_id=f"g-{unique}",
                         max_attempts=3, retry_backoff_s=0.05)
    _run_until(worker, lambda: len(attempts.get(1, [])) == 3 and 0 in attempts and 2 in attempts)
    assert attempts[1] == [0, 1, 2]
    assert attempts[0] == [0] and attempts[2] == [0]
    letters = [DeadLetter.FromString(m.value) for m in _collect(bus, f"{source}.dlq", f"dlq-{unique}", 1)]
    assert len(letters) == 1
    assert letters[0].ref.shard_id == 1 and letters[0].stage == "s"
    assert "storage is on fire" in letters[0].error and letters[0].error_type == "RuntimeError"


def test_bad_input_is_dead_lettered_at_once(bus, unique):
    source = f"in-{unique}"
    bus.ensure_topics([source])
    bus.send(source, "poison", b"\xff\x00 not a protobuf at all")
    future = _ref(7)
    future.schema_version = 99
    bus.send(source, "future", encode_ref(future))
    bus.send(source, "corrupt", encode_ref(_ref(8)))
    calls = []

    def handle(ref):
        calls.append(ref.shard_id)
        raise ShardFormatError("unreadable shard parquet")

    worker = ShardWorker(bus, handle, stage="s", input_topic=source, output_topic=None, group_id=f"g-{unique}",
                         max_attempts=5, retry_backoff_s=0.05)
    _run_until(worker, lambda: worker.processed == 3)
    assert calls == [8], "a permanent error is not retried"
    letters = [DeadLetter.FromString(m.value) for m in _collect(bus, f"{source}.dlq", f"dlq-{unique}", 3)]
    assert len(letters) == 3
    assert {letter.error_type for letter in letters} == {"PoisonMessage", "ShardFormatError"}
    assert any(letter.raw_value.startswith(b"\xff\x00") for letter in letters)
    assert any("schema version 99" in letter.error for letter in letters)


def _unreachable_triton():
    """A real Triton client aimed at a port where nothing listens: its calls raise TritonUnavailable."""
    from winnow.shared.ports import free_port
    from winnow.shared.triton.client import TritonClient

    return TritonClient(f"127.0.0.1:{free_port()}", init_timeout_s=1, infer_timeout_s=1, retries=0)


def test_a_shard_waits_for_a_model_server_that_is_down_without_spending_attempts(bus, unique):
    source, sink = f"in-{unique}", f"out-{unique}"
    bus.ensure_topics([source, sink])
    bus.send(source, "0", encode_ref(_ref(0)))
    client = _unreachable_triton()
    calls = []

    def handle(ref):
        calls.append(ref.attempt)
        if len(calls) <= 2:  # Triton is restarting: the first two tries cannot reach it
            client.wait_ready(["toxicity"], timeout=0.5)
        return make_ref(job_id=ref.job_id, shard_id=ref.shard_id, stage="next", uri=ref.uri, sample_count=1,
                        job_root=ref.job_root)

    worker = ShardWorker(bus, handle, stage="s", input_topic=source, output_topic=sink, group_id=f"g-{unique}",
                         max_attempts=1, retry_backoff_s=0.05, dependency_wait_s=60)
    _run_until(worker, lambda: worker.processed == 1)
    client.close()
    assert calls == [0, 0, 0], "tried in place: no delivery attempt was spent on the outage"
    assert [decode_ref(m.value).shard_id for m in _collect(bus, sink, f"check-{unique}", 1)] == [0]
    assert _collect(bus, f"{source}.dlq", f"dlq-{unique}", 1, timeout=2) == []


def test_an_outage_longer_than_the_wait_budget_spends_attempts_as_before(bus, unique):
    source = f"in-{unique}"
    bus.ensure_topics([source])
    bus.send(source, "0", encode_ref(_ref(0)))
    client = _unreachable_triton()

    def handle(ref):
        client.wait_ready(["toxicity"], timeout=0.2)

    worker = ShardWorker(bus, handle, stage="s", input_topic=source, output_topic=None, group_id=f"g-{unique}",
                         max_attempts=2, retry_backoff_s=0.05, dependency_wait_s=0)
    _run_until(worker, lambda: worker.processed == 2)
    client.close()
    letters = [DeadLetter.FromString(m.value) for m in _collect(bus, f"{source}.dlq", f"dlq-{unique}", 1)]
    assert [letter.error_type for letter in letters] == ["TritonUnavailable"]


def test_a_message_outside_the_roots_is_dead_lettered_unread(bus, unique, tmp_path):
    from winnow.shared.access import AccessPolicy

    source = f"in-{unique}"
    bus.ensure_topics([source])
    inside = make_ref(job_id="job", shard_id=0, stage="pool", uri=str(tmp_path / "job" / "pool" / "00000000"),
                      sample_count=1, job_root=str(tmp_path / "job"))
    outside = make_ref(job_id="job", shard_id=1, stage="pool", uri="/etc/passwd", sample_count=1,
                       job_root=str(tmp_path / "job"))
    bad_id = make_ref(job_id="../../x", shard_id=2, stage="pool", uri=str(tmp_path / "job" / "pool" / "00000002"),
                      sample_count=1, job_root=str(tmp_path / "job"))
    for ref in (inside, outside, bad_id):
        bus.send(source, str(ref.shard_id), encode_ref(ref))
    policy = AccessPolicy(read_roots=(), write_roots=(str(tmp_path),))
    handled = []
    worker = ShardWorker(bus, lambda ref: handled.append(ref.shard_id), stage="s", input_topic=source,
                         output_topic=None, group_id=f"g-{unique}", max_attempts=5, retry_backoff_s=0.05,
                         admit=policy.admit)
    _run_until(worker, lambda: worker.processed == 3)
    assert handled == [0], "the stage never sees a refused message"
    letters = {letter.ref.shard_id: letter for letter in
               (DeadLetter.FromString(m.value) for m in _collect(bus, f"{source}.dlq", f"dlq-{unique}", 2))}
    assert letters[1].error_type == "AccessDenied" and "WINNOW_READ_ROOTS" in letters[1].error
    assert letters[2].error_type == "InvalidReference" and "job_id" in letters[2].error
