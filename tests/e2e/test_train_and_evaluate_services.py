"""Trainer and evaluator as processes over real Kafka: a subset leads to a checkpoint, which leads to results.

A resharded subset's ShardRef goes on the trainer's topic; the trainer process trains a small
CLIP on it (real openclipart images), publishes the run; the evaluator process scores it on the
local evaluation sets and publishes the results' reference. The trainer's gRPC API follows the run.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import grpc
import pytest
from kafka import KafkaConsumer, KafkaProducer

from winnow.services.evaluator.local_sets import build_local_sets
from winnow.shared.messages import decode_ref, encode_ref, make_ref, message_key
from winnow.shared.proto import training_pb2, training_pb2_grpc
from tests.e2e.processes import ServiceProcess, free_port
from tests.trainer.data import write_clipart_shards

pytestmark = [pytest.mark.slow, pytest.mark.kafka]


def test_a_subset_becomes_a_checkpoint_and_then_results(kafka_bootstrap, tmp_path, unique):
    shards = tmp_path / "subset"
    write_clipart_shards(shards, shards=2, per_shard=64)
    scale = tmp_path / "e2e_scale.json"  # the tiny scale, shortened: 256 samples in 2 checkpoints
    scale.write_text(json.dumps({"name": "e2e", "model": "winnow-tiny-ViT", "samples_seen": 256, "batch_size": 32,
                                 "learning_rate": 5e-4, "warmup": 2, "beta2": None}))
    eval_data = tmp_path / "eval-data"
    build_local_sets(str(eval_data), fashion_mnist_size=40, retrieval_size=30)
    topic = lambda stage: f"winnow.shards.{stage}.{unique}"  # noqa: E731
    base = {**os.environ, "WINNOW_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "WINNOW_METRICS_PORT": "0",
            "WINNOW_TOPIC_PARTITIONS": "1"}
    trainer_port, evaluator_port = free_port(), free_port()
    trainer = ServiceProcess("winnow.services.trainer", {
        **base, "WINNOW_INPUT_TOPIC": topic("reshard"), "WINNOW_OUTPUT_TOPIC": topic("trainer"),
        "WINNOW_CONSUMER_GROUP": f"trainer-{unique}", "WINNOW_GRPC_ADDRESS": f"127.0.0.1:{trainer_port}",
        "WINNOW_SCALE": str(scale), "WINNOW_TRAIN_OUTPUT_DIR": str(tmp_path / "runs"),
        "WINNOW_NUM_CHECKPOINTS": "2", "WINNOW_WORKERS": "1", "WINNOW_DEVICE": "cpu",
        "WINNOW_READ_ROOTS": json.dumps([str(tmp_path)])},  # the subset lies beside the runs
        tmp_path / "trainer.log", trainer_port).start()
    evaluator = ServiceProcess("winnow.services.evaluator", {
        **base, "WINNOW_INPUT_TOPIC": topic("trainer"), "WINNOW_OUTPUT_TOPIC": topic("evaluator"),
        "WINNOW_CONSUMER_GROUP": f"evaluator-{unique}", "WINNOW_GRPC_ADDRESS": f"127.0.0.1:{evaluator_port}",
        "WINNOW_EVAL_DATA_DIR": str(eval_data), "WINNOW_DEVICE": "cpu", "WINNOW_TRAIN_OUTPUT_DIR": str(tmp_path / "runs")},
        tmp_path / "evaluator.log", evaluator_port).start()
    try:
        trainer.wait_healthy()
        evaluator.wait_healthy()
        subset = make_ref(job_id=f"job{unique}", shard_id=0, stage="reshard", uri=str(shards), sample_count=128,
                          job_root=str(tmp_path), shard_count=2)
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
        producer.send(topic("reshard"), key=message_key(subset).encode(), value=encode_ref(subset)).get(timeout=30)
        producer.close()

        # The trainer's API sees the run the bus started.
        with grpc.insecure_channel(f"127.0.0.1:{trainer_port}") as channel:
            stub = training_pb2_grpc.TrainerStub(channel)
            deadline, runs = time.monotonic() + 60, []
            # queued while its sources are resolved, then running
            while not (runs and runs[0].state != "queued") and time.monotonic() < deadline:
                runs = list(stub.ListRuns(training_pb2.ListRunsRequest()).runs)
                time.sleep(0.5)
            assert runs and runs[0].state in ("running", "done"), trainer.log_tail()
            assert runs[0].samples_total >= 256

        consumer = KafkaConsumer(topic("evaluator"), bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                                 group_id=f"check-{unique}", consumer_timeout_ms=1000)
        deadline, results = time.monotonic() + 600, None
        while results is None and time.monotonic() < deadline:
            for record in consumer:
                results = decode_ref(record.value)
            for service in (trainer, evaluator):
                assert service.process.poll() is None, f"{service.module} died:\n{service.log_tail()}"
        consumer.close()
        assert results is not None, trainer.log_tail() + "\n\n" + evaluator.log_tail()

        with grpc.insecure_channel(f"127.0.0.1:{trainer_port}") as channel:
            (run,) = training_pb2_grpc.TrainerStub(channel).ListRuns(training_pb2.ListRunsRequest()).runs
        assert run.state == "done" and run.samples_seen >= 256 and Path(run.checkpoint).exists()
        summary = json.loads(Path(results.uri).read_text())
        assert Path(results.uri).parent == Path(run.run_dir)
        statuses = {t["key"]: t["status"] for t in summary["tasks"]}
        assert statuses["fashion_mnist"] == "ok" and statuses["openclipart_retrieval"] == "ok"
        assert summary["aggregate"]["of"] == 38 and summary["aggregate"]["covered"] == 0
    finally:
        trainer.stop()
        evaluator.stop()
