"""The whole pool flow as separate service processes over real Kafka and a real Triton server.

download -> safety -> dedup -> blur -> embed -> filter (clip_score) + reshard, each its own
process, every model served by Triton over gRPC, on a pool of real images from the local web
server with planted cases: a face, toxic captions, exact and near duplicates, copies of
evaluation images and broken URLs. The same pool through ``winnow run``'s embedded pipeline
(models in-process) must keep exactly the same uids.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from pathlib import Path

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kafka import KafkaConsumer
from PIL import Image

from winnow.services.blur.stage import BlurStage
from winnow.services.dedup.cli import build_index
from winnow.services.dedup.stage import DedupOptions, DedupStage
from winnow.services.downloader.fetch import FetchOptions
from winnow.services.downloader.pool import prepare_job
from winnow.services.downloader.stage import DownloadOptions, DownloadStage
from winnow.services.embed.stage import EmbedStage
from winnow.services.filter.apply import FilterConfig
from winnow.services.filter.stage import FilterOptions, FilterStage
from winnow.shared.service.embedded import run_pipeline
from winnow.services.safety.stage import SafetyOptions, SafetyStage
from winnow.shared.messages import decode_ref, make_ref
from winnow.shared.models.provider import clip_factory, model_factory
from winnow.shared.proto import downloader_pb2, downloader_pb2_grpc
from winnow.shared.shards import read_table
from tests.e2e.processes import ServiceProcess, free_port
from tests.infra.images import near_copy, openclipart_images, skimage_photos
from tests.triton.served_models import REAL_MODELS

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

TOXIC = ["you are a stupid worthless idiot and everyone hates you",
         "shut up you disgusting moron, nobody wants you here",
         "what a pathetic ugly loser, go kill yourself"]
FILTER = dict(name="clip_score", fraction=0.5, arch="b32")


@pytest.fixture(scope="module")
def planted(web, web_root, tmp_path_factory):
    """A pool of ~200 real images with known cases, an evaluation set and its index."""
    folder = tmp_path_factory.mktemp("pipeline")
    photos = {p.stem: p for p in skimage_photos()}
    clipart = openclipart_images(limit=400)[::2][:170]
    eval_dir = folder / "eval"
    eval_dir.mkdir()
    rows, roles = [], {}

    def add(role, name, data, caption):
        (web_root / name).write_bytes(data)
        roles[len(rows)] = role
        rows.append((web.img_url(name), caption))

    add("face", "e2e_astronaut.png", photos["astronaut"].read_bytes(), "an astronaut in front of a flag")
    # Near copies of pictures big enough for a perceptual hash to survive a 2% crop (tiny
    # symmetric line art does not: see shared/models/near_duplicates.py).
    big = [i for i, path in enumerate(clipart) if min(Image.open(path).size) >= 256]
    near_sources = {big[len(big) // 6], big[len(big) // 2], big[5 * len(big) // 6]}
    for index, path in enumerate(clipart):
        add("clipart", f"e2e_clip_{index:03d}.png", path.read_bytes(), path.stem.replace("_", " "))
        if index in (10, 60, 110):  # an exact copy right after its original (same shard)
            add("exact_copy", f"e2e_clip_{index:03d}_again.png", path.read_bytes(), "the same picture again")
        if index in near_sources:  # a resized, recompressed copy right after it
            add("near_copy", f"e2e_clip_{index:03d}_copy.jpg", near_copy(path, 0.8, 70), "a smaller copy")
    for index, name in enumerate(("coffee", "rocket", "chelsea")):
        (eval_dir / f"{name}.png").write_bytes(photos[name].read_bytes())
        add("eval_copy", f"e2e_eval_{name}.jpg", near_copy(photos[name], 0.7, 60), f"a photo of {name}")
    for index, text in enumerate(TOXIC):
        add("toxic", f"e2e_toxic_{index}.png", clipart[150 + index].read_bytes(), text)
    for role, url in (("broken", web.url("/status/404")), ("broken", web.url("/notimage")),
                      ("broken", "http://169.254.169.254/latest/meta-data/")):
        roles[len(rows)] = role
        rows.append((url, "broken"))
    uids = [f"{i:032x}" for i in range(len(rows))]
    pool = folder / "pool.parquet"
    pq.write_table(pa.table({"uid": uids, "url": [u for u, _ in rows], "text": [t for _, t in rows]}), pool)
    index_dir = folder / "eval-index"
    build_index(argparse.Namespace(images=str(eval_dir), out=str(index_dir), model_preset="offline", threshold=None,
                                   batch_size=8))
    return {"pool": pool, "index": str(index_dir), "roles": {uids[i]: r for i, r in roles.items()}}


def _resharded_uids(reshard_dir: Path) -> Counter:
    return Counter(uid for path in sorted(reshard_dir.glob("*.parquet")) for uid in pq.read_table(path)["uid"].to_pylist())


def _embedded_run(planted, tiny_clip_checkpoint, root: Path) -> tuple[Counter, list[dict]]:
    manifest = prepare_job(str(planted["pool"]), str(root), samples_per_shard=50)
    model = lambda kind: model_factory(kind, "offline")  # noqa: E731
    stages = [DownloadStage(DownloadOptions(fetch=FetchOptions(allow_networks=("127.0.0.0/8",), retries=0))),
              SafetyStage(model("text_toxicity"), model("image_nsfw"), SafetyOptions(0.5, 0.5)),
              DedupStage(model("near_duplicate"), DedupOptions(eval_index_dir=planted["index"],
                                                                registry_dir=str(root / "registry"))),
              BlurStage(model("face_detector")),
              EmbedStage({"b32": clip_factory("winnow-tiny-ViT", tiny_clip_checkpoint)})]
    result = run_pipeline(manifest, stages, workers_per_stage=1, partitions=1, show_progress=False)
    assert not result.dead_letters
    FilterStage(FilterOptions(FilterConfig(metadata_dir="", **FILTER), shard_size=40)).process(
        make_ref(job_id=manifest.job_id, shard_id=0, stage="embed", uri="", sample_count=0,
                 job_root=str(root), shard_count=manifest.shard_count))
    ledger = [r for i in range(manifest.shard_count) for r in read_table(str(root / "embed" / f"{i:08d}")).to_pylist()]
    return _resharded_uids(root / "reshard"), ledger


def test_services_over_kafka_and_triton_match_the_embedded_run(
        planted, kafka_bootstrap, triton_server, triton_client, tiny_clip_checkpoint, tmp_path, unique):
    for name in [spec.name for spec in REAL_MODELS] + ["clip_tiny_image", "clip_tiny_text"]:
        triton_client.load_model(name, timeout=240)
    topic = lambda stage: f"winnow.shards.{stage}.{unique}"  # noqa: E731
    base = {**os.environ, "WINNOW_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "WINNOW_METRICS_PORT": "0",
            "WINNOW_TOPIC_PARTITIONS": "1", "WINNOW_TRITON_URL": triton_server.grpc_url, "WINNOW_LOG_JSON": "true",
            # the job storage, and the folder the pool was written to
            "WINNOW_WRITE_ROOTS": json.dumps([str(tmp_path / "jobs")]),
            "WINNOW_READ_ROOTS": json.dumps([str(planted["pool"].parent)])}
    chain = [("winnow.services.downloader", "pool", "downloader", {
                  "WINNOW_OUTPUT_URI": str(tmp_path / "jobs"), "WINNOW_ALLOW_NETWORKS": '["127.0.0.0/8"]',
                  "WINNOW_SAMPLES_PER_SHARD": "50", "WINNOW_RETRIES": "0", "WINNOW_TRITON_URL": ""}),
             ("winnow.services.safety", "downloader", "safety", {"WINNOW_TOXICITY_THRESHOLD": "0.5",
                                                          "WINNOW_NSFW_THRESHOLD": "0.5"}),
             ("winnow.services.dedup", "safety", "dedup", {"WINNOW_EVAL_INDEX_DIR": planted["index"],
                                                    "WINNOW_REGISTRY_DIR": str(tmp_path / "registry")}),
             ("winnow.services.blur", "dedup", "blur", {}),
             ("winnow.services.embed", "blur", "embed", {"WINNOW_CLIP_MODELS": json.dumps(
                 {"b32": {"arch": "winnow-tiny-ViT", "pretrained": tiny_clip_checkpoint,
                          "triton_model": "clip_tiny"}})}),
             ("winnow.services.filter", "embed", "reshard", {
                 "WINNOW_FILTER_NAME": FILTER["name"], "WINNOW_FRACTION": str(FILTER["fraction"]),
                 "WINNOW_ARCH": FILTER["arch"], "WINNOW_SHARD_SIZE": "40"})]
    services = []
    try:
        for module, source, sink, extra in chain:
            port = free_port()
            env = {**base, "WINNOW_INPUT_TOPIC": topic(source), "WINNOW_OUTPUT_TOPIC": topic(sink),
                   "WINNOW_CONSUMER_GROUP": f"{sink}-{unique}", "WINNOW_GRPC_ADDRESS": f"127.0.0.1:{port}", **extra}
            services.append(ServiceProcess(module, env, tmp_path / f"{module}.log", port).start())
        for service in services:
            service.wait_healthy(timeout=180)
        with grpc.insecure_channel(f"127.0.0.1:{services[0].port}") as channel:
            job = downloader_pb2_grpc.DownloaderStub(channel).SubmitPool(
                downloader_pb2.SubmitPoolRequest(pool_uri=str(planted["pool"])))
        consumer = KafkaConsumer(topic("reshard"), bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                                 group_id=f"check-{unique}", consumer_timeout_ms=1000)
        deadline, final = time.monotonic() + 420, None
        while final is None and time.monotonic() < deadline:
            for record in consumer:
                final = decode_ref(record.value)
            for service in services:
                assert service.process.poll() is None, f"{service.module} died:\n{service.log_tail()}"
        consumer.close()
        assert final is not None, "\n\n".join(s.log_tail(1500) for s in services)
    finally:
        for service in services:
            service.stop()

    job_root = Path(job.job_root)
    ledger = [r for i in range(job.shard_count) for r in read_table(str(job_root / "embed" / f"{i:08d}")).to_pylist()]
    roles = planted["roles"]
    by_role: dict[str, list[dict]] = {}
    for row in ledger:
        by_role.setdefault(roles[row["uid"]], []).append(row)
    assert {r["reason"] for r in by_role["toxic"]} == {"toxic_caption"}
    assert {r["reason"] for r in by_role["exact_copy"]} == {"exact_duplicate"}
    assert {r["reason"] for r in by_role["near_copy"]} == {"near_duplicate"}
    assert {r["reason"] for r in by_role["eval_copy"]} == {"eval_duplicate"}
    assert {r["status"] for r in by_role["broken"]} == {"failed_to_download", "failed_to_resize"}
    (face,) = by_role["face"]
    assert face["status"] == "success" and len(face["face_bboxes"]) == 1
    kept = [r for r in ledger if r["status"] == "success"]
    assert all(r["clip_b32_similarity_score"] is not None for r in kept)

    services_subset = _resharded_uids(job_root / "reshard")
    assert final.sample_count == sum(services_subset.values())
    assert max(services_subset.values()) == 1, "the subset has no repeated uid"
    embedded_subset, embedded_ledger = _embedded_run(planted, tiny_clip_checkpoint, tmp_path / "embedded")
    assert services_subset == embedded_subset, "services and embedded run keep the same uids"
    reasons = lambda rows: Counter(r["reason"] for r in rows if r["status"] != "success")  # noqa: E731
    assert reasons(ledger) == reasons(embedded_ledger)
