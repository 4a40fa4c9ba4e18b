"""A job's layout in storage and its progress, read from the shards' completion markers.

    {job_root}/job.json                     the manifest, written once the pool is sliced
    {job_root}/pool/{shard:08d}.parquet     the pool, cut into shard-sized slices
    {job_root}/{stage}/{shard:08d}.tar|.parquet|_stats.json   each stage's shards

A job of shards one already has (img2dataset's or DataComp's) has no pool: its manifest lists the
input shards (``input_shards``), and its first stage, ``source``, writes a ledger per input shard
that names the input's own tar as its image source (``winnow.services.downloader.shards_import``).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field

from winnow.shared import storage
from winnow.shared.bus.base import Bus
from winnow.shared.messages import ShardRef, encode_ref, make_ref, message_key
from winnow.shared.shards import ShardStats, shard_prefix
from winnow.shared.topics import CURATION_STAGES

POOL_STAGE = "pool"
#: The ``stage`` of a ShardRef to an input shard of a job of shards one already has (its ``uri``:
#: the input's ``{name}`` without ``.tar``); the downloader imports it instead of downloading.
SHARDS_INPUT = "shards"
#: The folder (and stage name) of the ledgers made from such input shards, in place of the downloader's.
SOURCE_STAGE = "source"
MANIFEST = "job.json"


@dataclass(frozen=True)
class JobManifest:
    """What a submitted job is."""

    job_id: str
    job_root: str
    pool_uri: str
    shard_count: int
    sample_count: int
    samples_per_shard: int
    created: float
    # The options the job was made with (``winnow download``/``run`` record them), so a rerun
    # with other options can be refused and ``redownload`` can use the same ones.
    options: dict = field(default_factory=dict)
    shard_sizes: list = field(default_factory=list)  # set when a job was extended; else all full but the last
    # A job of shards one already has: the input shards' URIs without ``.tar``, one per shard id.
    input_shards: list = field(default_factory=list)

    @classmethod
    def load(cls, job_root: str) -> JobManifest:
        data = json.loads(storage.read_text(storage.join(job_root, MANIFEST)))
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    @staticmethod
    def exists(job_root: str) -> bool:
        return storage.exists(storage.join(job_root, MANIFEST))

    def save(self) -> None:
        storage.write_text(storage.join(self.job_root, MANIFEST), json.dumps(asdict(self), indent=1))

    def sizes(self) -> list[int]:
        """Samples in each pool slice."""
        if self.shard_sizes:
            return list(self.shard_sizes)
        return [min(self.samples_per_shard, self.sample_count - i * self.samples_per_shard)
                for i in range(self.shard_count)]

    def pool_refs(self) -> list[ShardRef]:
        """One ShardRef per pool slice, or per input shard of a job of shards: the first stage's work items."""
        counts = self.sizes()
        if self.input_shards:
            return [make_ref(job_id=self.job_id, shard_id=i, stage=SHARDS_INPUT, uri=uri, sample_count=n,
                             job_root=self.job_root, shard_count=self.shard_count)
                    for i, (uri, n) in enumerate(zip(self.input_shards, counts))]
        return [make_ref(job_id=self.job_id, shard_id=i, stage=POOL_STAGE,
                         uri=shard_prefix(storage.join(self.job_root, POOL_STAGE), i), sample_count=n,
                         job_root=self.job_root, shard_count=self.shard_count)
                for i, n in enumerate(counts)]

    @property
    def first_stage(self) -> str:
        """The stage that brings the job's images in: the downloader, or ``source`` for shards one had."""
        return SOURCE_STAGE if self.input_shards else CURATION_STAGES[0]


@dataclass
class StageTotals:
    stage: str
    shards_done: int = 0
    samples: int = 0
    kept: int = 0
    reasons: Counter = field(default_factory=Counter)

    def add(self, stats: ShardStats) -> None:
        self.shards_done += 1
        self.samples += stats.count
        self.kept += stats.successes
        self.reasons.update(stats.reasons)


def stage_totals(job_root: str, stage: str) -> StageTotals:
    """Sum the completion markers of one stage's shards."""
    totals = StageTotals(stage)
    for uri in storage.glob(storage.join(job_root, stage, "*_stats.json")):
        stats = ShardStats.from_json(json.loads(storage.read_text(uri)))
        totals.add(stats)
    return totals


def job_stages(job_root: str) -> list[str]:
    """Stages that have written at least one finished shard, in no particular order."""
    markers = storage.glob(storage.join(job_root, "*", "*_stats.json"))
    return sorted({m.rstrip("/").split("/")[-2] for m in markers})


def publish_refs(bus: Bus, topic: str, refs: list[ShardRef]) -> int:
    """Queue ``refs`` on ``topic`` (a job's pool slices, a crawl job's files), keyed as the workers expect;
    returns how many were sent."""
    bus.ensure_topics([topic])
    for ref in refs:
        bus.send(topic, message_key(ref), encode_ref(ref))
    return len(refs)
