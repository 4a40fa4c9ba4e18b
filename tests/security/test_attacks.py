"""Attacks on winnow's services, as a caller past the token would try them, each in each spelling.

Every attack must be refused with PERMISSION_DENIED or INVALID_ARGUMENT (over gRPC) or go to the
dead-letter topic with its reason (over Kafka), and leave no trace: no canary content in any
answer, nothing changed outside the roots, no request to the loopback recorder, no shell command
run. The controls at the end show that what is legitimate still works. The ids count: run with
``-v`` to see each attack by name (``tests/security/README`` is this docstring).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import pytest
from kafka import KafkaConsumer, KafkaProducer

from winnow.shared.messages import DeadLetter, ShardRef, encode_ref, make_ref, message_key
from winnow.shared.proto import downloader_pb2, extractor_pb2, training_pb2
from tests.trainer.data import write_clipart_shards
from tests.security.conftest import TOKEN, Target, summary

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.s3]

REFUSED = (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT)
SETTINGS = ("WINNOW_READ_ROOTS", "WINNOW_WRITE_ROOTS", "WINNOW_ALLOW_PIPE_SOURCES", "WINNOW_ALLOW_PROTOCOL_CHAINS",
            "WINNOW_ALLOW_NETWORKS")


@dataclass(frozen=True)
class Attack:
    """One gRPC call an attacker makes: which service and method, and the request (built from the target)."""

    service: str
    method: str
    request: Callable[[Target], object]
    settles_s: float = 0.0  # wait this long before checking (a shell command ran ~6 s late before the fix)


Pool = downloader_pb2.SubmitPoolRequest
Job = downloader_pb2.GetJobRequest
Extract = extractor_pb2.ExtractFileRequest
Crawl = extractor_pb2.SubmitCrawlRequest
CrawlJob = extractor_pb2.GetCrawlJobRequest
Run = training_pb2.StartRunRequest
Evaluate = training_pb2.EvaluateRequest
Results = training_pb2.GetResultsRequest


def _legit_pool(t: Target) -> str:
    path = t.pools / "legit.csv"
    if not path.exists():
        path.write_text("url,text\nhttp://192.0.2.1/a.jpg,a photo that cannot be fetched\n")
    return str(path)


def _legit_warc(t: Target) -> str:
    from tests.extractor import pages
    from tests.extractor.crawl_files import write_warc

    path = t.pools / "legit.warc.gz"
    if not path.exists():
        write_warc(path, [pages.gallery()])
    return str(path)


def _list_in_pools(t: Target) -> str:
    path = t.pools / "warc.paths"
    path.write_text("crawl-data/a.warc.gz\ncrawl-data/b.warc.gz\n")
    return str(path)


GRPC_ATTACKS: dict[str, Attack] = {
    # -- files read through the downloader's pool -------------------------------------------------
    "pool_etc_passwd_txt": Attack("downloader", "SubmitPool", lambda t: Pool(pool_uri="/etc/passwd", input_format="txt")),
    "pool_secret_txt": Attack("downloader", "SubmitPool", lambda t: Pool(pool_uri=str(t.secret), input_format="txt")),
    "pool_secret_csv_error_echo": Attack("downloader", "SubmitPool",
                                         lambda t: Pool(pool_uri=str(t.secret), input_format="csv")),
    "pool_file_url": Attack("downloader", "SubmitPool", lambda t: Pool(pool_uri=f"file://{t.secret}", input_format="txt")),
    "pool_simplecache_chain": Attack("downloader", "SubmitPool",
                                     lambda t: Pool(pool_uri=f"simplecache::file://{t.secret}", input_format="txt")),
    "pool_dotdot_from_storage": Attack("downloader", "SubmitPool", lambda t: Pool(
        pool_uri=f"{t.pools}/../../outside/secret.txt", input_format="txt")),
    "pool_symlink_in_storage": Attack("downloader", "SubmitPool",
                                      lambda t: Pool(pool_uri=str(t.pools / "link.txt"), input_format="txt")),
    "pool_glob_matching_a_link": Attack("downloader", "SubmitPool",
                                        lambda t: Pool(pool_uri=f"{t.pools}/*.txt", input_format="txt")),
    "pool_pipe": Attack("downloader", "SubmitPool",
                        lambda t: Pool(pool_uri=f"pipe:touch {t.touched}", input_format="txt"), settles_s=2),
    "pool_ssrf_127": Attack("downloader", "SubmitPool", lambda t: Pool(pool_uri=t.url("pool.csv"))),
    "pool_ssrf_localhost": Attack("downloader", "SubmitPool", lambda t: Pool(pool_uri=t.url("pool.csv", "localhost"))),
    "pool_ssrf_metadata": Attack("downloader", "SubmitPool",
                                 lambda t: Pool(pool_uri="http://169.254.169.254/latest/meta-data/")),
    "pool_s3_other_bucket": Attack("downloader", "SubmitPool",
                                   lambda t: Pool(pool_uri=f"{t.other_bucket}/secret.txt", input_format="txt")),
    "pool_s3_other_prefix": Attack("downloader", "SubmitPool",
                                   lambda t: Pool(pool_uri=f"{t.bucket}/private/secret.txt", input_format="txt")),
    "pool_s3_dotdot": Attack("downloader", "SubmitPool",
                             lambda t: Pool(pool_uri=f"{t.bucket}/pools/../private/secret.txt", input_format="txt")),
    # -- files written anywhere by the downloader --------------------------------------------------
    "pool_output_uri_outside": Attack("downloader", "SubmitPool", lambda t: Pool(
        pool_uri=_legit_pool(t), output_uri=str(t.outside / "written" / "job"))),
    "pool_job_id_dotdot": Attack("downloader", "SubmitPool",
                                 lambda t: Pool(pool_uri=_legit_pool(t), job_id="../../outside/written/job")),
    "pool_job_id_absolute": Attack("downloader", "SubmitPool",
                                   lambda t: Pool(pool_uri=_legit_pool(t), job_id=str(t.outside / "written" / "abs"))),
    "pool_output_uri_read_root": Attack("downloader", "SubmitPool",
                                        lambda t: Pool(pool_uri=_legit_pool(t), output_uri=str(t.pools / "job"))),
    "pool_output_uri_s3_other_bucket": Attack("downloader", "SubmitPool", lambda t: Pool(
        pool_uri=_legit_pool(t), output_uri=f"{t.other_bucket}/job")),
    # -- manifests read through GetJob --------------------------------------------------------------
    "getjob_job_id_dotdot": Attack("downloader", "GetJob", lambda t: Job(job_id="../../outside/job")),
    "getjob_job_root_outside": Attack("downloader", "GetJob", lambda t: Job(job_root=str(t.outside / "job"))),
    "crawl_getjob_job_id_dotdot": Attack("extractor", "GetJob", lambda t: CrawlJob(job_id="../../outside/job")),
    "crawl_getjob_job_root_outside": Attack("extractor", "GetJob", lambda t: CrawlJob(job_root=str(t.outside / "job"))),
    # -- the extractor ----------------------------------------------------------------------------
    "extract_private_warc": Attack("extractor", "ExtractFile", lambda t: Extract(uri=str(t.outside / "private.warc.gz"))),
    "extract_file_url": Attack("extractor", "ExtractFile",
                               lambda t: Extract(uri=f"file://{t.outside}/private.warc.gz")),
    "extract_dotdot": Attack("extractor", "ExtractFile",
                             lambda t: Extract(uri=f"{t.pools}/../../outside/private.warc.gz")),
    "extract_ssrf_127": Attack("extractor", "ExtractFile", lambda t: Extract(uri=t.url("x.warc.gz"))),
    "extract_ssrf_localhost": Attack("extractor", "ExtractFile", lambda t: Extract(uri=t.url("x.warc.gz", "localhost"))),
    "extract_s3_other_bucket": Attack("extractor", "ExtractFile",
                                      lambda t: Extract(uri=f"{t.other_bucket}/x.warc.gz")),
    "extract_output_uri_outside": Attack("extractor", "ExtractFile", lambda t: Extract(
        uri=_legit_warc(t), output_uri=str(t.outside / "written" / "pairs.parquet"))),
    "crawl_files_outside": Attack("extractor", "SubmitCrawl",
                                  lambda t: Crawl(files=[str(t.outside / "private.warc.gz")])),
    "crawl_output_uri_outside": Attack("extractor", "SubmitCrawl", lambda t: Crawl(
        files=[_legit_warc(t)], output_uri=str(t.outside / "written" / "crawl"))),
    "crawl_job_id_dotdot": Attack("extractor", "SubmitCrawl",
                                  lambda t: Crawl(files=[_legit_warc(t)], job_id="../../outside/written/crawl")),
    "crawl_exfiltrate_passwd": Attack("extractor", "SubmitCrawl",
                                      lambda t: Crawl(paths_uri="/etc/passwd", paths_prefix=t.url(""))),
    "crawl_list_to_loopback": Attack("extractor", "SubmitCrawl",
                                     lambda t: Crawl(paths_uri=_list_in_pools(t), paths_prefix=t.url(""))),
    "crawl_list_to_localhost": Attack("extractor", "SubmitCrawl",
                                      lambda t: Crawl(paths_uri=_list_in_pools(t), paths_prefix=t.url("", "localhost"))),
    "crawl_paths_uri_ssrf": Attack("extractor", "SubmitCrawl", lambda t: Crawl(paths_uri=t.url("warc.paths"))),
    # -- the trainer ------------------------------------------------------------------------------
    "train_pipe_touch": Attack("trainer", "StartRun", lambda t: Run(data_dirs=[f"pipe:touch {t.touched}"]),
                               settles_s=8),
    "train_pipe_in_braces": Attack("trainer", "StartRun", lambda t: Run(data_dirs=[f"{{pipe:touch {t.touched},x}}"]),
                                   settles_s=2),
    "train_pipe_among_sources": Attack("trainer", "StartRun", lambda t: Run(
        data_dirs=[str(t.runs), f"pipe:touch {t.touched}"]), settles_s=2),
    "train_data_outside": Attack("trainer", "StartRun", lambda t: Run(data_dirs=[str(t.outside / "shards")])),
    "train_data_pattern_outside": Attack("trainer", "StartRun", lambda t: Run(
        data_dirs=[f"{t.outside}/shards/{{00000000..00000000}}.tar"])),
    "train_data_dotdot": Attack("trainer", "StartRun",
                                lambda t: Run(data_dirs=[f"{t.runs}/../../outside/shards"])),
    "train_data_braces_through_link": Attack("trainer", "StartRun", lambda t: Run(
        data_dirs=[f"{t.training}/{{linked-run,x}}/checkpoints/epoch_1.pt"])),
    "train_data_chain": Attack("trainer", "StartRun",
                               lambda t: Run(data_dirs=[f"simplecache::file://{t.outside}/shards/00000000.tar"])),
    "train_data_ssrf": Attack("trainer", "StartRun", lambda t: Run(data_dirs=[t.url("{00000000..00000001}.tar")])),
    "train_data_s3_other_bucket": Attack("trainer", "StartRun", lambda t: Run(data_dirs=[f"{t.other_bucket}/shards"])),
    "train_output_dir_outside": Attack("trainer", "StartRun", lambda t: Run(
        data_dirs=[str(t.runs)], output_dir=str(t.outside / "written"))),
    "train_exp_name_dotdot": Attack("trainer", "StartRun",
                                    lambda t: Run(data_dirs=[str(t.runs)], exp_name="../../../outside/written/x")),
    "train_scale_file_outside": Attack("trainer", "StartRun", lambda t: Run(
        data_dirs=[str(t.runs)], scale=str(t.outside / "scale.json"))),
    "train_exp_name_absolute": Attack("trainer", "StartRun",
                                      lambda t: Run(data_dirs=[str(t.runs)], exp_name=str(t.outside / "written"))),
    # -- the evaluator ----------------------------------------------------------------------------
    "evaluate_checkpoint_outside": Attack("evaluator", "Evaluate", lambda t: Evaluate(
        checkpoint=str(t.outside / "run" / "checkpoints" / "epoch_1.pt"))),
    "evaluate_run_outside": Attack("evaluator", "Evaluate", lambda t: Evaluate(train_output_dir=str(t.outside / "run"))),
    "evaluate_run_through_link": Attack("evaluator", "Evaluate",
                                        lambda t: Evaluate(train_output_dir=str(t.training / "linked-run"))),
    "evaluate_model_local_dir": Attack("evaluator", "Evaluate", lambda t: Evaluate(
        train_output_dir=str(t.training), model=f"local-dir:{t.outside}/run")),
    "evaluate_model_hub": Attack("evaluator", "Evaluate", lambda t: Evaluate(
        train_output_dir=str(t.training), model="hf-hub:attacker/model")),
    "results_planted_outside": Attack("evaluator", "GetResults",
                                      lambda t: Results(train_output_dir=str(t.outside / "run"))),
    "results_dotdot": Attack("evaluator", "GetResults",
                             lambda t: Results(train_output_dir=f"{t.training}/../../../outside/run")),
    "results_through_link": Attack("evaluator", "GetResults",
                                   lambda t: Results(train_output_dir=str(t.training / "linked-run"))),
}


@pytest.mark.parametrize("name", list(GRPC_ATTACKS))
def test_grpc_attack_is_refused(target, name):
    attack = GRPC_ATTACKS[name]
    request = attack.request(target)
    before = target.snapshot()
    with pytest.raises(grpc.RpcError) as refused:
        getattr(target.stub(attack.service), attack.method)(request, metadata=target.metadata, timeout=60)
    time.sleep(attack.settles_s)
    details = refused.value.details() or ""
    assert refused.value.code() in REFUSED, f"{name}: {refused.value.code()} {details}"
    if refused.value.code() == grpc.StatusCode.PERMISSION_DENIED:
        assert any(setting in details for setting in SETTINGS), f"the refusal names no setting: {details}"
    target.assert_untouched(before, details)


# -- the bus door ---------------------------------------------------------------------------------

def _ref(uri: str, *, job_root: str = "{t.runs}/j", job_id: str = "attack", stage: str = "pool") -> Callable[[Target], ShardRef]:
    return lambda t: make_ref(job_id=job_id.format(t=t), shard_id=0, stage=stage, uri=uri.format(t=t),
                              sample_count=1, job_root=job_root.format(t=t), shard_count=1)


BUS_ATTACKS: dict[str, tuple[str, Callable[[Target], ShardRef]]] = {
    "pool_ref_secret": ("winnow.shards.pool", _ref("{t.outside}/secret", job_root="{t.runs}/j")),
    "pool_ref_job_root_outside": ("winnow.shards.pool", _ref("{t.runs}/j/pool/00000000",
                                                             job_root="{t.outside}/written/j")),
    "pool_ref_job_id_dotdot": ("winnow.shards.pool", _ref("{t.runs}/j/pool/00000000", job_root="{t.runs}/j",
                                                          job_id="../../outside")),
    "pool_ref_s3_other_bucket": ("winnow.shards.pool", _ref("{t.other_bucket}/secret", job_root="{t.bucket}/runs/j")),
    "crawl_ref_private_warc": ("winnow.crawl", _ref("{t.outside}/private.warc.gz", job_root="{t.runs}/c", stage="crawl")),
    "crawl_ref_ssrf": ("winnow.crawl", _ref("http://127.0.0.1:{t.recorder.port}/x.warc.gz", job_root="{t.runs}/c",
                                            stage="crawl")),
    "crawl_ref_chain": ("winnow.crawl", _ref("simplecache::file://{t.outside}/private.warc.gz",
                                             job_root="{t.runs}/c", stage="crawl")),
    "reshard_ref_pipe": ("winnow.shards.reshard", _ref("pipe:touch {t.touched}", stage="reshard")),
    "reshard_ref_outside": ("winnow.shards.reshard", _ref("{t.outside}/shards", stage="reshard")),
    "reshard_ref_job_id_dotdot": ("winnow.shards.reshard", _ref("{t.runs}", job_id="../../../outside/written/x",
                                                                stage="reshard")),
    "trainer_ref_run_outside": ("winnow.shards.trainer", _ref("{t.outside}/run", stage="trainer")),
    "trainer_ref_run_through_link": ("winnow.shards.trainer", _ref("{t.training}/linked-run", stage="trainer")),
}


@pytest.fixture(scope="module")
def producer(kafka_bootstrap):
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    yield producer
    producer.close()


def _dead_letter(kafka_bootstrap: str, topic: str, marker: int, timeout: float = 90) -> DeadLetter | None:
    consumer = KafkaConsumer(f"{topic}.dlq", bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                             group_id=f"security-{uuid.uuid4().hex[:8]}", consumer_timeout_ms=1000)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in consumer:
                letter = DeadLetter.FromString(record.value)
                if letter.ref.shard_id == marker:
                    return letter
        return None
    finally:
        consumer.close()


@pytest.mark.parametrize("name", list(BUS_ATTACKS))
def test_bus_attack_is_dead_lettered_untouched(target, producer, kafka_bootstrap, name):
    topic, build = BUS_ATTACKS[name]
    ref = build(target)
    ref.shard_id = int(uuid.uuid4().int % 1_000_000_000)  # finds this attack's letter
    before = target.snapshot()
    producer.send(topic, key=message_key(ref).encode(), value=encode_ref(ref)).get(timeout=30)
    letter = _dead_letter(kafka_bootstrap, topic, ref.shard_id)
    assert letter is not None, f"{name}: no dead letter on {topic}.dlq"
    assert letter.error_type in ("AccessDenied", "InvalidReference"), letter.error
    assert letter.error_type == "InvalidReference" or any(s in letter.error for s in SETTINGS), letter.error
    time.sleep(1 if "pipe" not in name else 6)
    target.assert_untouched(before, letter.error)


# -- the token ------------------------------------------------------------------------------------

def test_without_the_token_only_health_answers(target):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    for service in ("downloader", "extractor", "trainer", "evaluator"):
        channel = target.channel(service)
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
        with pytest.raises(grpc.RpcError) as refused:
            list(reflection)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    for metadata in ([], [("authorization", "Bearer wrong")], [("authorization", TOKEN)]):
        with pytest.raises(grpc.RpcError) as refused:
            target.stub("downloader").SubmitPool(Pool(pool_uri="/etc/passwd"), metadata=metadata, timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED



# -- controls: what is legitimate still works -------------------------------------------------------

def test_controls_legitimate_calls_still_work(target):
    import fsspec

    md = target.metadata
    downloader, extractor = target.stub("downloader"), target.stub("extractor")
    job = downloader.SubmitPool(Pool(pool_uri=_legit_pool(target), job_id="control"), metadata=md, timeout=60)
    assert job.sample_count == 1 and job.job_root.startswith(str(target.runs))
    deadline = time.monotonic() + 60
    while not downloader.GetJob(Job(job_id="control"), metadata=md, timeout=10).done:
        assert time.monotonic() < deadline, "the worker never took the legitimate job's pool"
        time.sleep(0.5)
    assert downloader.GetJob(Job(job_root=job.job_root), metadata=md, timeout=10).job_id == "control"

    fs = fsspec.filesystem("s3", **target.s3_storage_options)
    fs.pipe(f"{target.bucket}/pools/legit.csv".removeprefix("s3://"), (target.pools / "legit.csv").read_bytes())
    s3_job = downloader.SubmitPool(Pool(pool_uri=f"{target.bucket}/pools/legit.csv",
                                        output_uri=f"{target.bucket}/runs/s3-control"), metadata=md, timeout=60)
    assert s3_job.job_root == f"{target.bucket}/runs/s3-control" and s3_job.sample_count == 1

    pairs = extractor.ExtractFile(Extract(uri=_legit_warc(target)), metadata=md, timeout=60)
    assert len(pairs.pairs) > 3
    crawl = extractor.SubmitCrawl(Crawl(files=[_legit_warc(target)], job_id="crawl-control"), metadata=md, timeout=60)
    assert crawl.file_count == 1 and crawl.job_root.startswith(str(target.runs))

    run = target.training / "planted-run"
    run.mkdir(exist_ok=True)
    (run / "eval_summary.json").write_text(json.dumps(summary("control_task")))
    results = target.stub("evaluator").GetResults(Results(train_output_dir=str(run)), metadata=md, timeout=10)
    assert [(t.task, t.value) for t in results.tasks] == [("control_task", 0.5)]
    with pytest.raises(grpc.RpcError) as no_model:  # admitted: the evaluation itself finds no model in the run
        target.stub("evaluator").Evaluate(Evaluate(train_output_dir=str(run)), metadata=md, timeout=60)
    assert "no architecture" in no_model.value.details() and "setting:" not in no_model.value.details()

    trainer = target.stub("trainer")
    write_clipart_shards(target.runs / "control-subset", shards=1, per_shard=8)
    state = trainer.StartRun(Run(data_dirs=[str(target.runs / "control-subset")], exp_name="control"),
                             metadata=md, timeout=60)
    assert state.state in ("queued", "running") and state.run_dir.startswith(str(target.training))
    trainer.CancelRun(training_pb2.GetRunRequest(run_id=state.run_id), metadata=md, timeout=60)


def test_no_canary_reached_the_job_storage(target):
    """Whatever ran, no canary's content is in any file the services wrote."""
    import fsspec

    for path in target.stack.options.state_dir.rglob("*"):
        if path.is_file() and not path.is_symlink() and "logs" not in path.parts and "kafka" not in path.parts:
            assert target.canary.encode() not in path.read_bytes(), path
    fs = fsspec.filesystem("s3", **target.s3_storage_options)
    for key in fs.find(f"{target.bucket.removeprefix('s3://')}/runs") + fs.find(f"{target.bucket.removeprefix('s3://')}/pools"):
        assert target.canary.encode() not in fs.cat_file(key), key
    assert target.recorder.requests == [] and not target.touched.exists()
