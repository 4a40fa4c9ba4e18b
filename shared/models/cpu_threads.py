"""How many CPU threads one in-process model call may use: torch's intra-op pool and onnxruntime's.

Each library sizes its pool to every core by default. That suits one caller; ``winnow run`` has
many at once (each curation stage's workers call their models side by side), and on a small
machine their pools then outnumber the cores several times over: on 2 CPUs that cost 21 % more
CPU per row and 13 % more time (``benchmarks/results/pipeline-model-threads-1k-*.txt``).
``limit_model_threads`` caps both for a run: torch's process-wide setting, and every onnxruntime
session made meanwhile (``onnx_session_options``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

_threads: int | None = None  # None: each library's own default


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, which a container's cpuset narrows)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_model_threads(model_callers: int, cpus: int | None = None) -> int | None:
    """1 when ``model_callers`` (models called at once) already fill ``cpus``, else None (the
    libraries' defaults): a pool per caller could only add threads waiting for a core."""
    cpus = usable_cpus() if cpus is None else cpus
    return 1 if model_callers >= cpus else None


def model_threads() -> int | None:
    """The cap in force (None: none)."""
    return _threads


@contextlib.contextmanager
def limit_model_threads(threads: int | None) -> Iterator[None]:
    """Within the block, in-process models use at most ``threads`` CPU threads per call (None: no cap).

    torch's setting is process-wide: it is restored when the block ends. onnxruntime sessions
    keep the cap they were made with.
    """
    global _threads
    if threads is None:
        yield
        return
    if threads < 1:
        raise ValueError(f"model threads must be >= 1, got {threads}")
    import torch

    before = (_threads, torch.get_num_threads())
    _threads = threads
    torch.set_num_threads(threads)
    log.info("model calls use at most %d CPU thread(s) each", threads)
    try:
        yield
    finally:
        _threads = before[0]
        torch.set_num_threads(before[1])


def onnx_session_options(ort: Any, intra_op_num_threads: int | None = None) -> Any:
    """An ``onnxruntime.SessionOptions`` with ``intra_op_num_threads`` (else the cap in force, if any)."""
    options = ort.SessionOptions()
    threads = intra_op_num_threads if intra_op_num_threads is not None else _threads
    if threads is not None:
        options.intra_op_num_threads = threads
    return options


def session_threads(session: Any) -> str:
    """The CPU threads an onnxruntime session uses per call, for its load log line."""
    threads = session.get_session_options().intra_op_num_threads
    return f"{threads} CPU thread(s) per call" if threads else "onnxruntime's default CPU threads per call"
