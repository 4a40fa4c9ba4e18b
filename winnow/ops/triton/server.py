"""Run NVIDIA Triton Inference Server without a container: the binary bundled in the PyPI wheel.

The ``nvidia-pytriton`` wheel ships a complete ``tritonserver`` (with its shared libraries in
``nvidia_pytriton.libs``), the python backend and one python-backend stub per Python version. The
wheel itself pins ``numpy<2``, so it is never installed into winnow's environment: on first use it
is downloaded with ``pip download --no-deps`` and unpacked into a cache, and only its files are
used. The models' own imports come from winnow's environment.

How the server is made to run here (each point is a failure otherwise):

* ``LD_LIBRARY_PATH`` holds this interpreter's ``lib`` directory, so the stub loads the
  ``libpython3.x`` that matches this interpreter rather than a system one, and the wheel's
  ``nvidia_pytriton.libs``.
* The stub embeds Python in isolated mode: it ignores ``PYTHONPATH`` and finds its ``sys.prefix``
  from the first ``python3`` on ``PATH``. So ``PATH`` starts with this interpreter's ``bin``
  directory (a virtual environment's site-packages, ``.pth`` files included, are then on
  ``sys.path``), and the generated ``model.py`` adds ``PYTHONPATH``'s entries itself.
* The backend directory is assembled per server in its work directory: the wheel's
  ``libtriton_python.so`` and ``triton_python_backend_utils.py`` next to the stub built for this
  Python version (the wheel keeps the stubs apart, one per version).
* Each server gets its own shared-memory prefix, so servers side by side never share regions, and
  leftovers are removed when it stops.

Environment:
    WINNOW_TRITON_HOME   an unpacked ``nvidia-pytriton`` wheel (or the site-packages it is
                         installed in) to use instead of the cache
    WINNOW_TRITON_CACHE  base cache directory (default ``~/.cache/winnow``)

Command line::

    python -m winnow.ops.triton.server --fetch          # download and unpack into the cache
    python -m winnow.ops.triton.server --run REPO       # serve a model repository until Ctrl-C
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.util
import os
import platform
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog
from winnow.shared.ports import free_ports
from winnow.ops.managed import die_with_parent, log_excerpt, run_until_interrupted

log = structlog.get_logger(__name__)

WHEEL = "nvidia-pytriton"
WHEEL_VERSION = "0.7.0"  # bundles Triton 2.51.0 (release 24.10)
_SUPPORTED_MACHINES = ("x86_64", "aarch64")
_PORT_IN_USE = ("already in use", "Address already in use", "Failed to bind")
# what the server logs as errors on a machine without a GPU, harmlessly
_CPU_ONLY_NOISE = ("CudaDriverHelper", "NVML", "DCGM")
# the directory holding the `shared` package: models' factories import from the same checkout
_PROJECT_ROOT = Path(__file__).resolve().parents[3]


class TritonServerError(RuntimeError):
    """The Triton server could not be fetched, found or started."""


class TritonServerUnsupported(TritonServerError):
    """No Triton binary exists for this platform or Python version."""


@dataclass(frozen=True)
class TritonInstall:
    """An unpacked ``nvidia-pytriton`` wheel: the directory holding ``pytriton/`` and ``nvidia_pytriton.libs/``."""

    root: Path

    @property
    def server_dir(self) -> Path:
        return self.root / "pytriton" / "tritonserver"

    @property
    def binary(self) -> Path:
        return self.server_dir / "bin" / "tritonserver"

    @property
    def libs_dir(self) -> Path:
        return self.root / "nvidia_pytriton.libs"

    @property
    def python_backend_dir(self) -> Path:
        return self.server_dir / "backends" / "python"

    @property
    def caches_dir(self) -> Path:
        return self.server_dir / "caches"

    def stub(self, python_version: str | None = None) -> Path:
        """The python-backend stub built for ``python_version`` (default: this interpreter's)."""
        version = python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
        return self.server_dir / "python_backend_stubs" / version / "triton_python_backend_stub"

    def check(self) -> None:
        for path in (self.binary, self.python_backend_dir / "libtriton_python.so", self.libs_dir):
            if not path.exists():
                raise TritonServerError(f"{self.root} is not an unpacked {WHEEL} wheel: {path} is missing")
        if not self.stub().is_file():
            stubs = self.stub().parent.parent
            have = sorted(p.name for p in stubs.iterdir()) if stubs.is_dir() else []
            raise TritonServerUnsupported(
                f"{WHEEL} {WHEEL_VERSION} has no python-backend stub for Python "
                f"{sys.version_info.major}.{sys.version_info.minor} (it has: {', '.join(have)})"
            )


def default_cache_dir() -> Path:
    base = Path(os.environ.get("WINNOW_TRITON_CACHE") or Path.home() / ".cache" / "winnow")
    return base / f"triton-{WHEEL_VERSION}"


def find_tritonserver(*, fetch: bool = True) -> TritonInstall:
    """The Triton installation to run: ``WINNOW_TRITON_HOME``, else the cache, fetched if missing.

    Raises :class:`TritonServerUnsupported` where no binary can exist (not Linux x86_64/aarch64),
    :class:`TritonServerError` when it cannot be fetched or is incomplete.
    """
    if sys.platform != "linux" or platform.machine() not in _SUPPORTED_MACHINES:
        raise TritonServerUnsupported(
            f"the {WHEEL} wheel ships tritonserver for Linux {'/'.join(_SUPPORTED_MACHINES)} only, "
            f"not {sys.platform} {platform.machine()}"
        )
    home = os.environ.get("WINNOW_TRITON_HOME")
    if home:
        install = TritonInstall(Path(home))
        install.check()
        return install
    install = TritonInstall(default_cache_dir())
    if not _is_unpacked(install):
        if not fetch:
            raise TritonServerError(
                f"Triton is not in the cache {install.root}; run: python -m winnow.ops.triton.server --fetch"
            )
        _fetch_into(install.root)
    install.check()
    return install


_MARKER = ".winnow-unpacked"


def _is_unpacked(install: TritonInstall) -> bool:
    return (install.root / _MARKER).is_file() and install.binary.is_file()


def _pip_command() -> list[str]:
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    for name in ("pip3", "pip"):
        found = shutil.which(name)
        if found:
            return [found]
    raise TritonServerError(f"pip is needed to download {WHEEL} (no pip module in {sys.executable}, none on PATH)")


def _fetch_into(root: Path) -> None:
    """Download the wheel with pip and unpack it into ``root`` (file lock + atomic rename)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _is_unpacked(TritonInstall(root)):
            return
        staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
        try:
            download = staging / "download"
            cmd = [*_pip_command(), "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
                   f"{WHEEL}=={WHEEL_VERSION}", "-d", str(download)]
            log.info("triton_fetching", command=" ".join(cmd))
            started = time.monotonic()
            res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1800)
            wheels = sorted(download.glob("*.whl"))
            if res.returncode != 0 or not wheels:
                raise TritonServerError(f"pip download {WHEEL}=={WHEEL_VERSION} failed (rc={res.returncode}):\n"
                                        + res.stdout[-4000:])
            unpacked = staging / "unpacked"
            _unzip_with_modes(wheels[0], unpacked)
            (unpacked / _MARKER).write_text(f"{wheels[0].name}\n")
            if root.exists():
                shutil.rmtree(root)
            unpacked.rename(root)
            log.info("triton_fetched", root=str(root), wheel=wheels[0].name,
                     seconds=round(time.monotonic() - started, 1))
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _unzip_with_modes(wheel: Path, dest: Path) -> None:
    """Unpack keeping the executable bits, which ``ZipFile.extractall`` drops."""
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            target = dest / info.filename
            if not target.resolve().is_relative_to(dest.resolve()):
                raise TritonServerError(f"{wheel.name}: member {info.filename!r} escapes the target directory")
            archive.extract(info, dest)
            mode = (info.external_attr >> 16) & 0o777
            if mode and not info.is_dir():
                os.chmod(target, (mode | stat.S_IRUSR) & ~0o022)  # the wheel marks some files world-writable


def _python_lib_dir() -> Path | None:
    """The directory holding this interpreter's ``libpython3.x.so`` (None for a static build)."""
    libdir = sysconfig.get_config_var("LIBDIR")
    library = sysconfig.get_config_var("INSTSONAME") or sysconfig.get_config_var("LDLIBRARY")
    if libdir and library and (Path(libdir) / library).exists():
        return Path(libdir)
    return None


def _is_error_line(line: str) -> bool:
    return (line.startswith("E") or "error" in line.lower()) and not any(n in line for n in _CPU_ONLY_NOISE)


class TritonServer:
    """One ``tritonserver`` process on 127.0.0.1 serving ``model_repository``.

    ``models`` names the models to load (``--model-control-mode=explicit``); ``None`` loads every
    model in the repository (``--model-control-mode=none``). Either way a model that fails to load
    stops the server, and :meth:`start` raises with the log. Files (log, backend directory) go to
    ``workdir``.
    """

    def __init__(
        self,
        model_repository: Path,
        workdir: Path,
        *,
        models: Sequence[str] | None = None,
        install: TritonInstall | None = None,
        python_path: Sequence[Path] = (_PROJECT_ROOT,),
        log_verbose: int = 0,
        exit_timeout_s: int = 10,
        ports: tuple[int, int, int] | None = None,
        address: str = "127.0.0.1",
    ) -> None:
        self.model_repository = Path(model_repository).resolve()
        self.workdir = Path(workdir).resolve()
        self.models = list(models) if models is not None else None
        self._install = install
        self.python_path = [Path(p).resolve() for p in python_path]
        self.log_verbose = log_verbose
        self.exit_timeout_s = exit_timeout_s
        self.fixed_ports = ports  # (grpc, http, metrics); None = free ports
        self.address = address
        self.proc: subprocess.Popen | None = None
        self.grpc_port = self.http_port = self.metrics_port = 0
        self.log_path = self.workdir / "tritonserver.log"
        self.start_seconds: float | None = None
        self._shm_prefix = ""
        self._log_offset = 0  # where the current launch's part of the (appended) log begins

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self, timeout: float = 180.0) -> str:
        """Start the server and wait until it and its models are ready; return the gRPC address."""
        if self.proc is not None:
            raise TritonServerError("server already started")
        if not self.model_repository.is_dir():
            raise TritonServerError(f"model repository {self.model_repository} is not a directory")
        install = self._install or find_tritonserver()
        self.workdir.mkdir(parents=True, exist_ok=True)
        backends = self._assemble_backends(install)
        started = time.monotonic()
        for attempt in range(3):  # a chosen port can be taken between choosing and binding
            self._launch(install, backends)
            try:
                self._wait_ready(started + timeout)
            except TritonServerError:
                self.stop()
                if attempt < 2 and not self.fixed_ports and any(marker in self._log_since_launch() for marker in _PORT_IN_USE):
                    log.warning("triton_port_taken_retrying", attempt=attempt + 1)
                    continue
                raise
            self.start_seconds = time.monotonic() - started
            log.info("triton_started", grpc=self.grpc_url, http=self.http_url, metrics=self.metrics_url,
                     seconds=round(self.start_seconds, 2), log=str(self.log_path))
            return self.grpc_url
        raise AssertionError("unreachable")

    def restart(self, downtime_s: float = 0.0, timeout: float = 180.0) -> str:
        """Stop the server and start it again on the same ports (clients keep their address).

        The new process dies with the thread that calls this (``PR_SET_PDEATHSIG``, as at start):
        call it from a thread that lives as long as the server should.
        """
        if self.proc is None:
            raise TritonServerError("server not started")
        ports, fixed = (self.grpc_port, self.http_port, self.metrics_port), self.fixed_ports
        self.stop()
        time.sleep(downtime_s)
        self.fixed_ports = ports
        try:
            return self.start(timeout=timeout)
        finally:
            self.fixed_ports = fixed

    def stop(self) -> None:
        """SIGTERM the server (it drains for ``exit_timeout_s``), then SIGKILL its process group."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=self.exit_timeout_s + 10)
            except subprocess.TimeoutExpired:
                log.warning("triton_kill", pid=proc.pid)
        # the python-backend stubs are in the server's process group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        self._remove_shared_memory()

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self) -> None:  # last resort: never leak a server
        proc = getattr(self, "proc", None)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(Exception):
                os.killpg(proc.pid, signal.SIGKILL)

    # --- internals -----------------------------------------------------------------------------

    def _assemble_backends(self, install: TritonInstall) -> Path:
        """``workdir/backends/python``: the wheel's backend with the stub for this Python version."""
        backends = self.workdir / "backends"
        python = backends / "python"
        shutil.rmtree(backends, ignore_errors=True)
        python.mkdir(parents=True)
        for item in install.python_backend_dir.iterdir():
            if item.name != "triton_python_backend_stub":
                (python / item.name).symlink_to(item)
        (python / "triton_python_backend_stub").symlink_to(install.stub())
        return backends

    def _environment(self, install: TritonInstall) -> dict[str, str]:
        env = dict(os.environ)
        lib_dirs = [str(install.libs_dir)]
        python_lib = _python_lib_dir()
        if python_lib is None:
            log.warning("triton_no_libpython", executable=sys.executable,
                        hint="this Python is statically linked; the stub will load the system libpython")
        else:
            lib_dirs.insert(0, str(python_lib))
        env["LD_LIBRARY_PATH"] = os.pathsep.join([*lib_dirs, *filter(None, [env.get("LD_LIBRARY_PATH")])])
        # the stub takes sys.prefix from the first python3 on PATH: make it this interpreter
        # (not resolved: a virtual environment is recognised by the pyvenv.cfg beside its bin/)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        python_path = [str(p) for p in self.python_path]
        env["PYTHONPATH"] = os.pathsep.join([*python_path, *filter(None, [env.get("PYTHONPATH")])])
        return env

    def _launch(self, install: TritonInstall, backends: Path) -> None:
        self.grpc_port, self.http_port, self.metrics_port = self.fixed_ports or free_ports(3)
        self._shm_prefix = f"winnow_{os.getpid()}_{uuid.uuid4().hex[:8]}_"
        cmd = [
            str(install.binary),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backends}",
            f"--cache-directory={install.caches_dir}",
            f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}",
            "--disable-auto-complete-config",  # the generated configs are complete; saves a stub per model
            f"--grpc-address={self.address}",
            f"--grpc-port={self.grpc_port}",
            f"--http-address={self.address}",
            f"--http-port={self.http_port}",
            f"--metrics-address={self.address}",
            f"--metrics-port={self.metrics_port}",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            f"--log-verbose={self.log_verbose}",
        ]
        if self.models is None:
            cmd.append("--model-control-mode=none")
        else:
            cmd.append("--model-control-mode=explicit")
            cmd += [f"--load-model={name}" for name in self.models]
        log.info("triton_starting", command=" ".join(cmd), log=str(self.log_path))
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log_file:
            log_file.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
            log_file.flush()
            self.proc = subprocess.Popen(
                cmd, cwd=self.workdir, env=self._environment(install), stdin=subprocess.DEVNULL,
                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent,
            )

    def _wait_ready(self, deadline: float) -> None:
        # imported here: the server module is usable (fetch, --run) without the client library
        from winnow.shared.triton.client import TritonClient, TritonError

        names = self.models or []
        with TritonClient(self.grpc_url, init_timeout_s=2.0, retries=0) as client:
            while True:
                if self.proc is None or self.proc.poll() is not None:
                    code = None if self.proc is None else self.proc.returncode
                    raise TritonServerError(f"tritonserver exited (code {code}) while starting\n{self._tail()}")
                try:
                    client.wait_ready(names, timeout=min(1.0, max(0.0, deadline - time.monotonic())))
                    return
                except TritonError as exc:
                    if time.monotonic() >= deadline:
                        raise TritonServerError(
                            f"tritonserver not ready in time: {exc}\n{self._tail()}"
                        ) from None

    def _tail(self) -> str:
        return log_excerpt(self.log_path, offset=self._log_offset, is_error=_is_error_line)

    def _log_since_launch(self) -> str:
        try:
            with open(self.log_path, "rb") as log_file:
                log_file.seek(self._log_offset)
                return log_file.read().decode(errors="replace")
        except OSError:
            return ""

    def _remove_shared_memory(self) -> None:
        if not self._shm_prefix:
            return
        for leftover in Path("/dev/shm").glob(f"{self._shm_prefix}*"):
            with contextlib.suppress(OSError):
                leftover.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m winnow.ops.triton.server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--fetch", action="store_true", help=f"download {WHEEL} {WHEEL_VERSION} into the cache")
    action.add_argument("--run", type=Path, metavar="REPO", help="serve this model repository until Ctrl-C")
    parser.add_argument("--model", action="append", dest="models", help="load only this model (repeatable)")
    parser.add_argument("--workdir", type=Path, help="log and backend directory for --run (default: a temp dir)")
    args = parser.parse_args(argv)

    from winnow.shared.logs import configure_logging

    configure_logging(json_format=False)
    if args.fetch:
        started = time.monotonic()
        install = find_tritonserver()
        print(f"tritonserver in {install.root} ({time.monotonic() - started:.1f} s)")
        return 0

    tmp = None if args.workdir else tempfile.mkdtemp(prefix="winnow-triton-")
    server = TritonServer(args.run, args.workdir or Path(tmp), models=args.models,
                          python_path=[_PROJECT_ROOT, Path.cwd()])
    def start() -> None:
        print(server.start(), flush=True)
        print(f"# triton ready in {server.start_seconds:.1f} s; http {server.http_url}; log {server.log_path}; "
              "Ctrl-C to stop", file=sys.stderr, flush=True)

    try:
        return run_until_interrupted(
            start, lambda: server.proc is not None and server.proc.poll() is None,
            lambda: f"tritonserver exited unexpectedly\n{log_excerpt(server.log_path, is_error=_is_error_line)}")
    finally:
        server.stop()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
