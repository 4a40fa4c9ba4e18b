"""The gRPC shell: health that turns SERVING after setup, reflection, bearer tokens, size limits."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from winnow.shared.proto import downloader_pb2, downloader_pb2_grpc
from winnow.shared.service.grpc_server import ServiceBinding, create_server, set_serving

NAME = "winnow.v1.Downloader"


class EchoJobs(downloader_pb2_grpc.DownloaderServicer):
    def GetJob(self, request, context):
        return downloader_pb2.JobProgress(job_id=request.job_id)


@pytest.fixture
def server_factory():
    started = []

    def make(**kwargs):
        server, port, health = create_server(
            "127.0.0.1:0", [ServiceBinding(downloader_pb2_grpc.add_DownloaderServicer_to_server, EchoJobs(), NAME)],
            **kwargs)
        server.start()
        started.append(server)
        return port, health

    yield make
    for server in started:
        server.stop(0)


def test_health_is_not_serving_until_the_stage_is_set_up(server_factory):
    port, health = server_factory()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        check = lambda: stub.Check(health_pb2.HealthCheckRequest(service=NAME)).status  # noqa: E731
        assert check() == health_pb2.HealthCheckResponse.NOT_SERVING
        set_serving(health, [NAME])
        assert check() == health_pb2.HealthCheckResponse.SERVING
        assert stub.Check(health_pb2.HealthCheckRequest(service="")).status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_services(server_factory):
    port, _ = server_factory()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for r in responses for s in r.list_services_response.service}
    assert {NAME, "grpc.health.v1.Health"} <= names


def test_a_bearer_token_is_required_when_configured(server_factory):
    port, _ = server_factory(token="s3cret")
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = downloader_pb2_grpc.DownloaderStub(channel)
        with pytest.raises(grpc.RpcError) as denied:
            stub.GetJob(downloader_pb2.GetJobRequest(job_id="j"))
        assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as wrong:
            stub.GetJob(downloader_pb2.GetJobRequest(job_id="j"), metadata=[("authorization", "Bearer nope")])
        assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED
        reply = stub.GetJob(downloader_pb2.GetJobRequest(job_id="j"), metadata=[("authorization", "Bearer s3cret")])
        assert reply.job_id == "j"
        # Probes need no token.
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.NOT_SERVING


def _list_services(channel, metadata=None) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                          metadata=metadata)
    return {s.name for r in responses for s in r.list_services_response.service}


def test_with_a_token_reflection_needs_it_unless_opened(server_factory):
    closed, _ = server_factory(token="s3cret")
    with grpc.insecure_channel(f"127.0.0.1:{closed}") as channel:
        with pytest.raises(grpc.RpcError) as denied:
            _list_services(channel)
        assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert NAME in _list_services(channel, [("authorization", "Bearer s3cret")])
    opened, _ = server_factory(token="s3cret", open_reflection=True)
    with grpc.insecure_channel(f"127.0.0.1:{opened}") as channel:
        assert NAME in _list_services(channel)
        with pytest.raises(grpc.RpcError) as still_denied:  # the API itself still needs the token
            downloader_pb2_grpc.DownloaderStub(channel).GetJob(downloader_pb2.GetJobRequest(job_id="j"))
        assert still_denied.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_requests_over_the_size_limit_are_refused(server_factory):
    port, _ = server_factory(max_message_bytes=1024)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = downloader_pb2_grpc.DownloaderStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetJob(downloader_pb2.GetJobRequest(job_id="x" * 4096))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_tls_with_a_self_signed_certificate(server_factory, tmp_path):
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    port, _ = server_factory(tls_cert=cert_pem, tls_key=key_pem, token="t")
    credentials = grpc.composite_channel_credentials(grpc.ssl_channel_credentials(root_certificates=cert_pem),
                                                     grpc.access_token_call_credentials("t"))
    with grpc.secure_channel(f"localhost:{port}", credentials) as channel:
        reply = downloader_pb2_grpc.DownloaderStub(channel).GetJob(downloader_pb2.GetJobRequest(job_id="tls"))
    assert reply.job_id == "tls"
