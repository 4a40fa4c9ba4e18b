"""Stages that judge each kept sample of a shard: keep it (perhaps changed) or drop it, with a reason.

A ``SampleStage`` reads the previous stage's shard (ledger + tar) in order, hands the kept
samples to ``judge`` in batches, and writes a new shard: kept samples (with any new columns and
replaced image) into the tar, dropped ones as ledger rows with ``status=dropped``, the reason
and the scores that decided it. Rows an earlier stage already failed or dropped are carried
along unchanged, so the last ledger answers "why is this sample gone?" for every uid.
"""

from __future__ import annotations

import io
import json
from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image

from shared.messages import ShardRef
from shared.shards import (DROPPED, IMAGE_EXTENSIONS, SUCCESS, ShardFormatError, ShardStats, ShardWriter,
                           iter_tar_samples, read_table)
from shared.stage import Stage


@dataclass
class Sample:
    """A kept sample on its way through a stage: its ledger row and its tar members."""

    row: dict[str, Any]
    files: dict[str, bytes]

    @property
    def image_extension(self) -> str:
        for extension in IMAGE_EXTENSIONS:
            if extension in self.files:
                return extension
        raise ShardFormatError(f"sample {self.row.get('key')} has no image in the tar")

    @cached_property
    def image(self) -> np.ndarray:
        """The image as uint8 RGB (H, W, 3)."""
        with Image.open(io.BytesIO(self.files[self.image_extension])) as image:
            return np.asarray(image.convert("RGB"))

    @property
    def text(self) -> str:
        return self.row.get("text") or ""


@dataclass
class Verdict:
    """What a stage decided for one sample."""

    keep: bool
    reason: str | None = None  # machine-readable, for dropped samples
    message: str | None = None
    columns: dict[str, Any] = field(default_factory=dict)  # scores and other new ledger columns
    image: bytes | None = None  # a replacement image in the sample's format (e.g. blurred)


def iter_samples(ref: ShardRef, table: pa.Table) -> Iterator[tuple[dict[str, Any], dict[str, bytes] | None]]:
    """Every ledger row of the shard (``table``, its parquet) in order, with its tar members when it
    is a kept sample."""
    rows = table.to_pylist()
    members = iter_tar_samples(ref.uri)
    for row in rows:
        if row["status"] != SUCCESS:
            yield row, None
            continue
        key, files = next(members, (None, None))
        if key != row["key"]:
            raise ShardFormatError(f"{ref.uri}.tar is out of step with its parquet at key {row['key']} (found {key})")
        yield row, files


class StageContractError(ValueError):
    """A stage broke what it declared: a missing input column, an undeclared output column or reason."""


class SampleStage(Stage):
    """Subclasses implement ``judge(samples) -> verdicts`` and may add sidecar files.

    A stage may declare its contract (plugins must): ``input_columns`` it reads from the ledger,
    ``output_columns`` its verdicts add, and the ``drop_reasons`` it gives. When declared, it is
    checked on every shard: a missing input column or an undeclared column or reason fails the
    shard (retried, then dead-lettered) instead of writing a ledger nobody can interpret.
    """

    batch_size: int = 64
    input_columns: tuple[str, ...] | None = None
    output_columns: tuple[str, ...] | None = None
    drop_reasons: tuple[str, ...] | None = None

    @abstractmethod
    def judge(self, samples: list[Sample], shard: dict[str, Any]) -> list[Verdict]:
        """One verdict per sample, in order. ``shard`` is scratch state for this shard alone
        (a stage object may work on several shards at once)."""

    def thresholds(self) -> dict[str, float]:
        """Score column -> the threshold this stage drops at, recorded in each shard's stats (for
        reports: where the cut fell)."""
        return {}

    def finish_shard(self, shard: dict[str, Any]) -> None:
        """Called once after the shard's last batch is judged and before its completion marker is
        written: make durable what judging it decided (dedup commits its claims here)."""

    def sidecars(self, rows: list[dict[str, Any]], shard: dict[str, Any]) -> dict[str, bytes]:
        """Extra files for the finished shard (extension -> bytes); rows are the whole ledger."""
        return {}

    def process_shard(self, ref: ShardRef, prefix: str) -> ShardStats:
        table = read_table(ref.uri)
        if self.input_columns is not None:
            missing = [c for c in self.input_columns if c not in table.column_names]
            if missing:
                raise StageContractError(f"stage {self.name} reads column(s) {missing}, which {ref.uri}.parquet lacks "
                                         f"(run the stages that write them first)")
        writer = ShardWriter(prefix, stage=self.name, job_id=ref.job_id, shard_id=ref.shard_id,
                             extra_schema=table.schema)
        try:
            shard: dict[str, Any] = {"ref": ref}
            pending: list[tuple[dict[str, Any], dict[str, bytes] | None]] = []
            kept_in_batch = 0
            for row, files in iter_samples(ref, table):
                pending.append((row, files))
                kept_in_batch += files is not None
                if kept_in_batch >= self.batch_size:
                    self._flush(pending, writer, shard)
                    pending, kept_in_batch = [], 0
            self._flush(pending, writer, shard)
            self.finish_shard(shard)
            thresholds = self.thresholds()
            return writer.close(sidecars=self.sidecars(writer.rows, shard),
                                **({"thresholds": thresholds} if thresholds else {}))
        except BaseException:
            writer.abort()
            raise

    def _check_verdict(self, verdict: Verdict) -> None:
        if self.output_columns is not None:
            undeclared = [c for c in verdict.columns if c not in self.output_columns]
            if undeclared:
                raise StageContractError(f"stage {self.name} wrote column(s) {undeclared}; it declares "
                                         f"output_columns {list(self.output_columns)}")
        if not verdict.keep and self.drop_reasons is not None and verdict.reason not in self.drop_reasons:
            raise StageContractError(f"stage {self.name} dropped a sample for {verdict.reason!r}; it declares "
                                     f"drop_reasons {list(self.drop_reasons)}")

    def _flush(self, pending: list[tuple[dict[str, Any], dict[str, bytes] | None]], writer: ShardWriter,
               shard: dict[str, Any]) -> None:
        samples = [Sample(row, files) for row, files in pending if files is not None]
        verdicts = iter(self.judge(samples, shard) if samples else [])
        for row, files in pending:
            if files is None:
                writer.carry(row)
                continue
            verdict = next(verdicts)
            self._check_verdict(verdict)
            updated = {**row, **verdict.columns}
            if verdict.keep:
                files = dict(files)
                if verdict.image is not None:
                    files[Sample(row, files).image_extension] = verdict.image
                if "json" in files:
                    files["json"] = json.dumps(updated, default=str, ensure_ascii=False, sort_keys=True).encode()
                writer.add(updated, files)
            else:
                writer.add({**updated, "status": DROPPED, "reason": verdict.reason,
                            "error_message": verdict.message, "dropped_by": self.name})
