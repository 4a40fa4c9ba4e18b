"""``python -m winnow.shared.service.health_probe``: exit 0 iff a service's gRPC health check says SERVING.

The container health check of every winnow service (docker/Dockerfile, docker-compose.yml): it
asks the standard ``grpc.health.v1.Health/Check`` on the service's own gRPC port, so it needs no
binary beyond the image's Python. A service answers SERVING only once its stage is set up (models
loaded), and NOT_SERVING again while it stops.

    python -m winnow.shared.service.health_probe                      # port from WINNOW_GRPC_ADDRESS
    python -m winnow.shared.service.health_probe --port 50052 [--service NAME] [--timeout 3]

Exit status: 0 SERVING; 1 anything else (NOT_SERVING, an unknown service name, no answer in time,
nothing listening), which is what Docker's HEALTHCHECK and Kubernetes' exec probes expect. The
health service is exempt from the bearer token (shared/service/grpc_server.py), so the probe
sends none; it speaks plaintext only.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ADDRESS_ENV = "WINNOW_GRPC_ADDRESS"


@dataclass(frozen=True)
class ProbeResult:
    """What the health service said, or why it said nothing."""

    serving: bool
    status: str  # SERVING, NOT_SERVING, SERVICE_UNKNOWN, ... or the gRPC error code's name

    def __str__(self) -> str:
        return self.status


def probe(target: str, service: str = "", timeout: float = 3.0) -> ProbeResult:
    """Ask the gRPC health service at ``target`` (``host:port``) about ``service`` ("" = the server)."""
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            # NOT_FOUND is how grpc.health.v1 says the service name is unknown
            code = exc.code()
            return ProbeResult(False, "SERVICE_UNKNOWN" if code == grpc.StatusCode.NOT_FOUND else code.name)
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return ProbeResult(response.status == health_pb2.HealthCheckResponse.SERVING, status)


def port_from_environment(environ: dict[str, str] | None = None) -> int:
    """The port of ``WINNOW_GRPC_ADDRESS`` (``host:port``), the address the service listens on."""
    environ = os.environ if environ is None else environ
    address = environ.get(ADDRESS_ENV, "")
    _, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) == 0:
        raise ValueError(f"give --port, or set {ADDRESS_ENV} to host:port with a fixed port (it is {address!r})")
    return int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m winnow.shared.service.health_probe",
                                     description="exit 0 iff the gRPC health check answers SERVING")
    parser.add_argument("--port", type=int, default=0, help=f"default: the port of ${ADDRESS_ENV}")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--service", default="", help="a hosted service's full name; default: the whole server")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer")
    args = parser.parse_args(argv)
    try:
        port = args.port or port_from_environment()
    except ValueError as exc:
        parser.error(str(exc))
    result = probe(f"{args.host}:{port}", args.service, args.timeout)
    # one line for `docker inspect` (the health log) and for people; not a log stream
    sys.stdout.write(f"{args.host}:{port} {args.service or '(server)'}: {result}\n")
    return 0 if result.serving else 1


if __name__ == "__main__":
    sys.exit(main())
