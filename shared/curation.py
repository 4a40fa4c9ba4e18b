"""Stages that judge each kept sample of a shard: keep it (perhaps changed) or drop it, with a reason.

A ``SampleStage`` reads the previous stage's ledger and, in the same order, the images of its
kept samples from the tar the ledger names (its image source: the downloader's, or the shards a
user brought), hands the kept samples to ``judge`` in batches, and writes its own ledger: every
row, with the new columns, and the dropped ones with ``status=dropped``, the reason and the
scores that decided it, plus its sidecars and ``_stats.json``. It writes no tar: its ledger names
the same image source. Only a stage that changes images (``writes_images``: the blur stage when
told to keep blurred images at rest) writes a tar of its kept samples and becomes the source.
Rows an earlier stage already failed or dropped are carried along unchanged, so the last ledger
answers "why is this sample gone?" for every uid.

Each shard's ``_stats.json`` records where the stage's time went (``timings``: reading the
ledger and tar, decoding images, in ``judge`` outside decoding — the models —, and writing).
"""

from __future__ import annotations

import json
import time
from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pyarrow as pa

from winnow.shared.image_decode import decode_rgb
from winnow.shared.messages import ShardRef
from winnow.shared.models.base import ImageNeed
from winnow.shared.shards import (DROPPED, IMAGE_EXTENSIONS, SUCCESS, ImageSource, ShardFormatError, ShardStats,
                           ShardWriter, image_source, iter_tar_samples, read_table)
from winnow.shared.stage import ShardStage


class Timings:
    """Seconds a stage spent on one shard, by kind of work (``_stats.json``'s ``timings``)."""

    KINDS = ("read_s", "decode_s", "model_s", "write_s")

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(self.KINDS, 0.0)

    def add(self, kind: str, since: float) -> None:
        """Count the time from ``since`` (a ``time.perf_counter()``) to now as ``kind``."""
        self.seconds[kind] += time.perf_counter() - since

    def to_json(self) -> dict[str, float]:
        return {kind: round(value, 4) for kind, value in self.seconds.items()}


@dataclass
class Sample:
    """A kept sample on its way through a stage: its ledger row and its tar members."""

    row: dict[str, Any]
    files: dict[str, bytes]
    timings: Timings | None = None
    need: ImageNeed | None = None  # what the stage's models need of the image (None: all of it)

    @property
    def image_extension(self) -> str:
        for extension in IMAGE_EXTENSIONS:
            if extension in self.files:
                return extension
        raise ShardFormatError(f"sample {self.row.get('key')} has no image in the tar")

    @cached_property
    def image(self) -> np.ndarray:
        """The image as uint8 RGB (H, W, 3): decoded once, at a reduced JPEG scale where the stage's
        models need less than the stored size."""
        started = time.perf_counter()
        decoded = decode_rgb(self.files[self.image_extension], self.need)
        if self.timings is not None:
            self.timings.add("decode_s", started)
        return decoded

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


def iter_samples(table: pa.Table, source: ImageSource) -> Iterator[tuple[dict[str, Any], dict[str, bytes] | None]]:
    """Every ledger row (``table``) in order, with its members from the image source's tar when it
    is a kept sample. The tar may hold more samples than the ledger keeps (an earlier stage
    dropped them): those are passed over; it must hold the kept ones in ledger order."""
    members = iter_tar_samples(source.prefix)
    for row in table.to_pylist():
        if row["status"] != SUCCESS:
            yield row, None
            continue
        for key, files in members:
            if key == row["key"]:
                break
        else:
            raise ShardFormatError(f"{source.prefix}.tar has no sample {row['key']} after the ones before it "
                                   f"in the ledger (missing, or out of the ledger's order)")
        yield row, files


class StageContractError(ValueError):
    """A stage broke what it declared: a missing input column, an undeclared output column or reason."""


