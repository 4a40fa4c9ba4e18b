"""Starting winnow services as real processes for end-to-end tests, and waiting for their health."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from winnow.ops.devstack.processes import health_status
from winnow.shared.ports import free_port  # noqa: F401 - re-exported for the tests

REPO = Path(__file__).resolve().parents[2]


@dataclass
class ServiceProcess:
    module: str
    env: dict[str, str]
    log_path: Path
    port: int
    process: subprocess.Popen | None = None

    def start(self) -> ServiceProcess:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen([sys.executable, "-m", self.module], cwd=REPO, env=self.env, stdout=log,
                                        stderr=subprocess.STDOUT)
        return self

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def wait_healthy(self, timeout: float = 120) -> ServiceProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"{self.module} exited early:\n{self.log_tail()}"
            if health_status(f"127.0.0.1:{self.port}") == "SERVING":
                return self
            time.sleep(0.2)
        raise AssertionError(f"{self.module} never became healthy:\n{self.log_tail()}")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
