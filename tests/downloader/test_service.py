"""The downloader's gRPC API, served by the real service shell over the in-process bus."""

from __future__ import annotations

import time

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from winnow.services.downloader.server import SERVICE_NAME, downloader_bindings
from winnow.services.downloader.settings import DownloaderSettings
from winnow.services.downloader.stage import DownloadStage
from winnow.shared.bus import InProcessBus
from winnow.shared.proto import downloader_pb2, downloader_pb2_grpc
from winnow.shared.service.runner import StageService
from winnow.shared.ports import free_port
from winnow.shared.shards import read_table


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_port()


@pytest.fixture
def service(tmp_path, metrics_port):
    settings = DownloaderSettings(grpc_address="127.0.0.1:0", metrics_port=metrics_port, output_uri=str(tmp_path / "jobs"),
                                  allow_networks=("127.0.0.0/8",), read_roots=(str(tmp_path),), timeout=2, retries=0, thread_count=4,
                                  samples_per_shard=4, consumer_group="downloader-api-test")
    stage = DownloadStage(settings.download_options())
    running = StageService(stage, settings, downloader_bindings(
        stage, input_topic=settings.input_topic, output_uri=settings.output_uri,
        samples_per_shard=settings.samples_per_shard, policy=settings.access_policy()), bus=InProcessBus())
    running.start()
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        yield downloader_pb2_grpc.DownloaderStub(channel), running
    running.stop(grace=1)


def test_submit_a_pool_and_follow_it_to_the_end(service, web, tmp_path):
    stub, running = service
    names = web.names()[:6]
    pool = tmp_path / "pool.parquet"
    pq.write_table(pa.table({"url": [web.img_url(n) for n in names] + [web.url("/status/404")],
                             "text": [f"caption {n}" for n in names] + ["gone"]}), pool)
    reply = stub.SubmitPool(downloader_pb2.SubmitPoolRequest(pool_uri=str(pool)))
    assert (reply.shard_count, reply.sample_count) == (2, 7)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        progress = stub.GetJob(downloader_pb2.GetJobRequest(job_id=reply.job_id))
        if progress.done:
            break
        time.sleep(0.2)
    assert progress.done
    (downloaded,) = [s for s in progress.stages if s.stage == "downloader"]
    assert (downloaded.shards_done, downloaded.samples, downloaded.kept) == (2, 7, 6)
    assert dict(downloaded.reasons) == {"http_404": 1}
    table = pa.concat_tables([read_table(f"{reply.job_root}/downloader/{i:08d}") for i in range(2)])
    assert table["url"].to_pylist()[:6] == [web.img_url(n) for n in names]
    # Prometheus sees the same counts.
    import urllib.request

    metrics = urllib.request.urlopen(f"http://127.0.0.1:{running.settings.metrics_port}/metrics").read().decode()
    assert 'winnow_samples_total{reason="http_404",stage="downloader",status="not_kept"}' in metrics
    assert 'winnow_shards_total{outcome="done",stage="downloader"}' in metrics


def test_fetch_urls_returns_processed_images_and_reasons(service, web):
    stub, _ = service
    good = web.img_url(web.names()[0])
    reply = stub.FetchUrls(downloader_pb2.FetchUrlsRequest(
        urls=[good, web.url("/optout/noai/" + web.names()[0]), "http://169.254.169.254/latest/meta-data"],
        image_size=64, encode_format="png"))
    ok, opted_out, blocked = reply.images
    assert ok.status == "success" and ok.mime_type == "image/png" and max(ok.width, ok.height) == 64
    assert ok.image.startswith(b"\x89PNG") and len(ok.sha256) == 64
    assert (opted_out.status, opted_out.reason) == ("failed_to_download", "opt_out")
    assert (blocked.status, blocked.reason) == ("failed_to_download", "blocked_address")


def test_bad_requests_get_clear_status_codes(service, tmp_path):
    stub, _ = service
    with pytest.raises(grpc.RpcError) as missing:
        stub.SubmitPool(downloader_pb2.SubmitPoolRequest(pool_uri=str(tmp_path / "nope.parquet")))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    bad = tmp_path / "bad.csv"
    bad.write_text("link,caption\nhttp://x/y,z\n")
    with pytest.raises(grpc.RpcError) as no_column:
        stub.SubmitPool(downloader_pb2.SubmitPoolRequest(pool_uri=str(bad)))
    assert no_column.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "no url column" in no_column.value.details()
    with pytest.raises(grpc.RpcError) as too_many:
        stub.FetchUrls(downloader_pb2.FetchUrlsRequest(urls=["http://x/"] * 65))
    assert too_many.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as bad_mode:
        stub.FetchUrls(downloader_pb2.FetchUrlsRequest(urls=["http://x/"], resize_mode="stretch"))
    assert bad_mode.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as unknown:
        stub.GetJob(downloader_pb2.GetJobRequest(job_id="no-such-job"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def test_the_service_reports_serving_only_once_set_up(service):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    _, running = service
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME)).status
    assert status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("content", [
    "root:x:0:0:MARKER-7f3a:/root:/bin/bash\ndaemon:x:1:1:MARKER-7f3a:/usr/sbin\n",  # no url column: its header is a line
    "url,text\nhttp://a/1.jpg,fine\nhttp://a/2.jpg,too,many MARKER-7f3a\n",  # the parser quotes the bad row
])
def test_a_pool_the_parser_refuses_is_reported_without_its_content(service, tmp_path, content):
    stub, _ = service
    pool = tmp_path / "pool.csv"
    pool.write_text(content)
    with pytest.raises(grpc.RpcError) as refused:
        stub.SubmitPool(downloader_pb2.SubmitPoolRequest(pool_uri=str(pool), input_format="csv"))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "MARKER-7f3a" not in refused.value.details() and str(pool) in refused.value.details()
