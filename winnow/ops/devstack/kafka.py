"""A real single-node Apache Kafka broker (KRaft, combined broker+controller), for `winnow up` and tests.

The broker jars are resolved from Maven Central by ``winnow/ops/devstack/kafka-jars/pom.xml``
(``mvn dependency:copy-dependencies``) into a per-version cache directory and run
with the local ``java`` (17+) as ``java -cp <libs>/* kafka.Kafka server.properties``.

Usage::

    with KafkaBroker(tmp_path) as broker:
        bootstrap = broker.bootstrap_servers   # "127.0.0.1:PORT"

Command line::

    python -m winnow.ops.devstack.kafka --fetch   # prefetch the jars (setup scripts)
    python -m winnow.ops.devstack.kafka --run     # start a broker, print bootstrap, wait for Ctrl-C

Environment:
    WINNOW_KAFKA_LIBS   use this already-populated jar directory instead of the cache
    WINNOW_KAFKA_CACHE  base cache directory (default ~/.cache/winnow)
    JAVA_HOME           java to use (default: ``java`` on PATH)
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from winnow.shared.ports import free_port
from winnow.ops.managed import die_with_parent, log_excerpt, run_until_interrupted

log = logging.getLogger(__name__)

POM_DIR = Path(__file__).resolve().parent / "kafka-jars"
POM = POM_DIR / "pom.xml"
_MARKER = ".complete"

# Fast JVM start for a short-lived test broker: C1 only, serial GC, small heap.
JVM_OPTS = [
    "-Xms64m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Xshare:auto",
    "-XX:-UsePerfData",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
    "-Djava.net.preferIPv4Stack=true",
    "-Dlog4j2.shutdownHookEnabled=false",
]


def _is_error_line(line: str) -> bool:
    return " ERROR " in line or " FATAL " in line


class KafkaBrokerError(RuntimeError):
    """The broker could not be fetched, formatted or started."""


def kafka_version() -> str:
    """Kafka version pinned in winnow/ops/devstack/kafka-jars/pom.xml (single source of truth)."""
    m = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", POM.read_text())
    if not m:
        raise KafkaBrokerError(f"no <kafka.version> property in {POM}")
    return m.group(1).strip()


def _pom_digest() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()


def default_cache_dir() -> Path:
    base = Path(os.environ.get("WINNOW_KAFKA_CACHE") or Path.home() / ".cache" / "winnow")
    return base / f"kafka-{kafka_version()}" / "libs"


def _is_populated(libs: Path, digest: str | None) -> bool:
    marker = libs / _MARKER
    if not marker.is_file() or not any(libs.glob("kafka_2.13-*.jar")):
        return False
    return digest is None or marker.read_text().strip() == digest


def fetch_kafka_jars(cache_dir: Path | None = None) -> Path:
    """Resolve the Kafka broker jars with Maven; return the directory holding them.

    Idempotent: a directory already populated for the current pom is reused without
    running Maven (so it works offline once fetched). Safe against concurrent
    callers (file lock + atomic rename).
    """
    env_libs = os.environ.get("WINNOW_KAFKA_LIBS")
    if cache_dir is None and env_libs:
        libs = Path(env_libs)
        if not any(libs.glob("kafka_2.13-*.jar")):
            raise KafkaBrokerError(f"WINNOW_KAFKA_LIBS={libs} holds no kafka_2.13 jar")
        return libs

    libs = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    digest = _pom_digest()
    if _is_populated(libs, digest):
        return libs

    libs.parent.mkdir(parents=True, exist_ok=True)
    with open(libs.parent / f".{libs.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _is_populated(libs, digest):
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise KafkaBrokerError("Maven (mvn) not found on PATH; needed to fetch Kafka jars")
        tmp = Path(tempfile.mkdtemp(prefix=f".{libs.name}-", dir=libs.parent))
        try:
            cmd = [
                mvn, "-q", "-B", "-f", str(POM),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={tmp}",
                "-DincludeScope=runtime",
            ]
            log.info("fetching Kafka jars: %s", " ".join(cmd))
            res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, timeout=900)
            if res.returncode != 0 or not any(tmp.glob("kafka_2.13-*.jar")):
                raise KafkaBrokerError(
                    f"mvn dependency:copy-dependencies failed (rc={res.returncode}):\n"
                    + res.stdout[-4000:])
            (tmp / _MARKER).write_text(digest + "\n")
            if libs.exists():
                shutil.rmtree(libs)
            tmp.rename(libs)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return libs


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise KafkaBrokerError("java not found (need Java 17+ on PATH or JAVA_HOME)")
    return java


def _random_cluster_id() -> str:
    """Same format as org.apache.kafka.common.Uuid.randomUuid().toString()."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


