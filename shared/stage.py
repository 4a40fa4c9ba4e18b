"""The stage contract: a plain object that turns one shard into the next, knowing no transport.

``__init__(config)`` is cheap; ``setup()`` loads models and opens clients; ``process(ref)``
handles one shard and returns the reference to what it wrote; ``teardown()`` releases. The
service shell (gRPC + bus worker) and ``winnow run`` call the very same object.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from shared import storage
from shared.messages import ShardRef, make_ref
from shared.service.metrics import record_shard_stats
from shared.shards import ShardStats, is_complete, read_stats, shard_prefix


class Stage(ABC):
    """A stage writes ``{job_root}/{name}/{shard:08d}.*`` for every shard it is given."""

    name: str = "stage"
    #: How a bus message's ``uri`` is used ("read" or "write"), and whether the stage writes under
    #: its ``job_root``: the service checks both against its roots before ``process`` (shared.access).
    message_uri_access: str = "read"
    writes_job_root: bool = True
    #: Checks a location the stage found *inside* what it read (a ledger's image source) before it
    #: reads there: ``check(uri, what)`` raises ``AccessDenied`` outside the service's read roots.
    #: The service sets it (shared.access); None trusts the files, as ``winnow run`` does.
    source_check: Callable[[str, str], object] | None = None

    def setup(self) -> None:
        """Load models, open clients. Called once before the first ``process``."""

    def teardown(self) -> None:
        """Release what ``setup`` took."""

    def output_prefix(self, ref: ShardRef) -> str:
        return shard_prefix(storage.join(ref.job_root, self.name), ref.shard_id)

    def process(self, ref: ShardRef) -> ShardRef:
        """Process one shard, or return the finished one when its completion marker exists."""
        prefix = self.output_prefix(ref)
        if is_complete(prefix):
            stats = read_stats(prefix)
        else:
            stats = self.process_shard(ref, prefix)
            record_shard_stats(stats)
        return make_ref(job_id=ref.job_id, shard_id=ref.shard_id, stage=self.name, uri=prefix,
                        sample_count=stats.count, job_root=ref.job_root, shard_count=ref.shard_count)

    @abstractmethod
    def process_shard(self, ref: ShardRef, prefix: str) -> ShardStats:
        """Write the shard at ``prefix`` (tar, parquet, then stats last) and return its stats."""
