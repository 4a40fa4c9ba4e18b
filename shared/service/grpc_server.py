"""gRPC server factory: the service's API, ``grpc.health.v1``, reflection, auth and size limits."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from winnow.shared.service.metrics import RPCS


@dataclass(frozen=True)
class ServiceBinding:
    """One gRPC service to host: its registration function, implementation and full name."""

    add_to_server: Callable[[object, grpc.Server], None]
    servicer: object
    full_name: str


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Rejects calls without ``authorization: Bearer <token>``; health checks stay open for probes.

    Reflection (the API's schema) needs the token too unless ``open_reflection``: it tells an
    unauthenticated caller nothing it could use, but nothing it needs either.
    """

    def __init__(self, token: str, *, open_reflection: bool = False) -> None:
        self._expected = f"Bearer {token}".encode()
        self._open = ("/grpc.health.v1.Health/",) + (("/grpc.reflection.",) if open_reflection else ())

        def deny(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    def intercept_service(self, continuation, handler_call_details):
        if handler_call_details.method.startswith(self._open):
            return continuation(handler_call_details)
        metadata = dict(handler_call_details.invocation_metadata or ())
        given = str(metadata.get("authorization", "")).encode()
        if hmac.compare_digest(given, self._expected):
            return continuation(handler_call_details)
        RPCS.labels(handler_call_details.method, "UNAUTHENTICATED").inc()
        return self._deny


def create_server(
    address: str,
    services: Iterable[ServiceBinding],
    *,
    token: str = "",
    tls_cert: bytes | None = None,
    tls_key: bytes | None = None,
    max_message_bytes: int = 64 * 1024 * 1024,
    max_workers: int = 16,
    open_reflection: bool = False,
) -> tuple[grpc.Server, int, health.HealthServicer]:
    """Build (not start) a server bound to ``address``; port 0 picks a free port.

    Returns the server, the bound port and the health servicer. Every hosted service starts
    NOT_SERVING: call ``set_serving(health_servicer, names)`` once the stage is set up.
    """
    services = list(services)
    interceptors = [BearerTokenInterceptor(token, open_reflection=open_reflection)] if token else []
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),
        ],
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for binding in services:
        binding.add_to_server(binding.servicer, server)
        health_servicer.set(binding.full_name, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    names = [b.full_name for b in services] + [health.SERVICE_NAME, reflection.SERVICE_NAME]
    reflection.enable_server_reflection(names, server)
    if tls_cert and tls_key:
        credentials = grpc.ssl_server_credentials([(tls_key, tls_cert)])
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind gRPC server to {address}")
    return server, port, health_servicer


def set_serving(health_servicer: health.HealthServicer, names: Iterable[str], serving: bool = True) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in [*names, ""]:
        health_servicer.set(name, status)
