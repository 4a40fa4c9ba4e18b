"""``winnow run``: every stage in one process over the in-process bus, with local files.

The same stage objects and the same worker loop as the services; only the transport differs.
Stages are chained by topic: each consumes ``winnow.shards.<previous>`` and publishes
``winnow.shards.<itself>``. The run ends when every shard has left the last stage or a
dead-letter topic.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from shared.bus import InProcessBus
from shared.jobs import POOL_STAGE, JobManifest, StageTotals, publish_pool, stage_totals
from shared.messages import DeadLetter, decode_ref
from shared.service.worker import ShardWorker
from shared.stage import Stage
from shared.topics import shards_topic


STAGE_NAMES = ("download", "safety", "dedup", "blur", "embed")


def parse_clip_model(spec: str) -> tuple[str, str, str | None]:
    """``KEY=ARCH[:PRETRAINED]`` -> (key, arch, pretrained)."""
    key, sep, model = spec.partition("=")
    if not sep or not key or not model:
        raise ValueError(f"--clip_model takes KEY=ARCH[:CHECKPOINT_OR_TAG], got {spec!r}")
    arch, _, pretrained = model.partition(":")
    return key, arch, pretrained or None


def build_stages(args: argparse.Namespace) -> list[Stage]:
    """The stages ``winnow run`` was asked for, in the order given, from its command-line options.

    winnow's own stages keep their pipeline order; a stage plugin (entry-point group
    ``winnow.stages``) runs where it is named, e.g. ``--stages download safety sharpness dedup``.
    """
    from services.blur.stage import BlurStage
    from services.dedup.stage import DedupOptions, DedupStage
    from services.downloader.cli import download_options
    from services.downloader.stage import DownloadStage
    from services.embed.stage import EmbedStage
    from services.safety.stage import SafetyOptions, SafetyStage
    from shared.models.provider import clip_factory, model_factory
    from shared.models.registry import preset
    from shared.stage_plugins import load_stage, parse_stage_options

    builtin = [s for s in args.stages if s in STAGE_NAMES]
    if builtin != [s for s in STAGE_NAMES if s in builtin] or len(set(args.stages)) != len(args.stages):
        raise ValueError(f"--stages: each stage once, winnow's own in pipeline order ({' '.join(STAGE_NAMES)}); "
                         f"got {' '.join(args.stages)}")
    plugin_options = parse_stage_options(getattr(args, "stage_option", None) or [])
    strays = sorted(set(plugin_options) - set(args.stages))
    if strays:
        raise ValueError(f"--stage_option for stage(s) not in --stages: {', '.join(strays)}")
    stages = []
    model = lambda kind: model_factory(kind, args.model_preset, args.triton_url)  # noqa: E731
    for name in args.stages:
        if name == "download":
            stages.append(DownloadStage(download_options(args)))
        elif name == "safety":
            stages.append(SafetyStage(model("text_toxicity"), model("image_nsfw"), SafetyOptions(
                toxicity_threshold=preset("text_toxicity", args.model_preset).threshold,
                nsfw_threshold=preset("image_nsfw", args.model_preset).threshold)))
        elif name == "dedup":
            stages.append(DedupStage(model("near_duplicate"), DedupOptions(eval_index_dir=args.eval_index)))
        elif name == "blur":
            stages.append(BlurStage(model("face_detector")))
        elif name == "embed":
            if not args.clip_model:
                if args.stages != list(STAGE_NAMES):
                    raise ValueError("the embed stage needs at least one --clip_model KEY=ARCH[:CHECKPOINT]")
            else:
                clips = [parse_clip_model(spec) for spec in args.clip_model]
                stages.append(EmbedStage({key: clip_factory(arch, pretrained, args.triton_url, f"clip_{key}")
                                          for key, arch, pretrained in clips}))
        else:
            stages.append(load_stage(name, plugin_options.get(name)))
    return stages


@contextlib.contextmanager
def example_pool(args: argparse.Namespace) -> Iterator[str]:
    """The pool to run: the user's, or the built-in example served from loopback for this run."""
    if not args.example:
        yield args.pool
        return
    from services.example import ExampleServer, build_example_pool

    workdir = Path(tempfile.mkdtemp(prefix="winnow-example-"))
    (workdir / "www").mkdir(parents=True, exist_ok=True)
    server = ExampleServer(workdir / "www")
    pool = build_example_pool(workdir, server.base_url)
    # The example server is on loopback; allow exactly it, for this run only.
    args.allow_networks = [*args.allow_networks, "127.0.0.1/32"]
    args.samples_per_shard = min(args.samples_per_shard, 32)
    with server:
        yield str(pool)


