"""Scaling, shown on the stack `winnow up` runs: a second replica takes half the partitions and
the stage's throughput rises; a replica killed mid-shard hands its partitions to the other, and
nothing is lost or duplicated.

The downloader is the stage scaled: each replica works one shard at a time, and every image sits
behind the real local HTTP server's ``/slow/`` route, so a shard's time is set by the network and
a second replica should nearly double the rate even on this 2-core machine.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from pathlib import Path

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kafka import KafkaConsumer

from winnow.ops.devstack.stack import Stack, StackOptions
from winnow.ops.devstack.status import collect
from winnow.shared.messages import decode_ref
from winnow.shared.proto import downloader_pb2, downloader_pb2_grpc
from winnow.shared.shards import iter_tar_samples, read_table
from winnow.ops.topology import TOPIC_PARTITIONS, service
from tests.infra.images import openclipart_images

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

SAMPLES_PER_SHARD = 4
SHARDS = 48
DELAY_S = 0.4  # per image; two fetches at a time per replica -> ~0.8 s of network per shard


def _finished_shards(stage_dir: Path) -> int:
    return len(list(stage_dir.glob("*_stats.json")))


def _rate(stage_dir: Path, seconds: float) -> float:
    """Shards finished per second over the next ``seconds``."""
    start_count, start = _finished_shards(stage_dir), time.monotonic()
    time.sleep(seconds)
    return (_finished_shards(stage_dir) - start_count) / (time.monotonic() - start)


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _assignment(stack: Stack) -> dict[str, list[int]]:
    status = next(s for s in collect(stack.state()) if s.name == "downloader")
    return {replica.name: replica.partitions for replica in status.replicas}


@pytest.fixture
def pool(web, web_root, tmp_path) -> tuple[Path, list[str]]:
    images = openclipart_images(limit=SHARDS * SAMPLES_PER_SHARD)
    assert len(images) == SHARDS * SAMPLES_PER_SHARD, "needs Debian's openclipart-png"
    uids, urls = [], []
    for index, path in enumerate(images):
        name = f"scaling_{index:04d}.png"
        (web_root / name).write_bytes(path.read_bytes())
        uids.append(f"{index:032x}")
        urls.append(web.url(f"/slow/{DELAY_S}/{name}"))
    pool_path = tmp_path / "pool.parquet"
    pq.write_table(pa.table({"uid": uids, "url": urls, "text": [f"picture {i}" for i in range(len(uids))]}),
                   pool_path)
    return pool_path, uids


def test_a_second_replica_shares_the_partitions_and_a_killed_one_loses_nothing(kafka_bootstrap, pool, tmp_path):
    pool_path, uids = pool
    options = StackOptions(state_dir=tmp_path / "stack", services=("downloader",), triton=False, s3=False,
                           free_ports=True, kafka_bootstrap=kafka_bootstrap,
                           extra_env={"downloader": {"WINNOW_ALLOW_NETWORKS": '["127.0.0.0/8"]',
                                                     "WINNOW_THREAD_COUNT": "2", "WINNOW_RETRIES": "0",
                                                     "WINNOW_RETRY_BACKOFF_S": "0.2"}})
    with Stack(options) as stack:
        _wait(lambda: _assignment(stack) == {"downloader-0": list(range(TOPIC_PARTITIONS))}, 60,
              "the first replica to join its group")
        with grpc.insecure_channel(stack.replicas["downloader"][0].grpc_address) as channel:
            # a pool goes where the stack's downloader may read pools (WINNOW_READ_ROOTS), as `winnow submit` puts it
            submitted = tmp_path / "stack" / "pools" / pool_path.name
            submitted.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(pool_path, submitted)
            job = downloader_pb2_grpc.DownloaderStub(channel).SubmitPool(downloader_pb2.SubmitPoolRequest(
                pool_uri=str(submitted), samples_per_shard=SAMPLES_PER_SHARD), timeout=60)
        assert job.shard_count == SHARDS
        shards_dir = Path(job.job_root) / "downloader"

        _wait(lambda: _finished_shards(shards_dir) >= 2, 120, "the first shards")
        one_replica = _rate(shards_dir, 8)

        stack.scale("downloader", 2)
        halves = _wait(lambda: (a := _assignment(stack)) and all(len(p) == TOPIC_PARTITIONS // 2 for p in a.values())
                       and len(a) == 2 and a, 60, "the partitions to be split")
        assert sorted(p for partitions in halves.values() for p in partitions) == list(range(TOPIC_PARTITIONS))
        two_replicas = _rate(shards_dir, 8)
        print(f"downloader shards/s: one replica {one_replica:.2f}, two {two_replicas:.2f}")
        assert two_replicas > 1.4 * one_replica, (one_replica, two_replicas)

        # a crash mid-shard: SIGKILL, no chance to finish or commit
        stack.replicas["downloader"][1].kill()
        _wait(lambda: _assignment(stack).get("downloader-0") == list(range(TOPIC_PARTITIONS)), 90,
              "the survivor to take every partition")
        _wait(lambda: _finished_shards(shards_dir) == SHARDS, 240, "the whole job")

        # nothing lost, nothing duplicated: each uid once in the ledgers and once in the tars
        ledger_uids = Counter(uid for shard in range(SHARDS)
                              for uid in read_table(str(shards_dir / f"{shard:08d}"))["uid"].to_pylist())
        assert ledger_uids == Counter(uids)
        tar_uids = Counter(json.loads(files["json"])["uid"] for shard in range(SHARDS)
                           for _key, files in iter_tar_samples(str(shards_dir / f"{shard:08d}")))
        assert set(tar_uids) <= set(uids) and max(tar_uids.values()) == 1
        # and every shard was announced downstream (a redone shard may be announced twice: same files)
        consumer = KafkaConsumer(service("downloader").output_topic, bootstrap_servers=kafka_bootstrap,
                                 auto_offset_reset="earliest", consumer_timeout_ms=3000)
        announced = {ref.shard_id for ref in map(decode_ref, (m.value for m in consumer)) if ref.job_id == job.job_id}
        consumer.close()
        assert announced == set(range(SHARDS))
