"""``winnow up | status | scale | submit | down``: the deployment topology as local processes.

    winnow up                       Kafka, S3, Triton and every service; Ctrl-C stops them all
    winnow status [--watch]         health, partitions, lag, shards and samples per service
    winnow scale safety=2           run two safety replicas (they share the topic's partitions)
    winnow submit POOL [--follow]   submit a pool to the downloader's gRPC API (any stack)
    winnow submit --shards URI      curate shards one already has, where they are (SubmitShards)
    winnow down                     stop the stack that `winnow up` started
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.live import Live

from winnow.services.trainer.offline_clip import MODEL_FILE
from winnow.ops import topology
from winnow.shared.models.registry import models_dir

DEFAULT_STATE_DIR = ".winnow"
SCALE_FILE = "scale.json"


def _replica_counts(values: list[str]) -> dict[str, int]:
    counts = {}
    for value in values:
        name, sep, count = value.partition("=")
        if not sep or not count.isdigit():
            raise ValueError(f"replicas are given as SERVICE=N, got {value!r}")
        svc = topology.service(name)
        if not 0 <= int(count) <= svc.max_replicas:
            raise ValueError(f"{name}: {count} replicas; the topology allows 0..{svc.max_replicas}")
        counts[name] = int(count)
    return counts


def _extra_env(values: list[str]) -> dict[str, dict[str, str]]:
    env: dict[str, dict[str, str]] = {}
    for value in values:
        name, sep, assignment = value.partition(":")
        key, eq, setting = assignment.partition("=")
        if not sep or not eq:
            raise ValueError(f"--env takes SERVICE:KEY=VALUE, got {value!r}")
        topology.service(name)
        env.setdefault(name, {})[key] = setting
    return env


def up_command(args: argparse.Namespace) -> int:
    from winnow.ops.devstack.stack import Stack, StackOptions

    console = Console()
    options = StackOptions(state_dir=Path(args.state_dir), services=tuple(args.services or topology.PIPELINE),
                           replicas=_replica_counts(args.replicas), triton=not args.no_triton, s3=not args.no_s3,
                           free_ports=args.free_ports, model_preset=args.model_preset,
                           clip_models=tuple(args.clip_model), extra_env=_extra_env(args.env),
                           kafka_bootstrap=args.kafka)
    if "embed" in options.services and not options.clip_models:
        offline = models_dir() / MODEL_FILE
        if not offline.is_file():
            raise ValueError("embed needs a CLIP model: train the offline one (`winnow models train-clip`), give "
                             "--clip_model b32=ViT-B-32:openai where weights can be fetched, or leave embed out "
                             "with --services")
        options.clip_models = (f"b32=winnow-tiny-ViT:{offline}",)
        console.print(f"embed: the offline CLIP {offline} as b32")
    stop = threading.Event()
    scale_requested = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGUSR1, lambda *_: scale_requested.set())
    stack = Stack(options, on_event=lambda message: console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {message}"))
    with console.status("starting Kafka, S3, Triton and the services..."):
        stack.start()
    console.print(f"[green]stack up[/]: {sum(len(r) for r in stack.replicas.values())} replicas; "
                  f"kafka {stack.kafka.bootstrap_servers}; jobs in {stack.endpoints.job_root}; "
                  f"state in {options.state_dir}\n`winnow status --watch` to follow, `winnow down` or Ctrl-C to stop")
    try:
        while not stop.wait(2):
            if scale_requested.is_set():
                scale_requested.clear()
                try:
                    for name, count in json.loads((options.state_dir / SCALE_FILE).read_text()).items():
                        stack.scale(name, count)
                except (ValueError, KeyError, OSError, RuntimeError) as exc:  # a bad request must not stop the stack
                    console.print(f"[red]scale failed: {exc}")
            for name in stack.replace_dead():
                console.print(f"[yellow]{name} exited; restarted (see {options.state_dir}/logs)")
    finally:
        with console.status("stopping..."):
            stack.stop()
        console.print("stack stopped")
    return 0


def _running_state(state_dir: str) -> dict:
    from winnow.ops.devstack.stack import read_state

    return read_state(Path(state_dir))


def status_command(args: argparse.Namespace) -> int:
    from winnow.ops.devstack.status import collect, render

    console = Console()
    if not args.watch:
        console.print(render(collect(_running_state(args.state_dir))))
        return 0
    with Live(render(collect(_running_state(args.state_dir))), console=console, refresh_per_second=2) as live:
        try:
            while True:
                time.sleep(args.interval)
                live.update(render(collect(_running_state(args.state_dir))))
        except KeyboardInterrupt:
            return 0


def scale_command(args: argparse.Namespace) -> int:
    counts = _replica_counts(args.replicas)
    state = _running_state(args.state_dir)
    path = Path(args.state_dir) / SCALE_FILE
    path.write_text(json.dumps(counts))
    os.kill(state["pid"], signal.SIGUSR1)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        services = _running_state(args.state_dir)["services"]
        if all(len(services.get(name, [])) == count for name, count in counts.items()):
            Console().print(", ".join(f"{name}: {count} replicas" for name, count in counts.items()))
            return 0
        time.sleep(0.5)
    raise RuntimeError(f"the stack did not reach {counts} in {args.timeout:.0f} s; see {args.state_dir}/logs")


def down_command(args: argparse.Namespace) -> int:
    state = _running_state(args.state_dir)
    os.kill(state["pid"], signal.SIGTERM)
    deadline = time.monotonic() + args.timeout
    state_file = Path(args.state_dir) / "stack.json"
    while state_file.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    if state_file.exists():
        raise RuntimeError(f"the stack (pid {state['pid']}) did not stop in {args.timeout:.0f} s")
    Console().print("stack stopped")
    return 0


def _upload_pool(pool: Path, state: dict) -> str:
    """Copy a local pool to the stack's pools folder, the only place its downloader reads pools from."""
    import fsspec

    from winnow.ops.devstack.stack import DEV_ACCESS_KEY, DEV_SECRET_KEY
    from winnow.ops.topology import pools_root

    if not pool.exists():
        raise FileNotFoundError(f"no pool at {pool}")
    target = f"{pools_root(state['job_root'])}/{pool.name}"
    options = {}
    if target.startswith("s3://"):
        options = {"endpoint_url": state["s3_endpoint"],
                   "key": os.environ.get("AWS_ACCESS_KEY_ID", DEV_ACCESS_KEY),
                   "secret": os.environ.get("AWS_SECRET_ACCESS_KEY", DEV_SECRET_KEY)}
    fs, path = fsspec.core.url_to_fs(target, **options)
    if not options:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    fs.put(str(pool), path, recursive=pool.is_dir())
    return target


