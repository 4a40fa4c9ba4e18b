"""`winnow up`, `winnow status`, `winnow scale` and `winnow down` as a user runs them, each its own process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from winnow.ops.devstack.processes import REPO

pytestmark = [pytest.mark.slow, pytest.mark.kafka]


def winnow(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "winnow.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "200"})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_up_status_scale_down(kafka_bootstrap, tmp_path):
    state_dir = tmp_path / "stack"
    log = open(tmp_path / "up.log", "w")
    up = subprocess.Popen([sys.executable, "-m", "winnow.cli", "up", "--state_dir", str(state_dir),
                           "--services", "safety", "blur", "--no_triton", "--no_s3", "--free_ports",
                           "--kafka", kafka_bootstrap], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while not (state_dir / "stack.json").exists():
            assert up.poll() is None, (tmp_path / "up.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "up.log").read_text()
            time.sleep(0.5)
        state = json.loads((state_dir / "stack.json").read_text())
        assert state["pid"] == up.pid and set(state["services"]) == {"safety", "blur"}

        deadline = time.monotonic() + 60
        while "0,1,2,3,4,5,6,7" not in (status := winnow("status", "--state_dir", str(state_dir))).stdout:
            assert time.monotonic() < deadline, status.stdout + status.stderr
            time.sleep(1)
        assert status.returncode == 0
        rows = [line for line in status.stdout.splitlines() if "safety-0" in line or "blur-0" in line]
        assert len(rows) == 2 and all("SERVING" in row for row in rows), status.stdout

        scaled = winnow("scale", "safety=2", "--state_dir", str(state_dir), timeout=240)
        assert scaled.returncode == 0, scaled.stdout + scaled.stderr
        deadline = time.monotonic() + 60
        while not ("0,1,2,3 " in (status := winnow("status", "--state_dir", str(state_dir))).stdout
                   and "4,5,6,7 " in status.stdout):
            assert time.monotonic() < deadline, status.stdout + status.stderr
            time.sleep(1)
        pids = [r["pid"] for rs in json.loads((state_dir / "stack.json").read_text())["services"].values() for r in rs]
        assert len(pids) == 3

        too_many = winnow("scale", "safety=9", "--state_dir", str(state_dir))
        assert too_many.returncode == 2 and "0..8" in too_many.stderr

        down = winnow("down", "--state_dir", str(state_dir), timeout=200)
        assert down.returncode == 0, down.stdout + down.stderr
        assert up.wait(timeout=30) == 0
        assert not (state_dir / "stack.json").exists()
        assert not any(_alive(pid) for pid in pids)
        assert winnow("status", "--state_dir", str(state_dir)).returncode == 2
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
            up.wait(timeout=120)
