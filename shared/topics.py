"""Topic names: every stage publishes its finished shards to ``winnow.shards.<stage>``."""

PREFIX = "winnow.shards"
#: The per-shard stages in the order a job's shards pass them; their folders and topics carry these names.
CURATION_STAGES = ("downloader", "safety", "dedup", "blur", "embed")
#: The topic of crawl-file references the extractor consumes (``winnow extract --submit``).
CRAWL_TOPIC = "winnow.crawl"
#: Partitions of every shard topic; no stage runs more replicas than this.
TOPIC_PARTITIONS = 8


def shards_topic(stage: str) -> str:
    """The topic of ShardRefs that ``stage`` has finished (``pool`` for submitted pool slices)."""
    return f"{PREFIX}.{stage}"
