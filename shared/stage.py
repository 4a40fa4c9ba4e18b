"""The stage contract: a plain object that turns a reference into the next one, knowing no transport.

Every stage has a ``name``, ``setup()`` (load models, open clients), ``process(ref)`` and
``teardown()``; the service shell (gRPC + bus worker) and ``winnow run`` call the very same
object. Two kinds fit the two shapes of work:

- a :class:`ShardStage` handles one shard at a time: it implements ``process_shard(ref, prefix)``
  and ``process`` skips a shard whose completion marker exists. It declares the ledger columns it
  reads (``input_columns``) and adds (``output_columns``), so :func:`check_chain` can tell before a
  run starts that every stage will find what it reads.
- a :class:`JobStage` handles a whole job (the filter and resharder, the trainer, the evaluator):
  it implements ``process(ref)`` and decides for itself what a message of the job means.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence

from winnow.shared import storage
from winnow.shared.messages import ShardRef, make_ref
from winnow.shared.service.metrics import record_shard_stats
from winnow.shared.shards import ShardStats, is_complete, read_stats, shard_prefix

#: The columns a job's pool slices have (``prepare_job``): what the first stage of a run can read.
POOL_COLUMNS = ("uid", "url", "text")


class Stage(ABC):
    """What the worker and the runner call: ``setup``, ``process`` per message, ``teardown``."""

    name: str = "stage"
    #: How a bus message's ``uri`` is used ("read" or "write"), and whether the stage writes under
    #: its ``job_root``: the service checks both against its roots before ``process`` (winnow.shared.access).
    message_uri_access: str = "read"
    writes_job_root: bool = True
    #: Checks a location the stage found *inside* what it read (a ledger's image source) before it
    #: reads there: ``check(uri, what)`` raises ``AccessDenied`` outside the service's read roots.
    #: The service sets it (winnow.shared.access); None trusts the files, as ``winnow run`` does.
    source_check: Callable[[str, str], object] | None = None

    def setup(self) -> None:
        """Load models, open clients. Called once before the first ``process``."""

    def teardown(self) -> None:
        """Release what ``setup`` took."""

    @abstractmethod
    def process(self, ref: ShardRef) -> ShardRef | None:
        """Handle one message's reference; the reference to publish, or None for nothing."""


class ShardStage(Stage):
    """A stage writes ``{job_root}/{name}/{shard:08d}.*`` for every shard it is given.

    ``input_columns`` are the ledger columns it reads and ``output_columns`` those it adds (None:
    not declared, and not checked); a ledger carries every column of the one before it.
    """

    input_columns: tuple[str, ...] | None = None
    output_columns: tuple[str, ...] | None = None

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


class JobStage(Stage):
    """A stage that works on a whole job (or a run): ``process(ref)`` is all it implements.

    Its messages are still one per shard or run, delivered at least once: ``process`` returns
    None for those that publish nothing, and makes a repeated message cheap (its own marker).
    """


class StageChainError(ValueError):
    """A stage of a run reads a ledger column that no stage before it writes."""


def check_chain(stages: Sequence[Stage], available_columns: Iterable[str] = POOL_COLUMNS, *,
                known: Iterable[Stage | type[Stage]] = ()) -> None:
    """Check, before a run starts, that each per-shard stage finds the columns it declares it reads.

    ``available_columns`` are those of what the first stage reads (default: a pool's, for a run
    that starts with the downloader; a run over existing shards passes their ledger's). ``known``
    are stages outside the chain that the error may name as writers of a missing column.
    Undeclared columns (None) are not checked here; every shard still checks its own.
    """
    available = set(available_columns)
    for index, stage in enumerate(stages):
        reads = getattr(stage, "input_columns", None)
        missing = [column for column in reads or () if column not in available]
        if missing:
            column = missing[0]
            later = [s.name for s in stages[index + 1:] if column in (getattr(s, "output_columns", None) or ())]
            others = [s.name for s in known if column in (getattr(s, "output_columns", None) or ())]
            if later:
                hint = f"{later[0]} writes it but runs after {stage.name}: put {stage.name} after {later[0]}"
            elif others:
                hint = f"{others[0]} writes it: run {others[0]} before {stage.name}"
            else:
                hint = "no stage writes it"
            raise StageChainError(
                f"stage {stage.name} reads ledger column(s) {missing}, which no stage before it writes "
                f"(chain: {' -> '.join(s.name for s in stages)}; {hint})")
        available.update(getattr(stage, "output_columns", None) or ())
