"""Where the command-line tools the tests and benchmarks run are found."""

from __future__ import annotations

import shutil
from pathlib import Path

#: where scripts/setup.sh's `pip install --user uv` puts uv when none was on PATH
USER_UV = Path.home() / ".local" / "bin" / "uv"


def find_uv() -> str | None:
    """uv's path: on PATH, else where scripts/setup.sh installed it; None where there is none."""
    found = shutil.which("uv")
    if found:
        return found
    return str(USER_UV) if USER_UV.is_file() else None
