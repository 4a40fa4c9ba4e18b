"""Topic names: every stage publishes its finished shards to ``winnow.shards.<stage>``."""

PREFIX = "winnow.shards"


def shards_topic(stage: str) -> str:
    """The topic of ShardRefs that ``stage`` has finished (``pool`` for submitted pool slices)."""
    return f"{PREFIX}.{stage}"
