"""The evaluator as a service: a stage that scores a training run, and its gRPC API.

Over Kafka it consumes the trainer's ShardRefs (``uri`` = the run's folder), evaluates the run's
final checkpoint on every task whose data is under ``data_dir``, writes the results beside the
run (``eval_results.jsonl``, ``eval_summary.json``; a rerun resumes) and publishes a ShardRef whose
``uri`` is the summary. Over gRPC, ``Evaluate`` does the same on request.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import grpc

from winnow.services.evaluator.run import SUMMARY_FILE, evaluate_run
from winnow.shared import storage
from winnow.shared.access import AccessPolicy, check_identifier
from winnow.shared.messages import ShardRef, make_ref
from winnow.shared.proto import training_pb2, training_pb2_grpc
from winnow.shared.service.grpc_server import ServiceBinding
from winnow.shared.service.refusals import refusals_as_status
from winnow.shared.stage import JobStage

SERVICE_NAME = training_pb2.DESCRIPTOR.services_by_name["Evaluator"].full_name


class EvaluatorStage(JobStage):
    name = "evaluator"
    message_uri_access = "write"  # the results go beside the run a message names
    writes_job_root = False

    def __init__(self, data_dir: str, tasks: list[str] | None = None, device: str | None = None,
                 batch_size: int = 64) -> None:
        self.data_dir = data_dir
        self.tasks = tasks
        self.device = device
        self.batch_size = batch_size
        self._lock = threading.Lock()  # one evaluation at a time: it uses every core

    def evaluate(self, train_output_dir: str, *, model: str | None = None, checkpoint: str | None = None,
                 tasks: list[str] | None = None):
        with self._lock:
            results, _ = evaluate_run(train_output_dir, data_dir=self.data_dir, tasks=tasks or self.tasks, model=model,
                                      checkpoint=checkpoint, batch_size=self.batch_size, device=self.device)
        return results

    def process(self, ref: ShardRef) -> ShardRef:
        results = self.evaluate(ref.uri)
        return make_ref(job_id=ref.job_id, shard_id=0, stage=self.name, uri=storage.join(ref.uri, SUMMARY_FILE),
                        sample_count=results.aggregate.covered, job_root=ref.job_root, shard_count=1)


def results_message(results) -> training_pb2.EvaluationResults:
    return summary_message(results.to_dict())


def summary_message(summary: dict) -> training_pb2.EvaluationResults:
    """The API's view of a results summary (``Results.to_dict()``, as ``eval_summary.json`` holds)."""
    aggregate = summary["aggregate"]
    return training_pb2.EvaluationResults(
        tasks=[training_pb2.TaskResult(task=t["key"], status=t["status"], metric=t["main_metric"] or "",
                                       value=t["score"] if t["score"] is not None else 0.0, error=t["error"])
               for t in summary["tasks"]],
        average=aggregate["average"] or 0.0, tasks_covered=aggregate["covered"],
        group_means={g["key"]: g["score"] for g in aggregate["groups"] if g["score"] is not None},
        json=json.dumps(summary))


class EvaluatorServicer(training_pb2_grpc.EvaluatorServicer):
    def __init__(self, stage: EvaluatorStage, policy: AccessPolicy) -> None:
        self.stage = stage
        self.policy = policy  # every path in a request goes through it (winnow.shared.access)

    def Evaluate(self, request, context):
        if not request.train_output_dir and not request.checkpoint:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "train_output_dir or checkpoint is required")
        with refusals_as_status(context):
            checkpoint = self.policy.read(request.checkpoint, "checkpoint") if request.checkpoint else None
            # an architecture name: open_clip would also take 'hf-hub:' or 'local-dir:' locations
            model = check_identifier(request.model, "model") if request.model else None
            # the results are written into the run's folder
            run_dir = self.policy.write(request.train_output_dir or str(Path(checkpoint).parent), "train_output_dir")
        try:
            results = self.stage.evaluate(run_dir, model=model,
                                          checkpoint=checkpoint, tasks=list(request.tasks) or None)
        except FileNotFoundError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except ValueError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return results_message(results)


    def GetResults(self, request, context):
        if not request.train_output_dir:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "train_output_dir is required")
        with refusals_as_status(context):
            path = Path(self.policy.read(request.train_output_dir, "train_output_dir")) / SUMMARY_FILE
        if not path.is_file():
            context.abort(grpc.StatusCode.NOT_FOUND, f"no results at {path}: evaluate the run first")
        return summary_message(json.loads(path.read_text()))


def bindings(stage: EvaluatorStage, policy: AccessPolicy):
    return lambda bus: [ServiceBinding(training_pb2_grpc.add_EvaluatorServicer_to_server,
                                       EvaluatorServicer(stage, policy), SERVICE_NAME)]
