"""``SubmitShards`` to the downloader as its own process over real Kafka: shards one already has become
the job's ``source`` ledgers, their references reach the first curation stage's topic, and shards
outside the service's read roots are refused."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import grpc
import pytest
from kafka import KafkaConsumer

from winnow.shared.messages import decode_ref
from winnow.shared.proto import downloader_pb2, downloader_pb2_grpc
from winnow.shared.shards import image_source, read_table
from tests.downloader.test_shards_import import write_img2dataset_shard
from tests.e2e.processes import ServiceProcess, free_port
from winnow.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.kafka]


def test_submitted_shards_are_imported_in_place_and_outsiders_are_refused(kafka_bootstrap, tmp_path, unique, capsys):
    allowed = tmp_path / "shards"
    write_img2dataset_shard(allowed / "mine", "00000")
    write_img2dataset_shard(allowed / "mine", "00001", parquet=False)
    (allowed / "empty").mkdir()
    outside = tmp_path / "elsewhere"
    write_img2dataset_shard(outside, "00000")
    (allowed / "linked").mkdir()
    (allowed / "linked" / "00000.tar").symlink_to(outside / "00000.tar")  # a link that leads out of the roots

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
           "WINNOW_READ_ROOTS": json.dumps([str(allowed)]),
           "WINNOW_TOPIC_PARTITIONS": "2",
           "WINNOW_LOG_JSON": "true"}
    service = ServiceProcess("winnow.services.downloader", env, tmp_path / "downloader.log", port).start()
    try:
        service.wait_healthy()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = downloader_pb2_grpc.DownloaderStub(channel)
            for uri, code, says in [(str(outside), grpc.StatusCode.PERMISSION_DENIED, "WINNOW_READ_ROOTS"),
                                    (str(allowed / "linked"), grpc.StatusCode.PERMISSION_DENIED, "WINNOW_READ_ROOTS"),
                                    (str(allowed / "mine" / ".." / ".." / "elsewhere"),
                                     grpc.StatusCode.PERMISSION_DENIED, "WINNOW_READ_ROOTS"),
                                    (str(allowed / "empty"), grpc.StatusCode.INVALID_ARGUMENT, "no .tar shards"),
                                    (str(allowed / "missing"), grpc.StatusCode.NOT_FOUND, "no shards")]:
                with pytest.raises(grpc.RpcError) as refused:
                    stub.SubmitShards(downloader_pb2.SubmitShardsRequest(shards_uri=uri))
                assert refused.value.code() == code and says in refused.value.details(), uri
            assert not (tmp_path / "jobs").exists() or not list((tmp_path / "jobs").iterdir()), "nothing written"

            reply = stub.SubmitShards(downloader_pb2.SubmitShardsRequest(shards_uri=str(allowed / "mine"),
                                                                         images_blurred=True))
            assert (reply.shard_count, reply.sample_count) == (2, 3)  # the tar alone declares no count
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                progress = stub.GetJob(downloader_pb2.GetJobRequest(job_id=reply.job_id))
                if progress.done:
                    break
                time.sleep(0.3)
        assert progress.done, service.log_tail()
        assert [(s.stage, s.shards_done, s.samples, s.kept) for s in progress.stages] == [("source", 2, 5, 4)]
        # the same through the command line, following the job until it is imported
        assert main(["submit", "--shards", str(allowed / "mine"), "--downloader", f"127.0.0.1:{port}",
                     "--follow"]) == 0
        assert "source 2/2 shards, 4 kept" in capsys.readouterr().out

        consumer = KafkaConsumer(output_topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                                 group_id=f"check-{unique}", consumer_timeout_ms=5000)
        refs = {ref.shard_id: ref for ref in (decode_ref(record.value) for record in consumer)
                if ref.job_id == reply.job_id}
        consumer.close()
    finally:
        service.stop()
    job_root = Path(reply.job_root)
    assert sorted(refs) == [0, 1] and {r.stage for r in refs.values()} == {"source"}
    for shard_id, ref in refs.items():
        assert ref.uri == str(job_root / "source" / f"{shard_id:08d}")
        source = image_source(ref.uri, read_table(ref.uri))
        assert source.prefix == str(allowed / "mine" / f"{shard_id:05d}") and source.blurred
    assert not list(job_root.rglob("*.tar")), "no image was copied into the job"
