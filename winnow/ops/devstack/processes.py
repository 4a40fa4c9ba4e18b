"""One winnow service replica as a local process: start it, wait for its health, stop or kill it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parents[3]


class ServiceStartError(RuntimeError):
    """A service process exited or never reported SERVING; the message carries its log's tail."""


def health_status(address: str, timeout: float = 1.0, service: str = "") -> str:
    """The grpc.health.v1 status of ``address`` (``SERVING``, ``NOT_SERVING``, ...) or ``UNREACHABLE``."""
    try:
        with grpc.insecure_channel(address) as channel:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    except grpc.RpcError:
        return "UNREACHABLE"


@dataclass
class ReplicaProcess:
    """``python -m <module>`` with ``env``, logging to ``log_path``; one replica of a service."""

    service: str
    replica: int
    module: str
    env: dict[str, str]
    log_path: Path
    grpc_port: int
    metrics_port: int
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return f"{self.service}-{self.replica}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> ReplicaProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            # its own session: a Ctrl-C meant for `winnow up` reaches the replicas as an orderly SIGTERM
            self.process = subprocess.Popen([sys.executable, "-m", self.module], cwd=REPO, env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "<no log>"

    def wait_healthy(self, timeout: float = 180) -> ReplicaProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise ServiceStartError(f"{self.name} exited with code {self.process.returncode}:\n{self.log_tail()}")
            if health_status(self.grpc_address) == "SERVING":
                return self
            time.sleep(0.3)
        raise ServiceStartError(f"{self.name} not SERVING after {timeout:.0f} s:\n{self.log_tail()}")

    def terminate(self) -> None:
        """Ask the replica to stop (SIGTERM) without waiting."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM (the service finishes its current shard), then SIGKILL after ``timeout``."""
        if not self.alive():
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: a crash, as an out-of-memory kill or a lost node would be."""
        if self.alive():
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
