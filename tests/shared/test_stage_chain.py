"""The chain check: a run refuses, before it starts, a stage that reads a ledger column no stage
before it writes, and names the stage, the column and who would write it."""

from __future__ import annotations

import pytest

from winnow.shared.stage import POOL_COLUMNS, ShardStage, StageChainError, check_chain


class Declared(ShardStage):
    def __init__(self, name: str, reads: tuple[str, ...] | None, adds: tuple[str, ...] | None = ()) -> None:
        self.name, self.input_columns, self.output_columns = name, reads, adds

    def process_shard(self, ref, prefix):
        raise AssertionError("the chain check processes nothing")


DOWNLOAD = Declared("downloader", ("url",), ("key", "uid", "url", "text", "status", "sha256"))
DEDUP = Declared("dedup", ("uid", "sha256"), ("duplicate_of",))
AESTHETIC = Declared("aesthetic", ("text",), ("aesthetic_score",))


def test_a_chain_whose_stages_find_their_columns_passes():
    check_chain([DOWNLOAD, DEDUP, AESTHETIC, Declared("picky", ("aesthetic_score", "duplicate_of"))])


def test_a_column_nobody_writes_is_named_with_its_stage():
    with pytest.raises(StageChainError, match=r"stage picky reads ledger column\(s\) \['watermark'\].*"
                                              r"chain: downloader -> picky; no stage writes it"):
        check_chain([DOWNLOAD, Declared("picky", ("uid", "watermark"))])


def test_a_column_written_later_in_the_chain_says_to_reorder():
    with pytest.raises(StageChainError, match="aesthetic writes it but runs after picky: put picky after aesthetic"):
        check_chain([DOWNLOAD, Declared("picky", ("aesthetic_score",)), AESTHETIC])


def test_a_known_stage_outside_the_chain_is_named_as_the_writer():
    with pytest.raises(StageChainError, match=r"stage dedup reads ledger column\(s\) \['sha256'\].*"
                                              "downloader writes it: run downloader before dedup"):
        check_chain([DEDUP], POOL_COLUMNS, known=[AESTHETIC, DOWNLOAD])


def test_a_run_over_existing_ledgers_passes_their_columns():
    check_chain([DEDUP], ("key", "uid", "url", "text", "status", "sha256"))


def test_undeclared_columns_are_left_to_the_per_shard_check():
    check_chain([Declared("legacy", None, None), Declared("late", ("uid",))])