def submit_command(args: argparse.Namespace) -> int:
    import grpc

    from winnow.shared.proto import downloader_pb2, downloader_pb2_grpc

    if bool(args.pool) == bool(args.shards):
        raise ValueError("winnow submit: give a POOL or --shards URI (one of them)")
    if args.downloader:
        address = args.downloader
    else:
        state = _running_state(args.state_dir)
        address = state["services"]["downloader"][0]["grpc"]
    console = Console()
    token = os.environ.get("WINNOW_GRPC_TOKEN", "")
    metadata = [("authorization", f"Bearer {token}")] if token else None
    with grpc.insecure_channel(address) as channel:
        stub = downloader_pb2_grpc.DownloaderStub(channel)
        if args.shards:  # read where they are: never uploaded, so they must lie under the downloader's read roots
            shards = args.shards if "://" in args.shards else str(Path(args.shards).resolve())
            response = stub.SubmitShards(downloader_pb2.SubmitShardsRequest(
                shards_uri=shards, images_blurred=args.images_blurred), timeout=600, metadata=metadata)
        else:
            if "://" in args.pool:
                pool = args.pool
            else:
                pool = str(Path(args.pool).resolve()) if args.downloader else _upload_pool(Path(args.pool), state)
            response = stub.SubmitPool(downloader_pb2.SubmitPoolRequest(
                pool_uri=pool, samples_per_shard=args.samples_per_shard, max_samples=args.max_samples,
                url_col=args.url_col, caption_col=args.caption_col), timeout=600, metadata=metadata)
        console.print(f"job {response.job_id}: {response.sample_count} samples in {response.shard_count} shards "
                      f"-> {response.job_root}")
        while args.follow:
            progress = stub.GetJob(downloader_pb2.GetJobRequest(job_id=response.job_id, job_root=response.job_root),
                                   timeout=30, metadata=metadata)
            console.print("  ".join(f"{stage.stage} {stage.shards_done}/{progress.shard_count} shards, {stage.kept} kept"
                                    for stage in progress.stages) or "waiting for the first shard")
            if progress.done:
                break
            time.sleep(2)
    return 0


