"""The embedded runner: stages chained over the in-process bus with the services' worker loop.

``winnow run`` and the trainer's pool download use it. The same stage objects and the same
worker loop as the services; only the transport differs. Stages are chained by topic: each
consumes ``winnow.shards.<previous>`` and publishes ``winnow.shards.<itself>``. The run ends when
every shard has left the last stage or a dead-letter topic.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from winnow.shared.bus import InProcessBus
from winnow.shared.jobs import POOL_STAGE, JobManifest, StageTotals, publish_refs, stage_totals
from winnow.shared.messages import DeadLetter, decode_ref
from winnow.shared.service.worker import ShardWorker
from winnow.shared.stage import POOL_COLUMNS, Stage, check_chain
from winnow.shared.topics import shards_topic


@dataclass
class RunResult:
    """What a run left: the job, each stage's totals, and the shards that were dead-lettered."""

    manifest: JobManifest
    totals: list[StageTotals]
    dead_letters: list[DeadLetter]


def run_pipeline(manifest: JobManifest, stages: list[Stage], *, workers_per_stage: int = 2, partitions: int = 4,
                 max_attempts: int = 3, show_progress: bool = True, console: Console | None = None,
                 available_columns: Iterable[str] = POOL_COLUMNS,
                 known_stages: Iterable[Stage | type[Stage]] = ()) -> RunResult:
    """Run ``stages`` in order over the job's pool slices; returns per-stage totals.

    Before any worker starts, the chain is checked (``winnow.shared.stage.check_chain``): each stage must
    find the ledger columns it reads among ``available_columns`` (those of what the first stage
    reads: a pool's by default) and the columns of the stages before it; ``known_stages`` may be
    named in the error as writers of a missing column.

    With one partition and one worker per stage, every stage sees the shards in order, so
    order-dependent decisions (which of two duplicates is kept) are reproducible.
    """
    check_chain(stages, available_columns, known=known_stages)
    bus = InProcessBus(default_partitions=partitions)
    input_topics = [shards_topic(POOL_STAGE)] + [shards_topic(s.name) for s in stages[:-1]]
    output_topics = [shards_topic(s.name) for s in stages]
    dead_letter_topics = [f"{t}.dlq" for t in input_topics]
    bus.ensure_topics(input_topics + output_topics + dead_letter_topics)
    observer = bus.consumer(output_topics + dead_letter_topics, "winnow-run")
    publish_refs(bus, input_topics[0], manifest.pool_refs())

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
