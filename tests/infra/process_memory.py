"""A running process's own peak memory, for tests and benchmarks that measure a child process."""

from __future__ import annotations

from pathlib import Path


def high_water_mark(pid: int) -> int:
    """Peak resident bytes of ``pid`` so far (``VmHWM``); 0 once it has exited (a zombie has no
    memory to report). Read while the child runs: ``wait4``'s ``ru_maxrss`` carries the parent's
    high-water mark across fork and exec."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0
