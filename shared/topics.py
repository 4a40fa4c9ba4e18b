"""Topic names: every stage publishes its finished shards to ``winnow.shards.<stage>``."""

PREFIX = "winnow.shards"
#: The topic of crawl-file references the extractor consumes (``winnow extract --submit``).
CRAWL_TOPIC = "winnow.crawl"
#: Partitions of every shard topic; no stage runs more replicas than this.
TOPIC_PARTITIONS = 8


def shards_topic(stage: str) -> str:
    """The topic of ShardRefs that ``stage`` has finished (``pool`` for submitted pool slices)."""
    return f"{PREFIX}.{stage}"
