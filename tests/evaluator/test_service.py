"""The evaluator service: gRPC Evaluate and the bus worker on a training run with a real (tiny) CLIP."""

from __future__ import annotations

import json
import shutil
import threading
import time

import grpc
import pytest

from winnow.services.evaluator.local_sets import build_local_sets
from winnow.services.evaluator.service import EvaluatorStage, bindings
from winnow.shared.bus import InProcessBus
from winnow.shared.config import ServiceSettings
from winnow.shared.messages import decode_ref, encode_ref, make_ref, message_key
from winnow.shared.proto import training_pb2, training_pb2_grpc
from winnow.shared.service.runner import StageService


@pytest.fixture(scope="module")
def eval_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-data")
    build_local_sets(str(root), fashion_mnist_size=40, retrieval_size=30)
    return str(root)


@pytest.fixture
def run_dir(tmp_path, tiny_clip_checkpoint):
    """A training run's folder as the trainer leaves it: checkpoints and info.json."""
    run = tmp_path / "runs" / "tiny-exp"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(tiny_clip_checkpoint, run / "checkpoints" / "epoch_1.pt")
    (run / "info.json").write_text(json.dumps({"model": "winnow-tiny-ViT"}))
    return run


def test_grpc_evaluate_and_the_bus_worker(eval_data, run_dir):
    stage = EvaluatorStage(eval_data, tasks=["local"], device="cpu")
    bus = InProcessBus()
    settings = ServiceSettings(service_name="evaluator", grpc_address="127.0.0.1:0", metrics_port=0,
                               input_topic="trainer-out", output_topic="evaluator-out",
                               write_roots=(str(run_dir.parent),))
    service = StageService(stage, settings, bindings(stage, settings.access_policy()), bus=bus)
    service.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            stub = training_pb2_grpc.EvaluatorStub(channel)
            reply = stub.Evaluate(training_pb2.EvaluateRequest(train_output_dir=str(run_dir)))
            statuses = {t.task: t.status for t in reply.tasks}
            assert statuses == {"fashion_mnist": "ok", "openclipart_retrieval": "ok"}
            assert reply.tasks_covered == 0, "the local sets are reported beside DataComp's 38, not in them"
            summary = json.loads(reply.json)
            assert summary["aggregate"]["of"] == 38
            assert all(0.0 <= score <= 1.0 for score in summary["aggregate"]["extra"].values())
            assert len(summary["aggregate"]["extra"]) == 2
            stored = stub.GetResults(training_pb2.GetResultsRequest(train_output_dir=str(run_dir)))
            assert {t.task: t.value for t in stored.tasks} == {t.task: t.value for t in reply.tasks}
            with pytest.raises(grpc.RpcError) as no_results:
                stub.GetResults(training_pb2.GetResultsRequest(train_output_dir=str(run_dir.parent)))
            assert no_results.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.RpcError) as missing:
                stub.Evaluate(training_pb2.EvaluateRequest(train_output_dir=str(run_dir.parent / "nope")))
            assert missing.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)

        ref = make_ref(job_id="job", shard_id=0, stage="trainer", uri=str(run_dir), sample_count=0,
                       job_root=str(run_dir.parent), shard_count=1)
        bus.send("trainer-out", message_key(ref), encode_ref(ref))
        consumer = bus.consumer(["evaluator-out"], "check")
        deadline, messages = time.monotonic() + 120, []
        while not messages and time.monotonic() < deadline:
            messages = consumer.poll(timeout=0.5)
        assert messages, "the worker published the results"
        out = decode_ref(messages[0].value)
        assert out.stage == "evaluator" and out.uri.endswith("eval_summary.json")
        assert (run_dir / "eval_summary.json").exists() and (run_dir / "eval_results_local.jsonl").exists()
    finally:
        threading.Thread(target=service.stop, daemon=True).start()
