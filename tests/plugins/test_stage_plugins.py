"""Stages of your own: the example plugin package (``examples/plugins/winnow-sharpness``) is really
installed (its wheel built and installed into a folder the tests put on ``PYTHONPATH``, with its
``winnow.stages`` entry point in its dist-info), then found and run by ``winnow run`` and as a
service over the real Kafka broker."""

from __future__ import annotations

import json

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from winnow.shared.curation import SampleStage, StageContractError, Verdict
from winnow.shared.jobs import JobManifest
from winnow.shared.messages import decode_ref, encode_ref, make_ref, message_key
from winnow.shared.shards import iter_tar_samples, shard_prefix
from tests.e2e.processes import ServiceProcess, free_port
from tests.infra.tools import find_uv

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "examples" / "plugins" / "winnow-sharpness"


def _uv() -> str:
    found = find_uv()
    if found is None:
        pytest.fail("uv is missing: bash scripts/setup.sh installs it")
    return found


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """The example plugin, installed (no copy of winnow itself: it is already in the venv)."""
    site = tmp_path_factory.mktemp("site")
    done = subprocess.run([_uv(), "pip", "install", "--python", sys.executable, "--target", str(site), "--no-deps",
                           "--no-build-isolation", str(PLUGIN)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (next(site.glob("winnow_sharpness-*.dist-info")) / "entry_points.txt").read_text().count("winnow.stages")
    return site


def _env(site: Path) -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)}


def winnow(site: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "winnow.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env=_env(site))


def ledgers(job: Path, stage: str) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in sorted((job / stage).glob("*.parquet"))],
                            promote_options="permissive")


@pytest.fixture(scope="module")
def plugin_job(plugin_site, tmp_path_factory) -> Path:
    job = tmp_path_factory.mktemp("plugin") / "job"
    done = winnow(plugin_site, "run", "--example", "--out", str(job), "--no_progress", "--filter", "none",
                  "--stages", "download", "sharpness", "safety", "--stage_option", "sharpness:min_sharpness=20")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "sharpness" in done.stdout and "blurry_image" in done.stdout
    return job


def test_winnow_run_runs_an_installed_stage_plugin_where_it_is_named(plugin_job):
    downloaded = ledgers(plugin_job, "downloader")
    judged = ledgers(plugin_job, "sharpness").to_pylist()
    assert len(judged) == downloaded.num_rows
    seen = [r for r in judged if r["status"] == "success" or r["dropped_by"] == "sharpness"]
    assert len(seen) == sum(s == "success" for s in downloaded["status"].to_pylist())
    assert all(isinstance(r["sharpness"], float) for r in seen)
    blurry = [r for r in seen if r["dropped_by"] == "sharpness"]
    assert blurry and all(r["reason"] == "blurry_image" and r["sharpness"] < 20 for r in blurry)
    assert all(r["sharpness"] >= 20 for r in seen if r["status"] == "success")
    # the next stage read the plugin's shards: its ledger carries the plugin's drops and columns
    safety = {r["uid"]: r for r in ledgers(plugin_job, "safety").to_pylist()}
    assert all(safety[r["uid"]]["dropped_by"] == "sharpness" for r in blurry)
    assert {"sharpness", "toxicity_score"} <= set(next(iter(safety.values())))


def test_the_plugin_measured_the_stored_images(plugin_job):
    """The column is the image's own: recompute one from the downloader's tar."""
    row = next(r for r in ledgers(plugin_job, "sharpness").to_pylist() if r["status"] == "success")
    key, files = next((k, f) for k, f in iter_tar_samples(str(plugin_job / "downloader" / row["key"][:8]))
                      if k == row["key"])
    image = cv2.imdecode(np.frombuffer(files.get("jpg") or files.get("png") or files["webp"], np.uint8),
                         cv2.IMREAD_GRAYSCALE)
    scale = 512 / max(image.shape)
    if scale < 1:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    assert row["sharpness"] == pytest.approx(float(cv2.Laplacian(image, cv2.CV_64F).var()), rel=0.05)


def test_unknown_plugins_and_options_are_refused_with_what_is_installed(plugin_site, tmp_path):
    done = winnow(plugin_site, "run", "--example", "--out", str(tmp_path / "x"), "--stages", "download", "aesthetic")
    assert done.returncode == 2
    message = " ".join(done.stderr.split())
    assert "no stage plugin named 'aesthetic'" in message and "sharpness" in message
    done = winnow(plugin_site, "run", "--example", "--out", str(tmp_path / "y"), "--stages", "download", "sharpness",
                  "--stage_option", "sharpness:colour=1")
    assert done.returncode == 2 and "unknown option" in " ".join(done.stderr.split())
    done = winnow(plugin_site, "run", "--example", "--out", str(tmp_path / "z"), "--stages", "safety", "download")
    assert done.returncode == 2 and "pipeline order" in " ".join(done.stderr.split())


