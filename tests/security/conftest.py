"""The target of the attack suite: services started as ``winnow up`` starts them, canaries, a recorder.

One stack per session (``winnow.ops.devstack.stack.Stack``: the topology's environment, real
processes) runs the downloader, extractor, trainer and evaluator over the session's Kafka, with a
bearer token, the local job storage ``state_dir/runs`` and, besides it, an S3 bucket on the
session's SeaweedFS (``s3://<bucket>/runs`` to write, ``s3://<bucket>/pools`` to read) as an
operator would configure them (``WINNOW_READ_ROOTS``/``WINNOW_WRITE_ROOTS``).

Outside every root lie canary files whose content holds a unique token: a secret text file,
a WARC whose captions carry the token, a shard folder, a checkpoint, a planted job manifest and
evaluation summary. In S3 the same secret sits in another bucket and under another prefix of the
same bucket. A loopback HTTP server records every request it gets. After each attack the suite
checks that no answer holds the token, that nothing under the canary folder changed and that the
recorder saw no request.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import fsspec
import grpc
import pytest

from winnow.ops.devstack.stack import Stack, StackOptions
from winnow.shared.proto import downloader_pb2_grpc, extractor_pb2_grpc, training_pb2_grpc
from tests.extractor.crawl_files import Page, write_warc

TOKEN = "sekrit-token-for-the-attack-suite"
SERVICES = ("downloader", "extractor", "trainer", "evaluator")
STUBS = {"downloader": downloader_pb2_grpc.DownloaderStub, "extractor": extractor_pb2_grpc.ExtractorStub,
         "trainer": training_pb2_grpc.TrainerStub, "evaluator": training_pb2_grpc.EvaluatorStub}


class RecordingServer:
    """A loopback HTTP server that answers 200 with a small CSV and remembers every request."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server API
                recorder.requests.append(self.path)
                body = b"url,text\nhttp://192.0.2.1/a.jpg,internal\n"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_HEAD = do_GET  # noqa: N815

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Target:
    """Everything an attack needs: the stubs, the roots, the canaries and the checks of what happened."""

    stack: Stack
    recorder: RecordingServer
    canary: str  # the token in every canary's content
    outside: Path  # the canary folder, outside every root
    runs: Path  # the local job storage (write root)
    pools: Path  # where pools may be read from (read root)
    training: Path  # the trainer's runs (trainer and evaluator write root)
    bucket: str  # s3://bucket
    touched: Path  # a file that ``pipe:touch`` attacks try to create
    other_bucket: str  # s3://another bucket, holding a secret
    s3_storage_options: dict
    channels: dict[str, grpc.Channel] = field(default_factory=dict)

    @property
    def secret(self) -> Path:
        return self.outside / "secret.txt"

    @property
    def metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {TOKEN}")]

    def channel(self, service: str) -> grpc.Channel:
        if service not in self.channels:
            self.channels[service] = grpc.insecure_channel(self.stack.replicas[service][0].grpc_address)
        return self.channels[service]

    def stub(self, service: str):
        return STUBS[service](self.channel(service))

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.recorder.port}/{path.lstrip('/')}"

    def snapshot(self) -> dict[str, tuple[int, int]]:
        """Every path under the canary folder with its size and modification time."""
        return {str(p): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in sorted(self.outside.rglob("*"))}

    def assert_untouched(self, before: dict, text: str = "") -> None:
        assert self.canary not in text, "an answer quotes a canary"
        assert "root:x:0:0" not in text, "an answer quotes /etc/passwd"
        assert self.snapshot() == before, "something was written outside the roots"
        assert self.recorder.requests == [], f"internal addresses were fetched: {self.recorder.requests}"
        assert not self.touched.exists(), "a shell command ran"


def summary(task: str) -> dict:
    """An evaluation summary as ``eval_summary.json`` holds it, with one task called ``task``."""
    return {"tasks": [{"key": task, "status": "ok", "main_metric": "acc1", "score": 0.5, "error": ""}],
            "aggregate": {"average": 0.5, "covered": 1, "groups": []}}


