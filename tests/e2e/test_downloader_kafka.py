"""The downloader as its own process over real Kafka: killed mid-job, restarted, nothing lost or doubled."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from kafka import KafkaConsumer

from winnow.shared.messages import decode_ref
from winnow.shared.proto import downloader_pb2, downloader_pb2_grpc
from winnow.shared.shards import read_table
from tests.e2e.processes import ServiceProcess, free_port

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

def test_a_killed_downloader_resumes_and_every_sample_lands_exactly_once(kafka_bootstrap, web, tmp_path, unique):
    names = web.names()
    rows = 48
    # Each image is served slowly, so the process is surely mid-shard when it is killed.
    urls = [web.url(f"/slow/0.25/{names[i % len(names)]}?row={i}") for i in range(rows)]
    pool = tmp_path / "pool.parquet"
    pq.write_table(pa.table({"url": urls, "text": [f"sample {i}" for i in range(rows)],
                             "uid": [f"{i:032x}" for i in range(rows)]}), pool)
    port = free_port()
    output_topic = f"winnow.shards.downloader.{unique}"
    env = {**os.environ,
           "WINNOW_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
           "WINNOW_INPUT_TOPIC": f"winnow.shards.pool.{unique}",
           "WINNOW_OUTPUT_TOPIC": output_topic,
           "WINNOW_CONSUMER_GROUP": f"downloader-{unique}",
           "WINNOW_GRPC_ADDRESS": f"127.0.0.1:{port}",
           "WINNOW_METRICS_PORT": "0",
           "WINNOW_OUTPUT_URI": str(tmp_path / "jobs"),
           "WINNOW_READ_ROOTS": json.dumps([str(tmp_path)]),  # the pool lies beside the jobs
           "WINNOW_ALLOW_NETWORKS": '["127.0.0.0/8"]',
           "WINNOW_THREAD_COUNT": "2",
           "WINNOW_SAMPLES_PER_SHARD": "8",
           "WINNOW_TOPIC_PARTITIONS": "4",
           "WINNOW_RETRIES": "0",
           "WINNOW_LOG_JSON": "true"}
    log_path = tmp_path / "downloader.log"
    first = ServiceProcess("winnow.services.downloader", env, log_path, port).start()
    second = None
    try:
        first.wait_healthy()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = downloader_pb2_grpc.DownloaderStub(channel).SubmitPool(
                downloader_pb2.SubmitPoolRequest(pool_uri=str(pool)))
        assert reply.shard_count == 6
        job_root = Path(reply.job_root)

        # Kill it with SIGKILL once at least one shard is done but before the job is.
        deadline = time.monotonic() + 60
        while not list((job_root / "downloader").glob("*_stats.json")) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        first.kill()
        finished_before_kill = {p.name: p.read_bytes() for p in (job_root / "downloader").glob("*_stats.json")}
        assert 1 <= len(finished_before_kill) < 6, "the kill must land mid-job"

        second = ServiceProcess("winnow.services.downloader", env, log_path, port).start()
        second.wait_healthy()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = downloader_pb2_grpc.DownloaderStub(channel)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                progress = stub.GetJob(downloader_pb2.GetJobRequest(job_id=reply.job_id))
                if progress.done:
                    break
                time.sleep(0.5)
        assert progress.done, second.log_tail()

        # A ShardRef per finished shard reached the output topic (at least once each).
        consumer = KafkaConsumer(output_topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                                 group_id=f"check-{unique}", consumer_timeout_ms=5000)
        published = {decode_ref(record.value).shard_id for record in consumer}
        consumer.close()
        assert published == set(range(6))
    finally:
        for service in (first, second):
            if service is not None:
                service.stop()

    # Every sample exactly once, in the ledgers and in the tars.
    ledgers = pa.concat_tables([read_table(str(job_root / "downloader" / f"{i:08d}")) for i in range(6)])
    assert sorted(ledgers["uid"].to_pylist()) == [f"{i:032x}" for i in range(rows)]
    assert set(ledgers["status"].to_pylist()) == {"success"}
    tar_uids = Counter(sample["json"]["uid"] for sample in wds.WebDataset(
        str(job_root / "downloader" / "{00000000..00000005}.tar"), shardshuffle=False).decode())
    assert tar_uids == Counter({f"{i:032x}": 1 for i in range(rows)})
    assert not list((job_root / "downloader").glob("*.tmp-*")), "no partial files are left behind"
    # Shards finished before the kill were skipped on restart, not downloaded and written again.
    for name, content in finished_before_kill.items():
        assert (job_root / "downloader" / name).read_bytes() == content