def add_parser(subparsers) -> None:
    def state_dir(parser):
        parser.add_argument("--state_dir", default=DEFAULT_STATE_DIR, help="where `winnow up` keeps its state")
        return parser

    up = state_dir(subparsers.add_parser("up", help="run Kafka, S3, Triton and every service as local processes"))
    up.add_argument("--services", nargs="+", choices=topology.PIPELINE, default=None,
                    help="services to run (default: all)")
    up.add_argument("--replicas", nargs="+", default=[], metavar="SERVICE=N", help="replicas per service (default 1)")
    up.add_argument("--clip_model", action="append", default=[], metavar="KEY=ARCH[:CHECKPOINT]",
                    help="CLIP model(s) for embed, served on Triton as clip_KEY; the first is the filter's")
    up.add_argument("--model_preset", default="offline")
    up.add_argument("--no_triton", action="store_true", help="models in-process in each service instead")
    up.add_argument("--no_s3", action="store_true", help="jobs on the local disk instead of the S3 store")
    up.add_argument("--free_ports", action="store_true", help="free ports instead of the topology's")
    up.add_argument("--kafka", default="", metavar="BOOTSTRAP", help="use this Kafka instead of starting one")
    up.add_argument("--env", action="append", default=[], metavar="SERVICE:KEY=VALUE",
                    help="extra setting for one service, e.g. downloader:WINNOW_THREAD_COUNT=64")
    up.set_defaults(func=up_command)

    status = state_dir(subparsers.add_parser("status", help="live health and progress of the running stack"))
    status.add_argument("--watch", action="store_true")
    status.add_argument("--interval", type=float, default=2.0)
    status.set_defaults(func=status_command)

    scale = state_dir(subparsers.add_parser("scale", help="change a service's replica count in the running stack"))
    scale.add_argument("replicas", nargs="+", metavar="SERVICE=N")
    scale.add_argument("--timeout", type=float, default=300)
    scale.set_defaults(func=scale_command)

    submit = state_dir(subparsers.add_parser("submit", help="submit a pool (or shards one has) to a running downloader"))
    submit.add_argument("pool", nargs="?", default="",
                        help="pool file or folder: a local one is first copied to the stack's pools folder "
                             "(the downloader reads pools only there); or an s3:// URI it may read")
    submit.add_argument("--shards", default="", metavar="URI",
                        help="instead of a pool: a folder or s3:// prefix of img2dataset/DataComp .tar shards, curated "
                             "where they are (not copied): it must lie under the downloader's WINNOW_READ_ROOTS")
    submit.add_argument("--images_blurred", action="store_true",
                        help="with --shards: their faces are blurred already (DataComp's download blurs face_bboxes)")
    submit.add_argument("--downloader", default="", help="host:port of the downloader (default: the running stack's)")
    submit.add_argument("--samples_per_shard", type=int, default=10_000)
    submit.add_argument("--max_samples", type=int, default=0)
    submit.add_argument("--url_col", default="")
    submit.add_argument("--caption_col", default="")
    submit.add_argument("--follow", action="store_true", help="print the job's progress until it is downloaded")
    submit.set_defaults(func=submit_command)

    down = state_dir(subparsers.add_parser("down", help="stop the stack `winnow up` started"))
    down.add_argument("--timeout", type=float, default=180)
    down.set_defaults(func=down_command)
