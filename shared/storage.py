"""Storage through fsspec: local paths by default, ``s3://`` and anything fsspec knows.

Writers never leave a half-written file under its final name: on a local disk they write a
temporary sibling and rename it; object stores make a single PUT visible all at once, so they
write the final key directly. Completion markers are written last by the callers.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import uuid
from collections.abc import Iterator
from typing import IO

import fsspec
from fsspec.implementations.local import LocalFileSystem


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem for a URI and the path within it (credentials come from the environment)."""
    fs, path = fsspec.core.url_to_fs(uri)
    return fs, path


def join(base: str, *parts: str) -> str:
    """Join URI parts with ``/``, keeping the scheme of ``base``."""
    if "://" in base:
        scheme, rest = base.split("://", 1)
        return f"{scheme}://" + posixpath.join(rest, *parts)
    return os.path.join(base, *parts)


def is_local(uri: str) -> bool:
    return isinstance(filesystem(uri)[0], LocalFileSystem)


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    fs.invalidate_cache(path)
    return fs.exists(path)


def makedirs(uri: str) -> None:
    fs, path = filesystem(uri)
    if isinstance(fs, LocalFileSystem):
        fs.makedirs(path, exist_ok=True)


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    # Another process may have written it since this filesystem last listed the folder.
    fs.invalidate_cache(posixpath.dirname(path))
    return fs.cat_file(path)


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


@contextlib.contextmanager
def atomic_open(uri: str) -> Iterator[IO[bytes]]:
    """Open ``uri`` for binary writing; the file appears under its name only when complete."""
    fs, path = filesystem(uri)
    if isinstance(fs, LocalFileSystem):
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
        try:
            with open(tmp, "wb") as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    else:
        with fs.open(path, "wb") as handle:
            yield handle
        fs.invalidate_cache(posixpath.dirname(path))


def write_bytes(uri: str, data: bytes) -> None:
    with atomic_open(uri) as handle:
        handle.write(data)


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def put_file(local_path: str, uri: str) -> None:
    """Copy a finished local file to ``uri`` atomically."""
    fs, path = filesystem(uri)
    if isinstance(fs, LocalFileSystem):
        with open(local_path, "rb") as src, atomic_open(uri) as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
    else:
        fs.put_file(local_path, path)
        fs.invalidate_cache(posixpath.dirname(path))


def glob(pattern_uri: str) -> list[str]:
    """Matching URIs, sorted, with the scheme of the pattern."""
    fs, path = filesystem(pattern_uri)
    fs.invalidate_cache()
    found = sorted(fs.glob(path))
    return [fs.unstrip_protocol(p) if "://" in pattern_uri else p for p in found]


def remove_partial_writes(prefix: str) -> None:
    """Delete temporary files that a killed writer left beside ``prefix*`` (local disks only)."""
    fs, path = filesystem(prefix)
    if isinstance(fs, LocalFileSystem):
        for leftover in fs.glob(f"{path}*.tmp-*"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)


def remove(uri: str) -> None:
    fs, path = filesystem(uri)
    with contextlib.suppress(FileNotFoundError):
        fs.rm(path)
