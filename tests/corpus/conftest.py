"""The bad-input corpus's fixtures: the corpus images behind the tests' own image server
(``tests.infra.image_server``, with its failure routes), distinct real drawings for the rows
that should be kept, a port where nothing listens, and a way to run ``winnow`` and measure it."""

from __future__ import annotations

import os
import signal
import shutil
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest
from PIL import Image

from tests.corpus.images import write_corpus_images
from tests.infra.image_server import ImageServer, bomb_png_bytes, gzip_bomb_bytes
from tests.infra.images import openclipart_images, skimage_images
from tests.infra.process_memory import high_water_mark

REPO = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.0/8"


def drawings(count: int) -> list[Path]:
    """``count`` real, distinct drawings: openclipart when installed, else scikit-image's samples."""
    found = []
    for path in openclipart_images(limit=8 * count):
        with Image.open(path) as image:
            if 200 <= min(image.size) and max(image.size) <= 2000 and image.getbbox() is not None:
                found.append(path)
        if len(found) == count:
            return found
    pytest.skip(f"needs {count} distinct real drawings (Debian's openclipart-png)")


@pytest.fixture(scope="session")
def corpus_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus-www")
    write_corpus_images(root)
    for index, path in enumerate(drawings(40)):
        shutil.copyfile(path, root / f"drawing_{index:02d}.png")
    shutil.copyfile({p.name: p for p in skimage_images()}["rocket.jpg"], root / "rocket.jpg")
    return root


@pytest.fixture(scope="session")
def corpus_server(corpus_root) -> ImageServer:
    bomb_png_bytes(), gzip_bomb_bytes()  # built before any request, so no request waits for them
    with ImageServer(corpus_root) as server:
        server.preload()
        yield server


@pytest.fixture(scope="session")
def refused_url() -> str:
    """A URL on loopback where nothing listens (the port was bound once, then let go)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/image.jpg"


def unvalidated_strings(values: list[str | bytes | None]) -> pa.Array:
    """A ``string`` column holding exactly these bytes, valid UTF-8 or not, as a writer that does
    not validate (a C++ or Java job, an old Spark) leaves it in a parquet file."""
    offsets, data, valid = [0], bytearray(), []
    for value in values:
        raw = value.encode("utf-8") if isinstance(value, str) else (value or b"")
        data += raw
        offsets.append(len(data))
        valid.append(value is not None)
    validity = pa.array(valid).buffers()[1] if not all(valid) else None
    return pa.Array.from_buffers(pa.string(), len(values), [validity, pa.py_buffer(struct.pack(f"<{len(offsets)}i",
                                 *offsets)), pa.py_buffer(bytes(data))], null_count=valid.count(False))


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str
    peak_rss_bytes: int  # of the winnow process itself (its VmHWM), not of this one


def run_winnow(args: list[str], workdir: Path, timeout: float = 240) -> Finished:
    """``python -m winnow.cli ARGS`` as a user runs it, and its own peak RSS.

    The peak is the process's ``VmHWM`` (its memory's high-water mark), read while it runs: the
    ``ru_maxrss`` that ``wait4`` reports would not do, since Linux carries the parent's high-water
    mark across fork and exec, so it would report this test process's size when that is larger.
    """
    out, err = workdir / "stdout.txt", workdir / "stderr.txt"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "winnow.cli", *args], cwd=REPO, stdout=stdout,
                                   stderr=stderr, env={**os.environ, "COLUMNS": "200"})
        status, peak = _wait_measuring(process.pid, timeout)
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    return Finished(process.returncode, out.read_text(), err.read_text(), peak)




def _wait_measuring(pid: int, timeout: float) -> tuple[int, int]:
    deadline = time.monotonic() + timeout
    peak = 0
    while True:
        peak = max(peak, high_water_mark(pid))
        found, status = os.waitpid(pid, os.WNOHANG)
        if found:
            return status, peak
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise TimeoutError(f"winnow (pid {pid}) ran past {timeout} s")
        time.sleep(0.02)
