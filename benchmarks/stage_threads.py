"""``winnow`` as ``python -m winnow.cli`` runs it, with its threads' OS names telling the stages apart.

CPython 3.11 leaves every thread's OS name (``/proc/PID/task/TID/comm``) as the process's, so a
sampler outside the process cannot say which stage a thread's CPU time belongs to. This entry
point renames threads, and changes nothing else:

- a stage's worker threads (``winnow.shared.service.worker.ShardWorker.run``) take the stage's name
  (``safety``);
- the main thread is ``winnow-run`` while the embedded runner sets the stages up and waits on
  them, takes the stage's name while that stage's ``setup`` runs, and is ``filter`` while
  ``winnow run`` filters and reshards.

Linux gives a new thread its creator's name, so the thread pools a stage starts (the
downloader's fetch threads, onnxruntime's pools made when ``setup`` opens a session, torch's
OpenMP pool made by the first inference) count as the stage's too.

The runner's ``setup`` of each stage is also measured (wall and process CPU seconds, VmRSS
before and after: the setups run one after the other on the main thread before any worker
starts) and written as JSON lines to the file named by ``WINNOW_BENCH_SETUP_LOG``. Stages that
call their own ``setup`` again from ``process`` (it returns at once when done) are left alone.

    .venv/bin/python -m benchmarks.stage_threads run POOL --out DIR ...
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import threading
import time
from pathlib import Path

SETUP_LOG_ENV = "WINNOW_BENCH_SETUP_LOG"
RUNNER_THREAD, FILTER_THREAD = "winnow-run", "filter"
_PR_SET_NAME = 15
_libc = ctypes.CDLL(None, use_errno=True)


def name_this_thread(name: str) -> None:
    """Set the calling thread's OS name (at most 15 bytes are kept)."""
    _libc.prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def _resident_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _measured_setup(stage, log_path: str | None):
    setup = stage.setup

    def wrapped() -> None:
        if threading.current_thread() is not threading.main_thread():
            return setup()  # a stage's own call from process(): the runner's came first
        name_this_thread(stage.name)
        rss, cpu, start = _resident_bytes(), time.process_time(), time.perf_counter()
        setup()
        record = {"stage": stage.name, "wall_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu,
                  "rss_before": rss, "rss_after": _resident_bytes()}
        name_this_thread(RUNNER_THREAD)
        if log_path:
            with open(log_path, "a") as log:
                log.write(json.dumps(record) + "\n")
    return wrapped


def install() -> None:
    """Wrap the embedded runner, its workers and ``winnow run``'s filter step so that they name their threads."""
    import winnow.shared.service.embedded as embedded
    import winnow.api as api
    from winnow.shared.service.worker import ShardWorker

    run_pipeline, filter_job, worker_run = embedded.run_pipeline, api._filter_job, ShardWorker.run
    log_path = os.environ.get(SETUP_LOG_ENV)

    def named_run_pipeline(manifest, stages, **options):
        name_this_thread(RUNNER_THREAD)
        for stage in stages:
            stage.setup = _measured_setup(stage, log_path)  # an instance attribute: the runner calls it
        return run_pipeline(manifest, stages, **options)

    def named_worker_run(worker, *args, **options):
        name_this_thread(worker.stage)
        return worker_run(worker, *args, **options)

    def named_filter_job(*args, **options):
        name_this_thread(FILTER_THREAD)
        return filter_job(*args, **options)

    embedded.run_pipeline, api._filter_job, ShardWorker.run = named_run_pipeline, named_filter_job, named_worker_run


def main() -> int:
    install()
    from winnow.cli import main as winnow_main

    return winnow_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
