"""Chaos on the whole stack: replicas SIGKILLed, Kafka, S3 and Triton restarted, a replica frozen,
all while a job runs; then nothing lost, nothing duplicated, a reason for every sample.

The stack is the one ``winnow up`` runs (``winnow.ops.devstack.stack``): a real Kafka broker, the
SeaweedFS S3 server, Triton serving every offline model and a small CLIP, and every curation
service as its own process, with ``Stack.supervise`` restarting dead replicas as a Deployment's
controller would. The pool is real clip art served by the local web server.

The schedule is seeded and bounded (``CHAOS_SEED``; ``KILLS`` kills, 1.5-3 s apart, the restarts and
the freeze early enough to fall inside the job, which the test checks). Being cut off
from the broker is played by SIGSTOP/SIGCONT of one replica: the test cannot make a network
namespace without privileges it does not assume, and a frozen process is what the broker sees of
a partitioned one (no heartbeats, then a rebalance; then it wakes up with a stale assignment).
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import fsspec
import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kafka import KafkaConsumer

from winnow.ops.devstack.stack import Stack, StackOptions
from winnow.ops.devstack.status import collect
from winnow.shared.messages import decode_ref
from winnow.shared.outages import is_outage
from winnow.shared.proto import downloader_pb2, downloader_pb2_grpc
from winnow.shared.shards import image_source, iter_tar_samples, read_table
from winnow.ops.topology import service
from tests.infra.images import openclipart_images

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.s3, pytest.mark.timeout(1200)]

CHAOS_SEED = int(os.environ.get("WINNOW_CHAOS_SEED", "17"))
POOL_SIZE = int(os.environ.get("WINNOW_CHAOS_POOL", "504"))
SAMPLES_PER_SHARD = 12
KILLS = int(os.environ.get("WINNOW_CHAOS_KILLS", "22"))
STAGES = ("downloader", "safety", "dedup", "blur", "embed", "filter")
CURATION = ("downloader", "safety", "dedup", "blur", "embed")


@dataclass
class ChaosLog:
    """What the schedule did, for the figures the test prints."""

    kills: Counter = field(default_factory=Counter)
    events: list[str] = field(default_factory=list)
    recovery_s: dict[str, float] = field(default_factory=dict)
    platform_at: dict[str, float] = field(default_factory=dict)  # seconds after the chaos began

    def note(self, started: float, message: str) -> None:
        self.events.append(f"{time.monotonic() - started:6.1f} s  {message}")
        print(f"chaos: {self.events[-1]}", flush=True)


@pytest.fixture
def pool(web, web_root, tmp_path) -> tuple[Path, list[str]]:
    images = openclipart_images(limit=POOL_SIZE)
    assert len(images) == POOL_SIZE, "needs Debian's openclipart-png"
    uids, urls = [], []
    for index, path in enumerate(images):
        name = f"chaos_{index:04d}.png"
        (web_root / name).write_bytes(path.read_bytes())
        uids.append(f"{index:032x}")
        urls.append(web.img_url(name))
    titles = [path.stem.replace("_", " ")[:80] or f"clip art {i}" for i, path in enumerate(images)]
    pool_path = tmp_path / "pool.parquet"
    pq.write_table(pa.table({"uid": uids, "url": urls, "text": titles}), pool_path)
    return pool_path, uids


def _all_serving(stack: Stack) -> bool:
    return all(r.alive() and _health(r) == "SERVING" for r in stack.all_replicas())


def _health(replica) -> str:
    from winnow.ops.devstack.processes import health_status

    return health_status(replica.grpc_address, timeout=0.5)


def _submit(stack: Stack, pool_uri: str, job_id: str) -> downloader_pb2.SubmitPoolResponse:
    deadline = time.monotonic() + 120
    while True:  # the downloader replica asked may be the one just killed: ask again
        replica = stack.replicas["downloader"][0]
        try:
            with grpc.insecure_channel(replica.grpc_address) as channel:
                return downloader_pb2_grpc.DownloaderStub(channel).SubmitPool(downloader_pb2.SubmitPoolRequest(
                    pool_uri=pool_uri, samples_per_shard=SAMPLES_PER_SHARD, job_id=job_id), timeout=60)
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def _job_done(fs, job_root: str) -> bool:
    marker = f"{job_root.removeprefix('s3://')}/reshard/_done.json"
    fs.invalidate_cache()
    try:
        return fs.exists(marker)
    except Exception as exc:
        if is_outage(exc) or isinstance(exc, OSError):  # the S3 server is being restarted
            return False
        raise


def _wait_job(stack: Stack, fs, job_root: str, timeout: float) -> float:
    started = time.monotonic()
    while not _job_done(fs, job_root):
        if time.monotonic() - started > timeout:
            raise AssertionError(f"the job did not finish in {timeout:.0f} s")
        time.sleep(1)
    return time.monotonic() - started


def _chaos(stack: Stack, rng: random.Random, record: ChaosLog) -> None:
    """``KILLS`` SIGKILLs of random replicas, 1.5-3 s apart, with Kafka, S3 and Triton restarted
    once each and one safety replica frozen for 25 s early on, so that all of it falls inside the
    job (a clean run of this pool takes about a minute here)."""
    started = time.monotonic()
    schedule = {1: "kafka", 3: "freeze", 5: "s3", 7: "triton"}  # after that many kills

    def wait_recovered(what: str, since: float) -> None:
        deadline = time.monotonic() + 300
        while not _all_serving(stack) and time.monotonic() < deadline:
            time.sleep(0.2)
        record.recovery_s[what] = round(time.monotonic() - since, 1)

    while sum(record.kills.values()) < KILLS:
        kills = sum(record.kills.values())
        what = schedule.pop(kills, None)
        if what == "freeze":
            victim = rng.choice(stack.replicas["safety"])
            if victim.alive():
                record.note(started, f"SIGSTOP {victim.name} for 25 s")
                os.kill(victim.pid, signal.SIGSTOP)
                record.platform_at[what] = time.monotonic() - started

                def thaw(victim=victim) -> None:
                    if victim.alive():
                        os.kill(victim.pid, signal.SIGCONT)
                    record.note(started, f"SIGCONT {victim.name}")

                threading.Timer(25, thaw).start()
        elif what is not None:
            record.note(started, f"restart {what}")
            record.platform_at[what] = time.monotonic() - started
            since = time.monotonic()
            {"kafka": lambda: stack.kafka.restart(downtime_s=3),
             "s3": lambda: stack.s3.restart(downtime_s=3),
             "triton": lambda: stack.triton.restart(downtime_s=2)}[what]()
            wait_recovered(what, since)
            record.note(started, f"{what} back; every replica SERVING {record.recovery_s[what]} s after the restart began")
        name = rng.choice(STAGES)
        victim = rng.choice(stack.replicas[name])
        if victim.alive():
            victim.kill()
            record.kills[name] += 1
            record.note(started, f"SIGKILL {victim.name}")
        time.sleep(rng.uniform(1.5, 3.0))


def _download(fs, job_root: str, local: Path) -> Path:
    fs.get(job_root.removeprefix("s3://"), str(local), recursive=True)
    return local


def _check_job(job: Path, uids: list[str], shard_count: int) -> dict:
    """Every promise of the pipeline, checked on the job's files; returns the figures."""
    figures = {}
    for stage in CURATION:
        folder = job / stage
        stats = sorted(folder.glob("*_stats.json"))
        assert len(stats) == shard_count, f"{stage}: {len(stats)} of {shard_count} shards have _stats.json"
        tar_uids = Counter()
        for shard in range(shard_count):
            prefix = str(folder / f"{shard:08d}")
            ledger = read_table(prefix).to_pylist()
            shard_stats = json.loads(Path(prefix + "_stats.json").read_text())
            # a stage's stats count what entered it: the rows it kept or dropped, not those it carried
            entered = ledger if stage == "downloader" else [
                r for r in ledger if r["status"] == "success" or r.get("dropped_by") == stage]
            assert shard_stats["count"] == len(entered), f"{stage} {shard}: stats count against the ledger"
            assert shard_stats["successes"] == sum(r["status"] == "success" for r in ledger), f"{stage} {shard}"
            assert shard_stats["reasons"] == dict(Counter(r["reason"] for r in entered if r["status"] != "success")), \
                f"{stage} {shard}: reasons against the ledger"
            if stage != "downloader":  # curation stages annotate: their ledger names the downloader's tar
                assert not Path(prefix + ".tar").exists(), f"{stage} {shard}: a curation stage wrote a tar"
                assert image_source(prefix).prefix == str(job / "downloader" / f"{shard:08d}"), f"{stage} {shard}"
                continue
            keys = [key for key, _files in iter_tar_samples(prefix)]
            assert len(keys) == len(set(keys)), f"{stage} {shard}: a key twice in the tar"
            tar_uids.update(json.loads(files["json"])["uid"] for _key, files in iter_tar_samples(prefix))
        assert not [u for u, n in tar_uids.items() if n > 1], f"{stage}: a sample twice in the tars"
    last = Counter(uid for shard in range(shard_count)
                   for uid in read_table(str(job / "embed" / f"{shard:08d}"))["uid"].to_pylist())
    expected = Counter(uids)
    figures["uids_expected"] = len(expected)
    figures["uids_found"] = len(set(last) & set(expected))
    figures["uids_missing"] = len(set(expected) - set(last))
    figures["uids_duplicated"] = sum(1 for n in last.values() if n > 1)
    rows = [r for shard in range(shard_count) for r in read_table(str(job / "embed" / f"{shard:08d}")).to_pylist()]
    figures["without_reason"] = sum(1 for r in rows if r["status"] != "success" and not r["reason"])
    return figures


