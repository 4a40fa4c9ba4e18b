"""The whole topology as local processes: what ``winnow up`` runs.

Kafka, the S3 store and Triton start first; then every service of ``winnow/ops/topology.py`` starts
as ``python -m <module>`` with the environment :func:`winnow.ops.topology.service_env` gives it — the
same environment docker-compose and Kubernetes give the containers — except that the addresses
point at loopback and the state paths at ``state_dir``. The stack writes ``state_dir/stack.json``
(addresses, replicas, pids) for ``winnow status``, ``winnow scale`` and ``winnow down``.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from winnow.ops import topology
from winnow.ops.devstack.processes import ReplicaProcess, ServiceStartError
from winnow.shared.ports import free_ports
from winnow.ops.topology import STATE_ROOT, Endpoints, Service

log = structlog.get_logger(__name__)

STATE_FILE = "stack.json"
#: Replica ``i`` of a service listens on its topology ports plus ``i * REPLICA_PORT_STEP``.
REPLICA_PORT_STEP = 100
DEV_ACCESS_KEY = "winnow-dev"
DEV_SECRET_KEY = "winnow-dev-secret"
#: A replica that dies within this many seconds of its start is crash-looping: back off.
CRASH_LOOP_WINDOW_S = 30.0
RESTART_BACKOFF_CAP_S = 30.0
#: What a replica's log says when a port it was given was taken before it could bind it.
PORT_IN_USE = ("Address already in use", "EADDRINUSE", "Failed to bind")


@dataclass
class StackOptions:
    """What ``winnow up`` starts and how."""

    state_dir: Path
    services: tuple[str, ...] = topology.PIPELINE
    replicas: dict[str, int] = field(default_factory=dict)
    triton: bool = True  # serve the models on Triton; False: each service loads them in-process
    s3: bool = True  # jobs in the S3 store; False: under state_dir/runs
    free_ports: bool = False  # topology ports by default; free ones for tests and side-by-side stacks
    model_preset: str = "offline"
    clip_models: tuple[str, ...] = ()  # KEY=ARCH[:CHECKPOINT] for embed (and Triton)
    extra_env: dict[str, dict[str, str]] = field(default_factory=dict)  # per service, over the topology's
    startup_timeout: float = 300
    kafka_bootstrap: str = ""  # use this running Kafka (topics are created there) instead of starting one

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir).resolve()
        for name, count in self.replicas.items():
            svc = topology.service(name)
            if not 0 <= count <= svc.max_replicas:
                raise ValueError(f"{name}: {count} replicas; the topology allows 0..{svc.max_replicas}")
        for name in self.services:
            topology.service(name)


@dataclass
class ExternalKafka:
    """A Kafka the stack uses but does not own."""

    bootstrap_servers: str

    def stop(self) -> None:
        pass


class Stack:
    """Platform servers plus service replicas, started and stopped together."""

    def __init__(self, options: StackOptions, *, on_event: Callable[[str], None] = lambda message: None) -> None:
        self.options = options
        self.on_event = on_event
        self.kafka = self.s3 = self.triton = None
        self.endpoints: Endpoints | None = None
        self.replicas: dict[str, list[ReplicaProcess]] = {name: [] for name in options.services}
        self._credentials: dict[str, str] = {}
        self.restarts = 0  # replicas restarted by replace_dead
        self._ports_given: set[int] = set()  # with free_ports: every port handed to a replica
        self._supervisors: list[threading.Event] = []  # stop events of supervise() threads
        self._lifecycle = threading.Lock()  # replace_dead against stop
        self._stopping = False
        self._crash_loops: dict[str, tuple[int, float]] = {}  # replica -> (crashes in a row, next restart at)
        self._started_at: dict[str, float] = {}

    # -- platform ------------------------------------------------------------------------------

    def start(self) -> Stack:
        """Start the platform, create the topics, start every service and wait until all are SERVING."""
        try:
            self.options.state_dir.mkdir(parents=True, exist_ok=True)
            self._start_kafka()
            self._start_s3()
            self._start_triton()
            self.endpoints = Endpoints(
                kafka_bootstrap=self.kafka.bootstrap_servers,
                triton_grpc=self.triton.grpc_url if self.triton else "",
                s3_endpoint=self.s3.endpoint_url if self.s3 else "",
                job_root=f"s3://{topology.BUCKET}/runs" if self.s3 else str(self.options.state_dir / "runs"),
                host="127.0.0.1")
            for name in self.options.services:
                self.scale(name, self.options.replicas.get(name, 1), wait=False, write=False)
            for name, replicas in self.replicas.items():
                for index in range(len(replicas)):
                    self._wait_healthy(name, index)
            self.write_state()  # only now: `winnow status` and friends see a stack that is up
            return self
        except BaseException:
            self.stop()
            raise

    def _port(self, default: int) -> int | None:
        return None if self.options.free_ports else default

    def _start_kafka(self) -> None:
        from winnow.shared.bus.kafka import KafkaBus
        from winnow.ops.devstack.kafka import KafkaBroker

        if self.options.kafka_bootstrap:
            self.kafka = ExternalKafka(self.options.kafka_bootstrap)
        else:
            self.kafka = KafkaBroker(self.options.state_dir / "kafka", port=self._port(9092))
            self.kafka.start()
        bus = KafkaBus(self.kafka.bootstrap_servers, client_id="winnow-up",
                       default_partitions=topology.TOPIC_PARTITIONS)
        try:
            bus.ensure_topics(topology.topics())
        finally:
            bus.close()
        self.on_event(f"kafka on {self.kafka.bootstrap_servers}, {len(topology.topics())} topics "
                      f"x {topology.TOPIC_PARTITIONS} partitions")

    def _start_s3(self) -> None:
        if not self.options.s3:
            return
        from winnow.ops.devstack.s3 import S3Server

        self._credentials = {"AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", DEV_ACCESS_KEY),
                             "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", DEV_SECRET_KEY)}
        self.s3 = S3Server(self.options.state_dir / "s3", access_key=self._credentials["AWS_ACCESS_KEY_ID"],
                           secret_key=self._credentials["AWS_SECRET_ACCESS_KEY"], s3_port=self._port(8333),
                           keep_data=True, memory_limit_mb=None)
        self.s3.start()
        self.s3.make_bucket(topology.BUCKET)
        self.on_event(f"s3 on {self.s3.endpoint_url}, bucket {topology.BUCKET}")

    def _start_triton(self) -> None:
        if not self.options.triton or not any(topology.service(n).uses_triton for n in self.options.services):
            return
        from winnow.ops.models_cli import repository_specs
        from winnow.ops.triton.repository import write_model_repository
        from winnow.ops.triton.server import TritonServer

        repository = self.options.state_dir / "model_repository"
        specs = repository_specs(self.options.model_preset, list(self.options.clip_models))
        write_model_repository(repository, specs)
        ports = topology.platform("triton").ports
        self.triton = TritonServer(repository, self.options.state_dir / "triton",
                                   ports=None if self.options.free_ports else (ports["grpc"], ports["http"], ports["metrics"]))
        self.triton.start(timeout=self.options.startup_timeout)
        self.on_event(f"triton on {self.triton.grpc_url} serving {len(specs)} models")

    # -- services ------------------------------------------------------------------------------

    def all_replicas(self) -> list[ReplicaProcess]:
        return [replica for replicas in self.replicas.values() for replica in replicas]

    def service_environment(self, svc: Service, grpc_port: int, metrics_port: int) -> dict[str, str]:
        """The topology's environment for ``svc``, pointed at this stack."""
        env = topology.service_env(svc, self.endpoints)
        env["WINNOW_GRPC_ADDRESS"] = f"127.0.0.1:{grpc_port}"
        env["WINNOW_METRICS_PORT"] = str(metrics_port)
        env["WINNOW_MODEL_PRESET"] = self.options.model_preset
        if svc.name == "embed" and self.options.clip_models:
            from winnow.shared.models.clip import parse_clip_model

            models = {key: {"arch": arch, "pretrained": pretrained or "", "triton_model": f"clip_{key}"}
                      for key, arch, pretrained in map(parse_clip_model, self.options.clip_models)}
            env["WINNOW_CLIP_MODELS"] = json.dumps(models)
        if svc.name == "filter" and self.options.clip_models:
            env["WINNOW_ARCH"] = self.options.clip_models[0].partition("=")[0]
        for key, value in list(env.items()):
            if STATE_ROOT in value:  # a volume in a container; a folder here (also inside the roots' lists)
                env[key] = value.replace(STATE_ROOT, str(self.options.state_dir / "data"))
        env.update(self.options.extra_env.get(svc.name, {}))
        return {**os.environ, **self._credentials, **env}

    def _wait_healthy(self, name: str, index: int, port_races: int = 3) -> None:
        """Wait for replica ``index`` of ``name``; with free ports, a port taken meanwhile by another
        process is not fatal: the replica starts again on new ports."""
        for attempt in range(port_races + 1):
            replica = self.replicas[name][index]
            try:
                replica.wait_healthy(self.options.startup_timeout)
                break
            except ServiceStartError:
                lost_race = self.options.free_ports and any(m in replica.log_tail() for m in PORT_IN_USE)
                if not lost_race or attempt == port_races:
                    raise
                log.warning("replica_port_taken_retrying", replica=replica.name, attempt=attempt + 1)
                self.replicas[name][index] = self._new_replica(name, index).start()
        self.on_event(f"{replica.name} SERVING on {replica.grpc_address}")

    def _new_replica(self, name: str, index: int) -> ReplicaProcess:
        svc = topology.service(name)
        if self.options.free_ports:
            grpc_port, metrics_port = self._fresh_ports(2)
        else:
            grpc_port = svc.grpc_port + index * REPLICA_PORT_STEP
            metrics_port = svc.metrics_port + index * REPLICA_PORT_STEP
        return ReplicaProcess(name, index, svc.module, self.service_environment(svc, grpc_port, metrics_port),
                              self.options.state_dir / "logs" / f"{name}-{index}.log", grpc_port, metrics_port)

    def _fresh_ports(self, count: int) -> list[int]:
        """Free ports that no replica of this stack was given before: replicas starting together
        would otherwise be handed the same port (it is free until the first of them binds it), and
        the health check of one would be answered by the other."""
        for _ in range(50):
            ports = free_ports(count)
            if not self._ports_given.intersection(ports):
                self._ports_given.update(ports)
                return ports
        raise RuntimeError("no free ports left that this stack has not handed out")

    def scale(self, name: str, count: int, *, wait: bool = True, write: bool = True) -> None:
        """Run ``count`` replicas of service ``name``: start new ones, or SIGTERM the newest."""
        svc = topology.service(name)
        if not 0 <= count <= svc.max_replicas:
            raise ValueError(f"{name}: {count} replicas; the topology allows 0..{svc.max_replicas}")
        replicas = self.replicas.setdefault(name, [])
        while len(replicas) > count:
            replica = replicas.pop()
            replica.stop()
            self.on_event(f"{replica.name} stopped")
        started = []
        while len(replicas) < count:
            started.append(len(replicas))
            replicas.append(self._new_replica(name, len(replicas)).start())
        if wait:
            for index in started:
                self._wait_healthy(name, index)
        if write:
            self.write_state()

    def replace_dead(self) -> list[str]:
        """Restart replicas that exited, as a Deployment's controller does: at once the first time,
        then with a doubling back-off (up to ``RESTART_BACKOFF_CAP_S``) while a replica keeps dying
        soon after its start, like Kubernetes' CrashLoopBackOff. Returns the restarted names."""
        restarted, now = [], time.monotonic()
        with self._lifecycle:
            if self._stopping:
                return []
            self._restart_dead(restarted, now)
            if restarted:
                self.write_state()
        return restarted

    def _restart_dead(self, restarted: list[str], now: float) -> None:
        for name, replicas in self.replicas.items():
            for index, replica in enumerate(replicas):
                if replica.process is None or replica.alive():
                    continue
                crashes, not_before = self._crash_loops.get(replica.name, (0, 0.0))
                if now < not_before:
                    continue
                started = self._started_at.get(replica.name, 0.0)
                crashes = crashes + 1 if now - started < CRASH_LOOP_WINDOW_S else 1
                fresh = ReplicaProcess(replica.service, replica.replica, replica.module, replica.env,
                                       replica.log_path, replica.grpc_port, replica.metrics_port)
                replicas[index] = fresh.start()
                self._started_at[replica.name] = now
                self._crash_loops[replica.name] = (crashes, now + min(2.0 ** (crashes - 1), RESTART_BACKOFF_CAP_S))
                self.restarts += 1
                restarted.append(replica.name)
                log.info("replica_restarted", replica=replica.name, exit_code=replica.process.returncode,
                         crashes_in_a_row=crashes)

    def supervise(self, interval_s: float = 0.5) -> threading.Event:
        """Run ``replace_dead`` in a background thread until the returned event is set (``stop``
        sets it too, so a stack that is stopping is not brought back)."""
        stop = threading.Event()
        self._supervisors.append(stop)

        def loop() -> None:
            while not stop.wait(interval_s):
                try:
                    self.replace_dead()
                except Exception:  # noqa: BLE001 - a supervisor outlives what it supervises
                    log.exception("supervisor_error")

        threading.Thread(target=loop, name="stack-supervisor", daemon=True).start()
        return stop

    # -- state ---------------------------------------------------------------------------------

    def state(self) -> dict:
        return {
            "pid": os.getpid(),
            "state_dir": str(self.options.state_dir),
            "kafka_bootstrap": self.kafka.bootstrap_servers if self.kafka else "",
            "s3_endpoint": self.s3.endpoint_url if self.s3 else "",
            "triton_grpc": self.triton.grpc_url if self.triton else "",
            "triton_metrics": self.triton.metrics_url if self.triton else "",
            "job_root": self.endpoints.job_root if self.endpoints else "",
            "services": {name: [{"replica": r.replica, "pid": r.pid, "grpc": r.grpc_address,
                                 "metrics": f"http://127.0.0.1:{r.metrics_port}/metrics", "log": str(r.log_path)}
                                for r in replicas] for name, replicas in self.replicas.items()},
        }

    def write_state(self) -> None:
        path = self.options.state_dir / STATE_FILE
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.state(), indent=2))
        temporary.replace(path)

    def stop(self) -> None:
        """Services first (each finishes its shard), then Triton, S3 and Kafka."""
        for supervisor in self._supervisors:
            supervisor.set()
        with self._lifecycle:  # a restart under way finishes first; none starts after this
            self._stopping = True
        replicas = self.all_replicas()
        for replica in replicas:
            replica.terminate()
        for replica in replicas:
            replica.stop()
        for server in (self.triton, self.s3, self.kafka):
            if server is not None:
                with contextlib.suppress(Exception):
                    server.stop()
        with contextlib.suppress(FileNotFoundError):
            (self.options.state_dir / STATE_FILE).unlink()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def read_state(state_dir: Path) -> dict:
    """The state a running ``winnow up`` wrote; a clear error when none is running there."""
    path = Path(state_dir) / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no running stack: {path} does not exist (start one with `winnow up`)")
    return json.loads(path.read_text())
