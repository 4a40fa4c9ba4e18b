"""Crawl files to downloaded shards over real Kafka: ``winnow extract --submit`` queues the files,
the extractor process turns each into a pool shard, the downloader process fetches its images."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import grpc
import pytest
import webdataset as wds
from kafka import KafkaConsumer

from winnow.cli import main as winnow
from winnow.services.downloader.pool import generate_uid
from winnow.shared.messages import decode_ref
from winnow.shared.proto import downloader_pb2, downloader_pb2_grpc, extractor_pb2, extractor_pb2_grpc
from winnow.shared.shards import read_table
from tests.e2e.processes import ServiceProcess, free_port
from tests.extractor.crawl_files import Page, WatLink, WatPage, write_warc, write_wat

pytestmark = [pytest.mark.slow, pytest.mark.kafka]


def crawl_files(web, root: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """A WARC and a WAT file of pages on the local image server, and the pairs they should give."""
    names = web.names()[:6]
    gallery = web.url("/pages/gallery.html")
    page = Page.html(gallery, "<html><head><title>Gallery</title></head><body>"
                     + "".join(f'<img src="/img/{n}" alt="  Photo of {n}\n">' for n in names[:4])
                     + f'<img src="/img/{names[0]}">'  # no alt: not a pair
                     + '<img src="data:image/gif;base64,R0lGOD" alt="pixel">'
                     + '<img src="/status/404" alt="A photo that is gone">'
                     + "</body></html>")
    warc = write_warc(root / "seg-0.warc.gz", [page])
    # The WAT describes another page with one pair already in the WARC and two of its own.
    wat = write_wat(root / "seg-1.warc.wat.gz", [WatPage(web.url("/pages/more.html"), links=[
        WatLink("IMG@/src", f"../img/{names[0]}", alt="Photo of " + names[0]),
        WatLink("IMG@/src", f"../img/{names[4]}", alt="Tea &amp; " + names[4]),
        WatLink("IMG@/src", f"{web.base_url}/img/{names[5]}", alt="Last one"),
    ])])
    expected = ([(web.img_url(n), f"Photo of {n}") for n in names[:4]] + [(web.url("/status/404"),
                                                                             "A photo that is gone")]
                + [(web.img_url(names[4]), f"Tea & {names[4]}"), (web.img_url(names[5]), "Last one")])
    return [str(warc), str(wat)], expected


def test_crawl_files_become_downloaded_shards_through_both_services(kafka_bootstrap, web, tmp_path, unique):
    files, expected = crawl_files(web, tmp_path)
    crawl_topic, pool_topic = f"winnow.crawl.{unique}", f"winnow.shards.pool.{unique}"
    common = {**os.environ, "WINNOW_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "WINNOW_METRICS_PORT": "0",
              "WINNOW_OUTPUT_URI": str(tmp_path / "jobs"), "WINNOW_TOPIC_PARTITIONS": "4", "WINNOW_LOG_JSON": "true",
              "WINNOW_READ_ROOTS": json.dumps([str(tmp_path)])}  # the crawl files lie beside the jobs
    extractor_port, downloader_port = free_port(), free_port()
    extractor = ServiceProcess("winnow.services.extractor", {
        **common, "WINNOW_INPUT_TOPIC": crawl_topic, "WINNOW_OUTPUT_TOPIC": pool_topic,
        "WINNOW_CONSUMER_GROUP": f"extractor-{unique}", "WINNOW_GRPC_ADDRESS": f"127.0.0.1:{extractor_port}"},
        tmp_path / "extractor.log", extractor_port)
    downloader = ServiceProcess("winnow.services.downloader", {
        **common, "WINNOW_INPUT_TOPIC": pool_topic, "WINNOW_OUTPUT_TOPIC": f"winnow.shards.downloader.{unique}",
        "WINNOW_CONSUMER_GROUP": f"downloader-{unique}", "WINNOW_GRPC_ADDRESS": f"127.0.0.1:{downloader_port}",
        "WINNOW_ALLOW_NETWORKS": '["127.0.0.0/8"]', "WINNOW_RETRIES": "0", "WINNOW_THREAD_COUNT": "4"},
        tmp_path / "downloader.log", downloader_port)
    job_root = tmp_path / "jobs" / "crawl-e2e"
    try:
        extractor.start()
        downloader.start()
        extractor.wait_healthy()
        downloader.wait_healthy()
        assert winnow(["extract", *files, "--out", str(job_root), "--job_id", "crawl-e2e", "--submit",
                       "--kafka", kafka_bootstrap, "--topic", crawl_topic]) == 0

        deadline = time.monotonic() + 90
        with grpc.insecure_channel(f"127.0.0.1:{downloader_port}") as channel:
            stub = downloader_pb2_grpc.DownloaderStub(channel)
            while time.monotonic() < deadline:
                progress = stub.GetJob(downloader_pb2.GetJobRequest(job_root=str(job_root)))
                if progress.done:
                    break
                time.sleep(0.5)
        assert progress.done, f"{extractor.log_tail()}\n{downloader.log_tail()}"
        with grpc.insecure_channel(f"127.0.0.1:{extractor_port}") as channel:
            crawl = extractor_pb2_grpc.ExtractorStub(channel).GetJob(
                extractor_pb2.GetCrawlJobRequest(job_root=str(job_root)))
        assert (crawl.done, crawl.files_done, crawl.totals.kept) == (True, 2, len(expected))
        assert crawl.totals.reasons["duplicate_in_job"] == 1
        assert crawl.totals.reasons["missing_alt"] == 1 and crawl.totals.reasons["data_url"] == 1
    finally:
        extractor.stop()
        downloader.stop()

    # Every crawl file reached the downloader's topic as a pool shard of a two-shard job.
    consumer = KafkaConsumer(pool_topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                             group_id=f"check-{unique}", consumer_timeout_ms=5000)
    refs = [decode_ref(record.value) for record in consumer]
    consumer.close()
    assert {(r.shard_id, r.stage, r.shard_count) for r in refs} == {(0, "pool", 2), (1, "pool", 2)}

    # The downloader's ledgers hold every extracted pair once, with the extractor's uid.
    ledger = [row for i in range(2) for row in read_table(str(job_root / "downloader" / f"{i:08d}")).to_pylist()]
    assert sorted((row["url"], row["text"]) for row in ledger) == sorted(expected)
    assert all(row["uid"] == generate_uid(row["url"], row["text"]) for row in ledger)
    statuses = {row["text"]: (row["status"], row["reason"]) for row in ledger}
    assert statuses.pop("A photo that is gone") == ("failed_to_download", "http_404")
    assert set(statuses.values()) == {("success", None)}
    assert {row["source_file"] for row in ledger} == set(files)
    # ... and the webdataset tars hold the images with their captions.
    samples = list(wds.WebDataset(str(job_root / "downloader" / "{00000000..00000001}.tar"),
                                  shardshuffle=False).decode())
    assert sorted(s["txt"] for s in samples) == sorted(text for _, text in expected if text != "A photo that is gone")