_LOG4J2 = """\
status = warn
name = winnow-test-kafka
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.zk.name = org.apache.zookeeper
logger.zk.level = WARN
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = WARN
"""


class KafkaBroker:
    """A single-node KRaft Kafka broker in a subprocess, rooted at ``workdir``.

    Everything (config, data, log) lives under ``workdir``; the broker's stdout and
    stderr (log4j2 console appender) go to ``workdir/kafka.log``.
    """

    def __init__(self, workdir: Path, port: int | None = None):
        self.workdir = Path(workdir)
        self.port = port
        self.controller_port: int | None = None
        self.cluster_id: str | None = None
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "kafka.log"
        self.data_dir = self.workdir / "data"
        self.config_path = self.workdir / "server.properties"
        self.start_seconds: float | None = None
        self._log_fh = None

    @property
    def bootstrap_servers(self) -> str:
        if self.port is None:
            raise KafkaBrokerError("broker not started")
        return f"127.0.0.1:{self.port}"

    # -- setup ---------------------------------------------------------------
    def _write_config(self) -> None:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "4",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "auto.create.topics.enable": "true",
            "delete.topic.enable": "true",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # Small machine: few threads, small buffers.
            "num.network.threads": "2",
            "num.io.threads": "2",
            "background.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            "log.cleaner.threads": "1",
            "log.cleaner.dedupe.buffer.size": str(8 * 1024 * 1024),
            "log.segment.bytes": str(16 * 1024 * 1024),
            "log.retention.hours": "1",
        }
        self.config_path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.workdir / "log4j2.properties").write_text(_LOG4J2)

    def _java_cmd(self, libs: Path, main: str, *args: str) -> list[str]:
        return [
            _java(), *JVM_OPTS,
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.workdir}",
            "-cp", f"{libs}/*", main, *args,
        ]

    def _format(self, libs: Path) -> None:
        self.cluster_id = _random_cluster_id()
        cmd = self._java_cmd(libs, "kafka.tools.StorageTool", "format",
                             "-t", self.cluster_id, "-c", str(self.config_path))
        res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, timeout=120)
        with open(self.log_path, "a") as fh:
            fh.write(res.stdout)
        if res.returncode != 0:
            raise KafkaBrokerError(
                f"kafka StorageTool format failed (rc={res.returncode}):\n{res.stdout[-4000:]}")

    # -- lifecycle -----------------------------------------------------------
    def start(self, timeout: float = 90) -> str:
        """Format storage, launch the broker, wait until kafka-python can list topics.

        Returns the bootstrap string "127.0.0.1:PORT". Raises KafkaBrokerError with
        the broker log's errors and tail on failure.
        """
        if self.proc is not None:
            return self.bootstrap_servers
        t0 = time.monotonic()
        libs = fetch_kafka_jars()
        self.workdir.mkdir(parents=True, exist_ok=True)
        fixed_port = self.port is not None
        for attempt in range(3):
            try:
                self._start_once(libs, fixed_port, t0 + timeout)
                break
            except KafkaBrokerError:
                # A port chosen by us may have been taken meanwhile: retry on new ports.
                try:
                    lost_race = "Address already in use" in self.log_path.read_text(errors="replace")
                except OSError:
                    lost_race = False
                if fixed_port or attempt == 2 or not lost_race or time.monotonic() > t0 + timeout:
                    raise
                log.warning("kafka broker port race; retrying on new ports")
                self.log_path.rename(self.workdir / f"kafka.attempt{attempt}.log")
        self.start_seconds = time.monotonic() - t0
        log.info("kafka broker %s ready in %.1fs", self.bootstrap_servers, self.start_seconds)
        return self.bootstrap_servers

    def _start_once(self, libs: Path, fixed_port: bool, deadline: float) -> None:
        if not fixed_port:
            self.port = free_port()
        self.controller_port = free_port()
        while self.controller_port == self.port:
            self.controller_port = free_port()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self._write_config()
        self._format(libs)
        self._launch(libs, deadline)

    def restart(self, downtime_s: float = 0.0, timeout: float = 90) -> None:
        """Stop the broker and start it again on the same ports with the same data (a rolling restart).

        The new process dies with the thread that calls this (``PR_SET_PDEATHSIG``, as at start):
        call it from a thread that lives as long as the server should.
        """
        if self.port is None or self.controller_port is None:
            raise KafkaBrokerError("broker not started")
        self.stop()
        time.sleep(downtime_s)
        self._launch(fetch_kafka_jars(), time.monotonic() + timeout)
        log.info("kafka broker %s restarted", self.bootstrap_servers)

    def _launch(self, libs: Path, deadline: float) -> None:
        self._log_fh = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self._java_cmd(libs, "kafka.Kafka", str(self.config_path)),
            stdout=self._log_fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=self.workdir, start_new_session=True,
            preexec_fn=die_with_parent,
        )
        try:
            self._wait_ready(deadline)
        except BaseException:
            self.stop()
            raise

    def _fail(self, msg: str) -> KafkaBrokerError:
        return KafkaBrokerError(f"{msg}\n{log_excerpt(self.log_path, 40, is_error=_is_error_line)}")

    def _wait_ready(self, deadline: float) -> None:
        from kafka import KafkaAdminClient  # imported lazily: only needed here

        last_err: Exception | None = None
        while True:
            if self.proc.poll() is not None:
                raise self._fail(f"kafka broker exited early with code {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise self._fail(f"kafka broker not ready in time (last error: {last_err!r})")
            # Cheap TCP probe first; only then pay for a kafka-python client.
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
            except OSError as e:
                last_err = e
                time.sleep(0.1)
                continue
            admin = None
            try:
                admin = KafkaAdminClient(
                    bootstrap_servers=self.bootstrap_servers,
                    client_id="winnow-broker-probe",
                    request_timeout_ms=5000,
                    bootstrap_timeout_ms=5000,
                )
                admin.list_topics()
                return
            except Exception as e:  # noqa: BLE001 - any failure means "not ready yet"
                last_err = e
                time.sleep(0.2)
            finally:
                if admin is not None:
                    with contextlib.suppress(Exception):
                        admin.close()

    def stop(self, timeout: float = 20) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None

    def __enter__(self) -> "KafkaBroker":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self):  # last resort: never leak a JVM
        proc = getattr(self, "proc", None)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(Exception):
                os.killpg(proc.pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m winnow.ops.devstack.kafka", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--fetch", action="store_true", help="resolve the Kafka jars into the cache")
    g.add_argument("--run", action="store_true", help="run a broker until Ctrl-C")
    p.add_argument("--port", type=int, default=None, help="PLAINTEXT port for --run")
    p.add_argument("--workdir", type=Path, default=None, help="broker dir for --run (default: temp)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)

    if args.fetch:
        t0 = time.monotonic()
        libs = fetch_kafka_jars()
        print(f"kafka {kafka_version()} jars in {libs} ({time.monotonic() - t0:.1f}s)")
        return 0

    tmp = None
    workdir = args.workdir
    if workdir is None:
        tmp = tempfile.mkdtemp(prefix="winnow-kafka-")
        workdir = Path(tmp)
    broker = KafkaBroker(workdir, port=args.port)

    def start() -> None:
        print(broker.start(), flush=True)
        print(f"# kafka {kafka_version()} ready in {broker.start_seconds:.1f}s; "
              f"log {broker.log_path}; Ctrl-C to stop", file=sys.stderr, flush=True)

    try:
        return run_until_interrupted(start, lambda: broker.proc is not None and broker.proc.poll() is None,
                                     lambda: f"broker exited unexpectedly; see {broker.log_path}")
    finally:
        broker.stop()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
