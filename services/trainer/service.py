"""The trainer as a service: training runs in child processes, followed through gRPC and the bus.

A run is ``python -m winnow.services.trainer.train`` in its own process (so a run can be cancelled, and
a service restart loses nothing: open_clip resumes the run from its latest checkpoint). Its
state is read from the run's folder: ``sources.json`` (the data sources as resolved), ``out.log``
(loss, samples seen), ``checkpoints/`` and ``info.json`` (written when it ends).

A run's data sources are any that ``winnow train`` takes (``winnow.services.trainer.sources``): shard
folders local or on object storage, winnow job folders, pool files (downloaded by the run into
its folder first), patterns. ``StartRun`` refuses, as INVALID_ARGUMENT, a source that does not
exist and weights that do not fit, before anything starts.

Over Kafka the stage consumes the filter's ShardRefs (``uri`` = a resharded subset), trains the
configured scale on it and publishes a ShardRef whose ``uri`` is the run's folder, for the
evaluator.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import structlog

from winnow.services.trainer.scales import load_scale
from winnow.services.trainer.sources import check_sources
from winnow.services.trainer.train import latest_checkpoint, plan_run, read_loss_history
from winnow.shared.access import AccessPolicy, check_identifier
from winnow.shared.messages import ShardRef, make_ref
from winnow.shared.proto import training_pb2, training_pb2_grpc
from winnow.shared.service.grpc_server import ServiceBinding
from winnow.shared.service.refusals import refusals_as_status
from winnow.shared.stage import JobStage

log = structlog.get_logger(__name__)
SERVICE_NAME = training_pb2.DESCRIPTOR.services_by_name["Trainer"].full_name


@dataclass
class Run:
    run_id: str
    scale: str
    exp_name: str
    output_dir: str
    data_dirs: list[str]
    data_weights: list[float] = field(default_factory=list)
    num_checkpoints: int = 5
    seed: int = 0
    workers: int = 2
    device: str | None = None
    allow_networks: list[str] = field(default_factory=list)  # CIDRs pool downloads may reach
    process: subprocess.Popen | None = None
    cancelled: bool = False
    start_error: str = ""

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.exp_name

    def command(self) -> list[str]:
        command = [sys.executable, "-m", "winnow.services.trainer.train", "--scale", self.scale, "--output_dir",
                   self.output_dir, "--exp_name", self.exp_name, "--num_checkpoints", str(self.num_checkpoints),
                   "--seed", str(self.seed), "--workers", str(self.workers)]
        for data_dir in self.data_dirs:
            command += ["--data_dir", data_dir]
        if self.data_weights:
            command += ["--data_weights", *[str(w) for w in self.data_weights]]
        if self.device:
            command += ["--device", self.device]
        if self.allow_networks:
            command += ["--allow_networks", *self.allow_networks]
        return command

    def sources(self) -> list[training_pb2.TrainingSource]:
        """The sources as the run resolved them, once it has (its ``sources.json``)."""
        path = self.run_dir / "sources.json"
        try:
            records = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return []
        return [training_pb2.TrainingSource(
            name=r["name"], kind=r["kind"], spec=r["spec"], location=r["location"], sample_count=r["sample_count"] or 0,
            proportion=r["proportion"] or 0.0, detail=r["detail"]) for r in records]

    def state(self) -> training_pb2.RunState:
        scale = load_scale(self.scale)
        plan = plan_run(scale, num_checkpoints=self.num_checkpoints, workers=self.workers)
        code = None if self.process is None else self.process.poll()
        if self.cancelled:
            status = "cancelled"
        elif self.start_error:
            status = "failed"
        elif self.process is None:
            status = "queued"
        elif code is None:
            status = "running"
        else:
            status = "done" if code == 0 else "failed"
        losses = read_loss_history(self.run_dir / "out.log", scale.batch_size, plan.steps_per_epoch) \
            if (self.run_dir / "out.log").exists() else []
        try:
            checkpoint = str(latest_checkpoint(self.output_dir, self.exp_name))
        except FileNotFoundError:
            checkpoint = ""
        error = ""
        if status == "failed":
            error = self.start_error or self._log_tail()
        return training_pb2.RunState(
            run_id=self.run_id, state=status, scale=self.scale, exp_name=self.exp_name, run_dir=str(self.run_dir),
            samples_seen=losses[-1].samples_seen if losses else 0, samples_total=plan.samples_seen,
            last_loss=losses[-1].loss if losses else 0.0, checkpoint=checkpoint, error=error, sources=self.sources())

    def _log_tail(self) -> str:
        path = self.run_dir.parent / f"{self.exp_name}.trainer.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def start(self) -> None:
        self.run_dir.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(self.run_dir.parent / f"{self.exp_name}.trainer.log", "ab")
        self.process = subprocess.Popen(self.command(), stdout=log_file, stderr=subprocess.STDOUT)
        log.info("run_started", run_id=self.run_id, exp_name=self.exp_name, pid=self.process.pid)

    def cancel(self) -> None:
        self.cancelled = True
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


class TrainerStage(JobStage):
    """Runs one training at a time; the bus and the gRPC API share its run table."""

    name = "trainer"
    writes_job_root = False  # it writes only under its own output folder

    def __init__(self, scale: str, output_dir: str, num_checkpoints: int = 5, workers: int = 2,
                 device: str | None = None, allow_networks: tuple[str, ...] = ()) -> None:
        load_scale(scale)  # an unknown scale fails at start, clearly
        self.scale = scale
        self.output_dir = output_dir
        self.num_checkpoints = num_checkpoints
        self.workers = workers
        self.device = device
        self.allow_networks = list(allow_networks)  # set by the operator, never by a request
        self.runs: dict[str, Run] = {}
        self._one_at_a_time = threading.Lock()

    def new_run(self, data_dirs: list[str], *, scale: str | None = None, exp_name: str = "",
                output_dir: str = "", data_weights: list[float] | None = None, num_checkpoints: int = 0,
                seed: int = 0) -> Run:
        scale = scale or self.scale
        scale_name = load_scale(scale).name
        if not data_dirs:
            raise ValueError("data_dirs is empty: give at least one data source")
        check_sources(data_dirs, list(data_weights) if data_weights else None)
        run_id = uuid.uuid4().hex[:12]
        run = Run(run_id=run_id, scale=scale, exp_name=exp_name or f"{scale_name}_{run_id}",
                  output_dir=output_dir or self.output_dir, data_dirs=list(data_dirs),
                  data_weights=list(data_weights or []), num_checkpoints=num_checkpoints or self.num_checkpoints,
                  seed=seed, workers=self.workers, device=self.device, allow_networks=self.allow_networks)
        self.runs[run_id] = run
        return run

    def execute(self, run: Run) -> training_pb2.RunState:
        """Run to the end (one at a time); the final state."""
        with self._one_at_a_time:
            if not run.cancelled:
                try:
                    run.start()
                except OSError as exc:
                    run.start_error = f"could not start the training process: {exc}"
                    log.error("run_not_started", run_id=run.run_id, error=str(exc))
                else:
                    run.process.wait()
        return run.state()

    def process(self, ref: ShardRef) -> ShardRef:
        run = self.new_run([ref.uri], exp_name=f"{ref.job_id}-{load_scale(self.scale).name}")
        state = self.execute(run)
        if state.state != "done":
            raise RuntimeError(f"training run {run.exp_name} {state.state}: {state.error[-500:]}")
        return make_ref(job_id=ref.job_id, shard_id=0, stage=self.name, uri=str(run.run_dir),
                        sample_count=state.samples_seen, job_root=ref.job_root, shard_count=1)

    def teardown(self) -> None:
        for run in self.runs.values():
            if run.process is not None and run.process.poll() is None:
                run.cancel()


class TrainerServicer(training_pb2_grpc.TrainerServicer):
    def __init__(self, stage: TrainerStage, policy: AccessPolicy | None = None) -> None:
        self.stage = stage
        # every path in a request goes through this (winnow.shared.access): no 'pipe:' unless the operator allows it
        self.policy = policy or AccessPolicy(read_roots=(stage.output_dir,), write_roots=(stage.output_dir,))

    def StartRun(self, request, context):
        with refusals_as_status(context):
            data_dirs = self.policy.read_all(request.data_dirs, "data_dirs")
            exp_name = check_identifier(request.exp_name, "exp_name") if request.exp_name else ""
            output_dir = self.policy.write(request.output_dir, "output_dir") if request.output_dir else ""
            # a named scale, or a scale file (read like any other path)
            scale = self.policy.read(request.scale, "scale") if request.scale.endswith(".json") else request.scale
        try:
            run = self.stage.new_run(data_dirs, scale=scale or None, exp_name=exp_name,
                                     output_dir=output_dir, data_weights=list(request.data_weights),
                                     num_checkpoints=request.num_checkpoints, seed=request.seed)
        except (ValueError, FileNotFoundError) as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        threading.Thread(target=self.stage.execute, args=(run,), name=f"run-{run.run_id}", daemon=True).start()
        return run.state()

    def _run(self, run_id: str, context) -> Run:
        run = self.stage.runs.get(run_id)
        if run is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no run {run_id!r}")
        return run

    def GetRun(self, request, context):
        return self._run(request.run_id, context).state()

    def ListRuns(self, request, context):
        return training_pb2.ListRunsResponse(runs=[run.state() for run in self.stage.runs.values()])

    def CancelRun(self, request, context):
        run = self._run(request.run_id, context)
        run.cancel()
        return run.state()


def bindings(stage: TrainerStage, policy: AccessPolicy | None = None):
    return lambda bus: [ServiceBinding(training_pb2_grpc.add_TrainerServicer_to_server,
                                       TrainerServicer(stage, policy), SERVICE_NAME)]
