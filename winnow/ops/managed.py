"""What every server launcher here shares: a child that dies with its starter, and a log excerpt for errors."""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path


def die_with_parent() -> None:  # runs in the child between fork and exec
    """Linux: SIGTERM the server if the process that started it dies without stopping it.

    The kernel ties this (``PR_SET_PDEATHSIG``) to the *thread* that started the server: start it
    from a thread that lives as long as the server (the main thread, a fixture), not a short-lived one.
    Elsewhere it does nothing.
    """
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def log_excerpt(path: Path, lines: int = 60, *, offset: int = 0, after: str | None = None,
                is_error: Callable[[str], bool] | None = None, max_errors: int = 20) -> str:
    """A server log for an error message: its error lines (the cause is often far above the end),
    then its last ``lines`` lines.

    Only what follows byte ``offset``, and the last ``after`` marker when given, is read; ``is_error``
    picks the error lines (none are picked without it).
    """
    try:
        with open(path, "rb") as log_file:
            log_file.seek(offset)
            text = log_file.read().decode(errors="replace")
    except OSError:
        return f"<no log at {path}>"
    if after and after in text:
        text = text[text.rindex(after):]
    all_lines = text.splitlines()
    out = f"--- last {lines} lines of {path} ---\n" + "\n".join(all_lines[-lines:])
    errors = [line for line in all_lines if is_error(line)][:max_errors] if is_error else []
    if errors:
        out = f"--- error lines in {path} ---\n" + "\n".join(errors) + "\n" + out
    return out


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def run_until_interrupted(start: Callable[[], None], running: Callable[[], bool], exited: Callable[[], str]) -> int:
    """A launcher's ``--run``: ``start()`` the server, then wait while it is ``running()``.

    Ctrl-C or SIGTERM end the wait with 0 (the caller stops the server in its ``finally``); a server
    that exits by itself ends it with 1, after printing ``exited()`` to stderr.
    """
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        start()
        while running():
            time.sleep(1)
        print(exited(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