@dataclass
class RunResult:
    manifest: JobManifest
    totals: list[StageTotals]
    dead_letters: list[DeadLetter]


def run_pipeline(manifest: JobManifest, stages: list[Stage], *, workers_per_stage: int = 2, partitions: int = 4,
                 max_attempts: int = 3, show_progress: bool = True, console: Console | None = None) -> RunResult:
    """Run ``stages`` in order over the job's pool slices; returns per-stage totals.

    With one partition and one worker per stage, every stage sees the shards in order, so
    order-dependent decisions (which of two duplicates is kept) are reproducible.
    """
    bus = InProcessBus(default_partitions=partitions)
    input_topics = [shards_topic(POOL_STAGE)] + [shards_topic(s.name) for s in stages[:-1]]
    output_topics = [shards_topic(s.name) for s in stages]
    dead_letter_topics = [f"{t}.dlq" for t in input_topics]
    bus.ensure_topics(input_topics + output_topics + dead_letter_topics)
    observer = bus.consumer(output_topics + dead_letter_topics, "winnow-run")
    publish_pool(bus, manifest, input_topics[0])

    workers: list[ShardWorker] = []
    threads: list[threading.Thread] = []
    for stage, source, sink in zip(stages, input_topics, output_topics):
        stage.setup()
        for index in range(workers_per_stage):
            worker = ShardWorker(bus, stage.process, stage=stage.name, input_topic=source, output_topic=sink,
                                 group_id=stage.name, max_attempts=max_attempts, retry_backoff_s=0.5)
            workers.append(worker)
            threads.append(threading.Thread(target=worker.run, name=f"{stage.name}-{index}", daemon=True))
    for worker in workers:
        worker.open()
    for thread in threads:
        thread.start()

    dead_letters: list[DeadLetter] = []
    finished: set[int] = set()
    seen: dict[str, set[int]] = {topic: set() for topic in output_topics}
    columns = [TextColumn("[bold]{task.description:<12}"), BarColumn(), MofNCompleteColumn(), TextColumn("shards"),
               TextColumn("{task.fields[samples]:>8} samples {task.fields[rate]:>7.1f}/s"), TimeElapsedColumn()]
    started = time.monotonic()
    try:
        with Progress(*columns, console=console, disable=not show_progress) as progress:
            bars = {topic: progress.add_task(stage.name, total=manifest.shard_count, samples=0, rate=0.0)
                    for stage, topic in zip(stages, output_topics)}
            samples = dict.fromkeys(output_topics, 0)
            while len(finished) < manifest.shard_count:
                for message in observer.poll(timeout=0.5, max_messages=100):
                    if message.topic.endswith(".dlq"):
                        letter = DeadLetter.FromString(message.value)
                        dead_letters.append(letter)
                        finished.add(letter.ref.shard_id)
                    else:
                        ref = decode_ref(message.value)
                        shard_id = ref.shard_id
                        if shard_id not in seen[message.topic]:  # at-least-once: count each shard once
                            seen[message.topic].add(shard_id)
                            samples[message.topic] += ref.sample_count
                            # samples/s of each stage since the run began: what it has got through
                            progress.update(bars[message.topic], advance=1, samples=samples[message.topic],
                                            rate=samples[message.topic] / max(time.monotonic() - started, 1e-6))
                        if message.topic == output_topics[-1]:
                            finished.add(shard_id)
                    observer.commit(message)
    finally:
        for worker in workers:
            worker.stop()
        for thread in threads:
            thread.join()
        for stage in stages:
            stage.teardown()
        observer.close()
    totals = [stage_totals(manifest.job_root, stage.name) for stage in stages]
    return RunResult(manifest, totals, dead_letters)
