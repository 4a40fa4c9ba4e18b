"""``winnow run``: every stage in one process over the in-process bus, with local files.

The same stage objects and the same worker loop as the services; only the transport differs.
Stages are chained by topic: each consumes ``winnow.shards.<previous>`` and publishes
``winnow.shards.<itself>``. The run ends when every shard has left the last stage or a
dead-letter topic.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from shared.bus import InProcessBus
from shared.jobs import POOL_STAGE, JobManifest, StageTotals, publish_pool, stage_totals
from shared.messages import DeadLetter, decode_ref
from shared.service.worker import ShardWorker
from shared.stage import Stage
from shared.topics import shards_topic


@dataclass
class RunResult:
    manifest: JobManifest
    totals: list[StageTotals]
    dead_letters: list[DeadLetter]


def run_pipeline(manifest: JobManifest, stages: list[Stage], *, workers_per_stage: int = 2,
                 max_attempts: int = 3, show_progress: bool = True, console: Console | None = None) -> RunResult:
    """Run ``stages`` in order over the job's pool slices; returns per-stage totals."""
    bus = InProcessBus()
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
               TimeElapsedColumn()]
    try:
        with Progress(*columns, console=console, disable=not show_progress) as progress:
            bars = {topic: progress.add_task(stage.name, total=manifest.shard_count)
                    for stage, topic in zip(stages, output_topics)}
            while len(finished) < manifest.shard_count:
                for message in observer.poll(timeout=0.5, max_messages=100):
                    if message.topic.endswith(".dlq"):
                        letter = DeadLetter.FromString(message.value)
                        dead_letters.append(letter)
                        finished.add(letter.ref.shard_id)
                    else:
                        shard_id = decode_ref(message.value).shard_id
                        if shard_id not in seen[message.topic]:  # at-least-once: count each shard once
                            seen[message.topic].add(shard_id)
                            progress.advance(bars[message.topic])
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
