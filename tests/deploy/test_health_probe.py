"""The container health check answers like the service: healthy only once it is SERVING."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from winnow.shared.ports import free_ports
from winnow.shared.proto import downloader_pb2_grpc
from winnow.shared.service.grpc_server import ServiceBinding, create_server, set_serving
from winnow.shared.service.health_probe import main, port_from_environment, probe

SERVICE = "winnow.v1.Downloader"


@pytest.fixture
def server():
    binding = ServiceBinding(downloader_pb2_grpc.add_DownloaderServicer_to_server,
                             downloader_pb2_grpc.DownloaderServicer(), SERVICE)
    grpc_server, port, health = create_server("127.0.0.1:0", [binding], token="secret")
    grpc_server.start()
    yield port, health
    grpc_server.stop(0).wait()


def test_not_serving_until_the_stage_is_set_up(server):
    port, health = server
    assert probe(f"127.0.0.1:{port}").status == "NOT_SERVING"
    assert main(["--port", str(port)]) == 1
    set_serving(health, [SERVICE])
    result = probe(f"127.0.0.1:{port}")
    assert result.serving and result.status == "SERVING"
    assert main(["--port", str(port)]) == 0
    assert main(["--port", str(port), "--service", SERVICE]) == 0


def test_a_stopping_service_is_unhealthy_again(server):
    port, health = server
    set_serving(health, [SERVICE])
    set_serving(health, [SERVICE], serving=False)
    assert main(["--port", str(port)]) == 1


def test_an_unknown_service_name_is_unhealthy(server):
    port, health = server
    set_serving(health, [SERVICE])
    result = probe(f"127.0.0.1:{port}", "winnow.v1.NoSuchService")
    assert not result.serving and result.status == "SERVICE_UNKNOWN"


def test_nothing_listening_fails_within_the_timeout():
    (port,) = free_ports(1)
    started = time.monotonic()
    assert main(["--port", str(port), "--timeout", "0.5"]) == 1
    assert time.monotonic() - started < 5


def test_the_port_comes_from_the_service_address():
    assert port_from_environment({"WINNOW_GRPC_ADDRESS": "0.0.0.0:50052"}) == 50052
    assert port_from_environment({"WINNOW_GRPC_ADDRESS": "[::]:50058"}) == 50058
    for bad in ({}, {"WINNOW_GRPC_ADDRESS": "0.0.0.0:0"}, {"WINNOW_GRPC_ADDRESS": "localhost"}):
        with pytest.raises(ValueError, match="WINNOW_GRPC_ADDRESS"):
            port_from_environment(bad)


def test_the_image_healthcheck_command_as_docker_runs_it(server):
    """``python -m winnow.shared.service.health_probe`` with only the service's environment, as in the image."""
    port, health = server
    env = {**os.environ, "WINNOW_GRPC_ADDRESS": f"0.0.0.0:{port}"}
    command = [sys.executable, "-m", "winnow.shared.service.health_probe"]
    before = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    set_serving(health, [SERVICE])
    after = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert (before.returncode, after.returncode) == (1, 0)
    assert "NOT_SERVING" in before.stdout and "SERVING" in after.stdout