def test_nothing_is_lost_or_duplicated_under_chaos(pool, tiny_clip_checkpoint, tmp_path):
    pool_path, uids = pool
    shard_count = -(-POOL_SIZE // SAMPLES_PER_SHARD)
    waits = {"WINNOW_RETRY_BACKOFF_S": "0.5", "WINNOW_DEPENDENCY_WAIT_S": "300"}
    options = StackOptions(
        state_dir=tmp_path / "stack", services=STAGES, free_ports=True,
        replicas={"downloader": 2, "safety": 2, "blur": 2},
        clip_models=(f"b32=winnow-tiny-ViT:{tiny_clip_checkpoint}",),
        extra_env={name: {**waits, **({"WINNOW_ALLOW_NETWORKS": '["127.0.0.0/8"]', "WINNOW_THREAD_COUNT": "8"}
                                      if name == "downloader" else {})} for name in STAGES},
        startup_timeout=420)
    record = ChaosLog()
    with Stack(options) as stack:
        supervisor = stack.supervise()
        fs = fsspec.filesystem("s3", **stack.s3.storage_options)
        fs.put(str(pool_path), "winnow/pools/chaos.parquet")

        clean = _submit(stack, "s3://winnow/pools/chaos.parquet", "clean")
        assert clean.shard_count == shard_count
        clean_s = _wait_job(stack, fs, clean.job_root, 600)
        print(f"chaos: the clean run took {clean_s:.1f} s", flush=True)

        chaos_started = time.monotonic()
        job = _submit(stack, "s3://winnow/pools/chaos.parquet", "chaos")
        finished: dict[str, float | BaseException] = {}

        def wait_for_the_job() -> None:
            try:
                finished["s"] = _wait_job(stack, fs, job.job_root, 900)
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                finished["s"] = exc

        waiter = threading.Thread(target=wait_for_the_job, daemon=True)
        waiter.start()
        # The schedule runs on this thread: the servers it restarts die with the thread that started
        # them (PR_SET_PDEATHSIG), and this one lives as long as the test.
        _chaos(stack, random.Random(CHAOS_SEED), record)
        waiter.join(timeout=900)
        if isinstance(finished.get("s"), BaseException):
            raise finished["s"]
        chaos_s = finished["s"]
        assert sum(record.kills.values()) == KILLS, record.events
        # the restarts and the freeze happened while the job ran, not after it
        assert all(at < chaos_s for at in record.platform_at.values()), (record.platform_at, chaos_s)
        # the stack heals by itself: every replica back and SERVING, every message consumed
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            statuses = collect(stack.state())
            if _all_serving(stack) and all(s.lag == 0 for s in statuses):
                break
            time.sleep(1)
        supervisor.set()
        statuses = {s.name: s for s in collect(stack.state())}
        local = _download(fs, job.job_root, tmp_path / "job")
        figures = _check_job(local, uids, shard_count)

        consumer = KafkaConsumer(service("filter").output_topic, bootstrap_servers=stack.kafka.bootstrap_servers,
                                 auto_offset_reset="earliest", consumer_timeout_ms=5000)
        published = [ref for ref in map(decode_ref, (m.value for m in consumer)) if ref.job_id == job.job_id]
        consumer.close()

    figures.update(platform_at_s={k: round(v, 1) for k, v in record.platform_at.items()}, kills=dict(record.kills), kills_total=sum(record.kills.values()), restarts=stack.restarts,
                   recovery_s=record.recovery_s, clean_s=round(clean_s, 1),
                   chaos_s=round(chaos_s, 1), chaos_wall_s=round(time.monotonic() - chaos_started, 1),
                   slowdown=round(chaos_s / clean_s, 2), seed=CHAOS_SEED,
                   dead_letters={n: s.dead_letters for n, s in statuses.items()},
                   lag={n: s.lag for n, s in statuses.items()})
    print("\n".join(record.events))
    print("chaos figures:", json.dumps(figures, indent=1))
    assert figures["uids_missing"] == 0 and figures["uids_duplicated"] == 0, figures
    assert figures["uids_found"] == POOL_SIZE
    assert figures["without_reason"] == 0
    assert all(lag == 0 for lag in figures["lag"].values()), figures["lag"]
    assert all(count == 0 for count in figures["dead_letters"].values()), figures["dead_letters"]
    assert len(published) == 1, f"the filter published {len(published)} results for the job"