class SampleStage(ShardStage):
    """Subclasses implement ``judge(samples) -> verdicts`` and may add sidecar files.

    A stage may declare its contract (plugins must): ``input_columns`` it reads from the ledger,
    ``output_columns`` its verdicts add, and the ``drop_reasons`` it gives. The columns are checked
    for the whole chain before a run starts (``winnow.shared.stage.check_chain``); and, when declared, all
    three are checked on every shard: a missing input column or an undeclared column or reason
    fails the shard (retried, then dead-lettered) instead of writing a ledger nobody can interpret.
    """

    batch_size: int = 64
    #: True for a stage that changes images (``Verdict.image``): it writes a tar of its kept samples.
    writes_images: bool = False
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

    def image_need(self) -> ImageNeed | None:
        """What this stage's models need of each image (``ImageNeed.of_all`` of their ``image_need``),
        after ``setup``; None decodes every image at its stored size."""
        return None

    def output_image_source(self, source: ImageSource) -> ImageSource | None:
        """The image source this stage's ledger names: the one it read, unless it writes its own tar."""
        return None if self.writes_images else source

    def process_shard(self, ref: ShardRef, prefix: str) -> ShardStats:
        timings = Timings()
        started = time.perf_counter()
        table = read_table(ref.uri)
        source = image_source(ref.uri, table)
        if self.source_check is not None:
            self.source_check(f"{source.prefix}.tar", "the ledger's image source")
        if self.input_columns is not None:
            missing = [c for c in self.input_columns if c not in table.column_names]
            if missing:
                raise StageContractError(f"stage {self.name} reads column(s) {missing}, which {ref.uri}.parquet lacks "
                                         f"(run the stages that write them first)")
        timings.add("read_s", started)
        writer = ShardWriter(prefix, stage=self.name, job_id=ref.job_id, shard_id=ref.shard_id,
                             extra_schema=table.schema, members="tar" if self.writes_images else "none",
                             image_source=self.output_image_source(source), images_blurred=self.writes_images)
        try:
            shard: dict[str, Any] = {"ref": ref, "timings": timings, "image_source": source}
            pending: list[tuple[dict[str, Any], dict[str, bytes] | None]] = []
            kept_in_batch = 0
            samples = iter_samples(table, source)
            while True:
                started = time.perf_counter()
                item = next(samples, None)
                timings.add("read_s", started)
                if item is None:
                    break
                pending.append(item)
                kept_in_batch += item[1] is not None
                if kept_in_batch >= self.batch_size:
                    self._flush(pending, writer, shard)
                    pending, kept_in_batch = [], 0
            self._flush(pending, writer, shard)
            self.finish_shard(shard)
            thresholds = self.thresholds()
            started = time.perf_counter()
            sidecars = self.sidecars(writer.rows, shard)
            # The marker's own write is not counted: the timings are in it.
            timings.add("write_s", started)
            return writer.close(sidecars=sidecars, timings=timings.to_json(),
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
        timings: Timings = shard["timings"]
        # A stage that writes images keeps them at their stored size.
        need = None if self.writes_images else self.image_need()
        samples = [Sample(row, files, timings, need) for row, files in pending if files is not None]
        started = time.perf_counter()
        decoding_before = timings.seconds["decode_s"]
        verdicts = iter(self.judge(samples, shard) if samples else [])
        # judge's time less the decoding it caused is the models' (and the stage's own logic).
        timings.seconds["model_s"] += time.perf_counter() - started - (timings.seconds["decode_s"] - decoding_before)
        started = time.perf_counter()
        for row, files in pending:
            if files is None:
                writer.carry(row)
                continue
            verdict = next(verdicts)
            self._check_verdict(verdict)
            updated = {**row, **verdict.columns}
            if verdict.image is not None and not self.writes_images:
                raise StageContractError(f"stage {self.name} replaced an image; a stage that changes images "
                                         f"declares writes_images = True (it then writes a tar)")
            if verdict.keep:
                writer.add(updated, self._kept_files(updated, files, verdict) if self.writes_images else None)
            else:
                writer.add({**updated, "status": DROPPED, "reason": verdict.reason,
                            "error_message": verdict.message, "dropped_by": self.name})
        timings.add("write_s", started)

    @staticmethod
    def _kept_files(row: dict[str, Any], files: dict[str, bytes], verdict: Verdict) -> dict[str, bytes]:
        files = dict(files)
        if verdict.image is not None:
            files[Sample(row, files).image_extension] = verdict.image
        if "json" in files:
            files["json"] = json.dumps(row, default=str, ensure_ascii=False, sort_keys=True).encode()
        return files
