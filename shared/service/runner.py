"""Run one stage as a service: gRPC API + health + metrics + bus worker, stopped by SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import structlog

from winnow.shared.bus import Bus, open_bus
from winnow.shared.config import ServiceSettings
from winnow.shared.logs import configure_logging
from winnow.shared.service.grpc_server import ServiceBinding, create_server, set_serving
from winnow.shared.service.metrics import serve_metrics
from winnow.shared.service.worker import ShardWorker
from winnow.shared.stage import Stage

log = structlog.get_logger(__name__)

# How long ``start`` waits for the worker to join its consumer group before returning anyway.
FIRST_CONSUMING_WAIT_S = 15.0


class StageService:
    """Owns the server, the worker and the stage's lifecycle; ``start()`` then ``wait()``."""

    def __init__(self, stage: Stage, settings: ServiceSettings,
                 bindings: Callable[[Bus], list[ServiceBinding]], bus: Bus | None = None) -> None:
        self.stage = stage
        self.settings = settings
        stage.source_check = settings.access_policy().read  # image sources named inside ledgers: the same roots
        # host and pid in the client id tell replicas apart in the consumer group (`winnow status`)
        client_id = f"{settings.service_name}-{socket.gethostname()}-{os.getpid()}"
        self.bus = bus or open_bus(settings.kafka_bootstrap_servers, client_id=client_id,
                                   partitions=settings.topic_partitions,
                                   **({"security": settings.kafka_security,
                                       "max_poll_interval_ms": settings.max_message_seconds * 1000}
                                      if settings.kafka_bootstrap_servers else {}))
        self.bindings = bindings(self.bus)
        tls_cert = Path(settings.grpc_tls_cert).read_bytes() if settings.grpc_tls_cert else None
        tls_key = Path(settings.grpc_tls_key).read_bytes() if settings.grpc_tls_key else None
        self.server, self.port, self.health = create_server(
            settings.grpc_address, self.bindings, token=settings.grpc_token, tls_cert=tls_cert, tls_key=tls_key,
            max_message_bytes=settings.grpc_max_message_bytes, open_reflection=settings.grpc_open_reflection)
        self.worker = ShardWorker(
            self.bus, stage.process, stage=stage.name, input_topic=settings.input_topic,
            output_topic=settings.output_topic, group_id=settings.group_id,
            max_attempts=settings.max_attempts, retry_backoff_s=settings.retry_backoff_s,
            dependency_wait_s=settings.dependency_wait_s, on_consuming=self._consuming_changed,
            admit=self._admission(stage, settings),
        ) if settings.input_topic else None
        self._worker_thread: threading.Thread | None = None
        self._metrics_server = None
        self._stopped = threading.Event()
        self._first_consuming = threading.Event()

    @staticmethod
    def _admission(stage: Stage, settings: ServiceSettings) -> Callable:
        """The check every bus message passes before the stage sees it: the same roots as the gRPC API."""
        policy = settings.access_policy()
        return lambda ref: policy.admit(ref, uri_access=stage.message_uri_access,
                                        writes_job_root=stage.writes_job_root)

    def start(self) -> None:
        self.server.start()
        self._metrics_server = serve_metrics(self.settings.metrics_port)
        log.info("service_starting", service=self.settings.service_name, grpc_port=self.port)
        self.stage.setup()
        if self.worker is None:
            set_serving(self.health, [b.full_name for b in self.bindings])
        else:  # SERVING once the worker consumes (it reports every change: broker outages too)
            self._worker_thread = threading.Thread(target=self._run_worker, name="worker", daemon=True)
            self._worker_thread.start()
            # Usually the group is joined at once; if the broker is down, start anyway (NOT_SERVING).
            self._first_consuming.wait(timeout=FIRST_CONSUMING_WAIT_S)
        log.info("service_ready", service=self.settings.service_name, grpc_port=self.port)

    def _consuming_changed(self, consuming: bool) -> None:
        """Health means consuming: NOT_SERVING while the broker cannot be reached."""
        if not self._stopped.is_set():
            set_serving(self.health, [b.full_name for b in self.bindings], serving=consuming)
            log.info("consuming" if consuming else "not_consuming", service=self.settings.service_name)
        if consuming:
            self._first_consuming.set()

    def _run_worker(self) -> None:
        try:
            self.worker.run()
        except Exception:
            log.exception("worker_crashed")
            self.stop()

    def stop(self, grace: float = 10.0) -> None:
        """Stop taking work, let the current shard finish, then stop the server."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        log.info("service_stopping", service=self.settings.service_name)
        set_serving(self.health, [b.full_name for b in self.bindings], serving=False)
        if self.worker is not None:
            self.worker.stop()
            if self._worker_thread is not None and self._worker_thread is not threading.current_thread():
                self._worker_thread.join(timeout=grace * 6)
        self.server.stop(grace).wait()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        self.stage.teardown()
        self.bus.close()

    def wait(self) -> None:
        self._stopped.wait()

    def install_signal_handlers(self) -> None:
        def handle(signum, _frame):
            log.info("signal_received", signal=signal.Signals(signum).name)
            threading.Thread(target=self.stop, name="stopper").start()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)


def serve_forever(settings: ServiceSettings, build: Callable[[ServiceSettings], tuple[Stage, Callable]]) -> None:
    """The body of every service's ``main``: logging, the stage, the shell, SIGTERM, wait."""
    configure_logging(settings.log_level, settings.log_json)
    stage, bindings = build(settings)
    service = StageService(stage, settings, bindings)
    service.install_signal_handlers()
    service.start()
    service.wait()