class _Undeclared(SampleStage):
    name = "undeclared"
    input_columns = ("text",)
    output_columns = ("score",)
    drop_reasons = ("too_low",)

    def __init__(self, columns=None, reason=None, needs=("text",)):
        self.columns, self.reason, self.input_columns = columns or {"score": 1.0}, reason, needs

    def judge(self, samples, shard):
        return [Verdict(self.reason is None, self.reason, columns=self.columns) for _ in samples]


@pytest.mark.parametrize("stage, message", [
    (_Undeclared(columns={"score": 1.0, "other": 2}), "wrote column(s) ['other']"),
    (_Undeclared(reason="ugly"), "dropped a sample for 'ugly'"),
    (_Undeclared(needs=("text", "aesthetic_score")), "reads column(s) ['aesthetic_score']"),
])
def test_a_stage_that_breaks_its_declared_contract_fails_the_shard(plugin_job, tmp_path, stage, message):
    manifest = JobManifest.load(str(plugin_job))
    ref = make_ref(job_id=manifest.job_id, shard_id=0, stage="downloader", job_root=str(tmp_path),
                   uri=shard_prefix(str(plugin_job / "downloader"), 0), sample_count=0, shard_count=1)
    with pytest.raises(StageContractError, match=re.escape(message)):
        stage.process(ref)
    assert not list((tmp_path / "undeclared").glob("*_stats.json")), "a broken shard is not marked done"


@pytest.mark.kafka
def test_the_plugin_runs_as_a_service_over_kafka(plugin_site, plugin_job, kafka_bootstrap, tmp_path, unique):
    from kafka import KafkaConsumer

    from winnow.shared.bus import open_bus

    job = tmp_path / "job"
    shutil.copytree(plugin_job / "downloader", job / "downloader")
    shutil.copy(plugin_job / "job.json", job / "job.json")
    manifest = JobManifest.load(str(plugin_job))
    input_topic, output_topic = f"winnow.shards.downloader.{unique}", f"winnow.shards.sharpness.{unique}"
    port = free_port()
    env = {**_env(plugin_site), "WINNOW_STAGE_PLUGIN": "sharpness", "WINNOW_STAGE_OPTIONS": '{"min_sharpness": "20"}',
           "WINNOW_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "WINNOW_INPUT_TOPIC": input_topic,
           "WINNOW_OUTPUT_TOPIC": output_topic, "WINNOW_CONSUMER_GROUP": f"sharpness-{unique}",
           "WINNOW_GRPC_ADDRESS": f"127.0.0.1:{port}", "WINNOW_METRICS_PORT": "0", "WINNOW_TOPIC_PARTITIONS": "2",
           "WINNOW_WRITE_ROOTS": json.dumps([str(job)])}  # the job storage it may touch (winnow.shared.access)
    service = ServiceProcess("winnow.services.plugin", env, tmp_path / "sharpness.log", port).start()
    bus = open_bus(kafka_bootstrap, client_id=f"test-{unique}", partitions=2)
    try:
        service.wait_healthy()
        bus.ensure_topics([input_topic, output_topic])
        for shard in range(manifest.shard_count):
            ref = make_ref(job_id=manifest.job_id, shard_id=shard, stage="downloader", job_root=str(job),
                           uri=shard_prefix(str(job / "downloader"), shard), sample_count=0,
                           shard_count=manifest.shard_count)
            bus.send(input_topic, message_key(ref), encode_ref(ref))
        consumer = KafkaConsumer(output_topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                                 group_id=f"check-{unique}", consumer_timeout_ms=1000)
        published: set[int] = set()
        deadline = time.monotonic() + 180
        while len(published) < manifest.shard_count and time.monotonic() < deadline:
            published |= {decode_ref(record.value).shard_id for record in consumer}
        consumer.close()
        assert published == set(range(manifest.shard_count)), service.log_tail()
    finally:
        bus.close()
        service.stop()
    # the service wrote what winnow run's stage wrote, row for row
    by_service = ledgers(job, "sharpness").select(["uid", "status", "reason", "dropped_by", "sharpness"])
    by_run = ledgers(plugin_job, "sharpness").select(["uid", "status", "reason", "dropped_by", "sharpness"])
    assert by_service.to_pylist() == by_run.to_pylist()