def _plant_canaries(outside: Path, canary: str) -> None:
    outside.mkdir(parents=True)
    (outside / "secret.txt").write_text(f"root:x:0:0:{canary}:/root:/bin/bash\nline two {canary}\n")
    write_warc(outside / "private.warc.gz", [Page.html("https://intranet.example/p.html", (
        f'<html><body><img src="/a.jpg" alt="{canary} private photo caption">'
        f'<img src="/b.jpg" alt="another {canary} caption"></body></html>'))])
    (outside / "job" / "pool").mkdir(parents=True)
    (outside / "job" / "job.json").write_text(json.dumps({
        "job_id": "planted", "job_root": str(outside / "job"), "pool_uri": canary, "shard_count": 1,
        "sample_count": 1, "samples_per_shard": 1, "created": 0.0}))
    (outside / "crawl").mkdir()
    (outside / "run").mkdir()
    (outside / "run" / "eval_summary.json").write_text(json.dumps(summary(canary)))
    (outside / "run" / "checkpoints").mkdir()
    (outside / "run" / "checkpoints" / "epoch_1.pt").write_bytes(canary.encode())
    (outside / "shards").mkdir()
    (outside / "shards" / "00000000.tar").write_bytes(canary.encode())
    (outside / "written").mkdir()  # output_uri attacks aim here
    (outside / "scale.json").write_text(json.dumps({"name": canary, "model": canary}))


@pytest.fixture(scope="session")
def target(tmp_path_factory, kafka_bootstrap, s3_server) -> Target:
    root = tmp_path_factory.mktemp("security")
    canary = f"CANARY-{uuid.uuid4().hex}"
    outside = root / "outside"
    _plant_canaries(outside, canary)
    state_dir = root / "stack"
    runs, pools, training = state_dir / "runs", state_dir / "pools", state_dir / "data" / "training"
    for folder in (runs, pools, training):
        folder.mkdir(parents=True)
    os.symlink(outside / "secret.txt", pools / "link.txt")  # a link inside a root that leads out
    os.symlink(outside / "run", training / "linked-run")

    bucket = f"s3://sec-{uuid.uuid4().hex[:8]}"
    other = f"s3://sec-other-{uuid.uuid4().hex[:8]}"
    for name in (bucket, other):
        s3_server.make_bucket(name.removeprefix("s3://"))
    fs = fsspec.filesystem("s3", **s3_server.storage_options)
    for uri in (f"{other}/secret.txt", f"{bucket}/private/secret.txt", f"{other}/shards/00000000.tar"):
        fs.pipe(uri.removeprefix("s3://"), (outside / "secret.txt").read_bytes())

    # the operator's settings: the stack's local roots plus the bucket
    local_read, local_write = [str(pools)], [str(runs)]
    env = {"WINNOW_GRPC_TOKEN": TOKEN}
    extra_env = {
        "downloader": {**env, "WINNOW_READ_ROOTS": json.dumps(local_read + [f"{bucket}/pools"]),
                       "WINNOW_WRITE_ROOTS": json.dumps(local_write + [f"{bucket}/runs"])},
        "extractor": {**env, "WINNOW_READ_ROOTS": json.dumps(local_read + [f"{bucket}/pools"]),
                      "WINNOW_WRITE_ROOTS": json.dumps(local_write + [f"{bucket}/runs"])},
        "trainer": {**env, "WINNOW_READ_ROOTS": json.dumps([str(runs), str(training), f"{bucket}/runs"]),
                    "WINNOW_SCALE": "tiny", "WINNOW_WORKERS": "0", "WINNOW_DEVICE": "cpu"},
        "evaluator": {**env, "WINNOW_DEVICE": "cpu"},
    }
    options = StackOptions(state_dir=state_dir, services=SERVICES, triton=False, s3=False, free_ports=True,
                           kafka_bootstrap=kafka_bootstrap, extra_env=extra_env, startup_timeout=240)
    recorder = RecordingServer()
    stack = Stack(options).start()
    target = Target(stack=stack, recorder=recorder, canary=canary, outside=outside, runs=runs, pools=pools,
                    training=training, bucket=bucket, touched=root / "touched-by-pipe", other_bucket=other,
                    s3_storage_options=s3_server.storage_options)
    yield target
    for channel in target.channels.values():
        channel.close()
    stack.stop()
    recorder.stop()
