"""The extractor's gRPC API, served by the real service shell (gRPC server, health, bus worker)."""

from __future__ import annotations

import time

import grpc
import pytest

from winnow.services.downloader.pool import read_pool
from winnow.services.extractor.__main__ import ExtractorSettings, build
from winnow.services.extractor.server import SERVICE_NAME
from winnow.shared.bus import InProcessBus
from winnow.shared.messages import decode_ref
from winnow.shared.proto import extractor_pb2, extractor_pb2_grpc
from winnow.shared.service.runner import StageService
from tests.extractor import pages
from tests.extractor.crawl_files import write_warc, write_wat
from tests.extractor.test_extract_files import WAT_GALLERY


@pytest.fixture
def service(tmp_path):
    # the crawl files of these tests lie beside the jobs; memory:// is a store without the claim log
    settings = ExtractorSettings(grpc_address="127.0.0.1:0", metrics_port=0, output_uri=str(tmp_path / "jobs"),
                                 consumer_group="extractor-api-test", read_roots=(str(tmp_path),),
                                 write_roots=(str(tmp_path), "memory://x"))
    bus = InProcessBus()
    stage, bindings = build(settings)
    running = StageService(stage, settings, bindings, bus=bus)
    running.start()
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        yield extractor_pb2_grpc.ExtractorStub(channel), bus, running
    running.stop(grace=1)


def test_the_service_reports_serving(service):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    _, _, running = service
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_extract_one_file_now_and_write_it_as_a_pool(service, tmp_path):
    stub, _, _ = service
    path = write_warc(tmp_path / "seg.warc.gz", pages.all_pages())
    out = tmp_path / "pool.parquet"
    reply = stub.ExtractFile(extractor_pb2.ExtractFileRequest(uri=str(path), output_uri=str(out)))
    assert [(p.url, p.text) for p in reply.pairs] == pages.ALL_PAIRS
    assert not reply.pairs_truncated
    assert (reply.stats.pages, reply.stats.kept) == (5, len(pages.ALL_PAIRS))
    assert dict(reply.stats.reasons)["missing_alt"] == 1
    assert reply.stats.skipped["http_status"] == 1
    pool = read_pool(str(out))  # the downloader's SubmitPool takes it, uids included
    assert pool["uid"].to_pylist() == [p.uid for p in reply.pairs]

    few = stub.ExtractFile(extractor_pb2.ExtractFileRequest(uri=str(path), max_pairs=3, min_caption_chars=12))
    assert few.pairs_truncated and len(few.pairs) == 3
    assert all(len(p.text) >= 12 for p in few.pairs)


@pytest.mark.parametrize(("request_fields", "code", "message"), [
    ({}, grpc.StatusCode.INVALID_ARGUMENT, "uri is required"),
    ({"uri": "{tmp}/nowhere/x.warc.gz"}, grpc.StatusCode.NOT_FOUND, "no crawl file"),
    ({"uri": "{tmp}/cc/x.warc.wet.gz"}, grpc.StatusCode.INVALID_ARGUMENT, "WET file"),
    ({"uri": "/cc/x.warc.gz", "max_pairs": 10_001}, grpc.StatusCode.INVALID_ARGUMENT, "max_pairs"),
    ({"uri": "/cc/x.warc.gz", "min_caption_chars": 50, "max_caption_chars": 10},
     grpc.StatusCode.INVALID_ARGUMENT, "min_chars"),
])
def test_bad_extract_requests_get_clear_errors(service, tmp_path, request_fields, code, message):
    stub, _, _ = service
    request_fields = {key: value.replace("{tmp}", str(tmp_path)) if isinstance(value, str) else value
                      for key, value in request_fields.items()}
    with pytest.raises(grpc.RpcError) as error:
        stub.ExtractFile(extractor_pb2.ExtractFileRequest(**request_fields))
    assert error.value.code() == code
    assert message in error.value.details()


def test_submit_a_segment_list_and_follow_the_job_to_its_pool_shards(service, tmp_path):
    stub, bus, _ = service
    crawl = tmp_path / "crawl"
    (crawl / "warc").mkdir(parents=True)
    write_warc(crawl / "warc" / "seg-0.warc.gz", pages.all_pages())
    write_wat(crawl / "warc" / "seg-1.warc.wat.gz", [WAT_GALLERY])
    write_warc(crawl / "warc" / "seg-2.warc.gz", [pages.with_base()])  # every pair already in seg-1
    listing = tmp_path / "warc.paths"
    listing.write_text("warc/seg-0.warc.gz\nwarc/seg-1.warc.wat.gz\nwarc/seg-2.warc.gz\n")
    reply = stub.SubmitCrawl(extractor_pb2.SubmitCrawlRequest(paths_uri=str(listing), paths_prefix=str(crawl)))
    assert reply.file_count == 3
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        progress = stub.GetJob(extractor_pb2.GetCrawlJobRequest(job_id=reply.job_id))
        if progress.done:
            break
        time.sleep(0.1)
    assert progress.done and progress.files_done == 3
    # The story page's pairs are in all three files: kept once, dropped twice, whichever file came first.
    assert progress.totals.kept == len(pages.ALL_PAIRS) + 1  # seg-1 adds the fish & chips
    assert progress.totals.reasons["duplicate_in_job"] == 2 * len(pages.BASE_PAIRS)
    (pool,) = [s for s in progress.stages if s.stage == "pool"]
    assert (pool.shards_done, pool.kept) == (3, progress.totals.kept)

    consumer = bus.consumer(["winnow.shards.pool"], "check")
    refs = [decode_ref(m.value) for m in consumer.poll(timeout=1, max_messages=10)]
    assert sorted((r.shard_id, r.stage, r.shard_count) for r in refs) == [(0, "pool", 3), (1, "pool", 3), (2, "pool", 3)]
    assert {r.job_root for r in refs} == {reply.job_root}


@pytest.mark.parametrize(("request_fields", "code", "message"), [
    ({}, grpc.StatusCode.INVALID_ARGUMENT, "paths_uri or files is required"),
    ({"paths_uri": "{tmp}/nowhere/warc.paths.gz"}, grpc.StatusCode.NOT_FOUND, "segment list not found"),
    ({"files": ["{tmp}/cc/a.warc.wet.gz"]}, grpc.StatusCode.INVALID_ARGUMENT, "WET file"),
    ({"files": ["{tmp}/cc/a.warc.gz"], "output_uri": "memory://x/job"}, grpc.StatusCode.FAILED_PRECONDITION,
     "local disk or S3"),
])
def test_bad_submissions_get_clear_errors(service, tmp_path, request_fields, code, message):
    stub, _, _ = service
    request_fields = {key: value.replace("{tmp}", str(tmp_path)) if isinstance(value, str)
                      else [v.replace("{tmp}", str(tmp_path)) for v in value] for key, value in request_fields.items()}
    with pytest.raises(grpc.RpcError) as error:
        stub.SubmitCrawl(extractor_pb2.SubmitCrawlRequest(**request_fields))
    assert error.value.code() == code
    assert message in error.value.details()


def test_an_unknown_job_is_not_found(service):
    stub, _, _ = service
    with pytest.raises(grpc.RpcError) as error:
        stub.GetJob(extractor_pb2.GetCrawlJobRequest(job_id="nope"))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
