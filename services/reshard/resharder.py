"""The resharder: copy the samples a subset names out of input shards into new shards.

As DataComp's ``resharder.py``: a sample whose uid occurs k times in the subset is written k
times (the subset is how a filter upsamples); an optional shuffle buffer mixes the stream;
faces can be blurred on the way, from the ``face_bboxes`` column. Here:

- Input shards are ``{name}.parquet`` ledgers with ``{name}_stats.json``: a winnow stage's (its
  ledger names the tar that holds its images, usually the downloader's) or img2dataset's (the tar
  beside it). A shard without its completion marker is skipped. The parquet says which samples
  are kept (rows with status ``success``, or every row when there is no status), their uids and
  their metadata; a tar sample the parquet does not list is skipped and counted.
- Faces: a winnow ledger says whether its images are blurred; when they are not, the faces in
  ``face_bboxes`` are blurred as the samples are written (``blur_faces=None``, the default).
  ``blur_faces=True`` blurs any input's ``face_bboxes`` not known to be blurred (DataComp's
  ``--apply-blur``, for img2dataset shards), ``False`` never blurs.
- Output shards are winnow shards (``winnow.shared.shards.ShardWriter``): ``{shard:08d}.tar`` with new
  img2dataset keys (so repeats get distinct keys), a parquet row per written sample carrying
  the input row's columns plus ``source_key``, and ``_stats.json`` last. Every shard holds
  ``shard_size`` samples except the last one of each worker.
- The plan is made first from the parquets alone: how many samples each input shard will
  yield, so workers know their output shard numbers in advance and the result is the same
  for the same inputs, subset, seed and worker count.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import random
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from winnow.shared.subset import SubsetIndex, load_subset, uids_from_hex
from winnow.shared.face_blur import blur_encoded
from winnow.shared import storage
from winnow.shared.shards import (
    CORE_SCHEMA,
    IMAGE_EXTENSIONS,
    IMAGES_METADATA,
    SUCCESS,
    ShardFormatError,
    ShardWriter,
    image_source,
    is_complete,
    iter_tar_samples,
    read_table,
    sample_key,
    shard_prefix,
)

log = logging.getLogger(__name__)

STAGE = "reshard"
FACE_BOXES = "face_bboxes"
PLAN_THREADS = 8  # parquets read at once while planning (object stores answer slowly, one by one)


@dataclass(frozen=True)
class ReshardConfig:
    input_dir: str
    output_dir: str
    subset_file: str
    shard_size: int = 10_000  # samples per output shard (DataComp's default)
    shuffle_buffer: int = 0  # samples held to shuffle the output order; 0 keeps input order
    seed: int = 0  # shuffle seed
    blur_faces: bool | None = None  # blur face_bboxes: None = where a winnow ledger says not yet blurred
    blur_quality: int = 95  # JPEG/WebP quality of re-encoded images
    num_workers: int = 1  # processes, each writing its own run of output shards
    overwrite: bool = False  # replace shards already in output_dir
    dry_run: bool = False  # plan only: count what would be written, touch nothing in output_dir

    def validate(self) -> None:
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be positive, got {self.shard_size}")
        if self.shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be >= 0, got {self.shuffle_buffer}")
        if self.num_workers < 1:
            raise ValueError(f"num_workers must be positive, got {self.num_workers}")
        if not 1 <= self.blur_quality <= 100:
            raise ValueError(f"blur_quality must be in [1, 100], got {self.blur_quality}")


@dataclass(frozen=True)
class InputShard:
    prefix: str
    expected: int  # samples this shard yields, repeats counted (from its parquet)


@dataclass(frozen=True)
class WorkerTask:
    worker: int
    shards: tuple[InputShard, ...]
    first_output_shard: int
    output_shards: int


@dataclass
class WorkerReport:
    worker: int
    samples_read: int = 0
    samples_written: int = 0
    blurred: int = 0
    not_in_parquet: int = 0
    shards_written: list[int] = field(default_factory=list)


@dataclass
class ReshardResult:
    input_shards: int
    skipped_incomplete: list[str]
    expected: int
    samples_read: int
    samples_written: int
    output_shards: int
    blurred: int
    not_in_parquet: int
    seconds: float


def input_shards(input_dir: str) -> tuple[list[str], list[str]]:
    """Prefixes of the finished input shards, sorted, and of the unfinished ones skipped."""
    found = {uri.rsplit(".", 1)[0] for pattern in ("*.tar", "*.parquet")
             for uri in storage.glob(storage.join(input_dir, pattern))}
    done, skipped = [], []
    for prefix in sorted(found):
        if is_complete(prefix) and storage.exists(f"{prefix}.parquet"):
            done.append(prefix)
        else:
            skipped.append(prefix)
    if skipped:
        log.warning("skipping %d input shards without a parquet or completion marker: %s", len(skipped),
                    ", ".join(skipped[:5]))
    return done, skipped


def _candidates(table):
    """The rows of a shard parquet whose samples are in its tar."""
    if "status" in table.column_names:
        return table.filter(pc.fill_null(pc.equal(table["status"], SUCCESS), False))
    return table


def expected_samples(prefix: str, index: SubsetIndex) -> int:
    """How many samples the shard yields: its candidates' occurrences in the subset."""
    fs, path = storage.filesystem(f"{prefix}.parquet")
    try:
        names = pq.read_schema(path, filesystem=fs).names
        columns = [c for c in ("uid", "status") if c in names]
        if "uid" not in columns:
            raise ShardFormatError(f"{prefix}.parquet has no uid column")
        table = _candidates(pq.read_table(path, columns=columns, filesystem=fs))
    except (pa.ArrowInvalid, OSError) as exc:
        raise ShardFormatError(f"unreadable shard parquet {prefix}.parquet: {exc}") from exc
    return int(index.counts(uids_from_hex(table["uid"])).sum()) if table.num_rows else 0


def plan(prefixes: list[str], index: SubsetIndex, *, shard_size: int, num_workers: int) -> list[WorkerTask]:
    """Split the input shards that yield samples into contiguous runs of about equal output,
    one per worker, each with its own range of output shard numbers."""
    with ThreadPoolExecutor(PLAN_THREADS) as pool:
        counts = list(pool.map(lambda p: expected_samples(p, index), prefixes))
    shards = [InputShard(p, n) for p, n in zip(prefixes, counts, strict=True)]
    shards = [s for s in shards if s.expected > 0]
    total = sum(s.expected for s in shards)
    if not shards:
        return []
    workers = min(num_workers, len(shards))
    per_worker = math.ceil(total / workers)
    groups: list[list[InputShard]] = [[]]
    running = 0
    for shard in shards:
        if groups[-1] and running >= per_worker * len(groups) and len(groups) < workers:
            groups.append([])
        groups[-1].append(shard)
        running += shard.expected
    tasks, next_shard = [], 0
    for worker, group in enumerate(groups):
        count = math.ceil(sum(s.expected for s in group) / shard_size)
        tasks.append(WorkerTask(worker, tuple(group), next_shard, count))
        next_shard += count
    return tasks


def shuffled(items: Iterable, buffer_size: int, rng: random.Random) -> Iterator:
    """A buffered shuffle (as webdataset's): hold ``buffer_size`` items, emit a random one per arrival."""
    if buffer_size <= 1:
        yield from items
        return
    buffer = []
    for item in items:
        if len(buffer) < buffer_size:
            buffer.append(item)
            continue
        i = rng.randrange(len(buffer))
        buffer[i], item = item, buffer[i]
        yield item
    rng.shuffle(buffer)
    yield from buffer


def _image_extension(files: dict[str, bytes]) -> str | None:
    return next((ext for ext in IMAGE_EXTENSIONS if ext in files), None)


class _Worker:
    """Reads one run of input shards and writes its run of output shards."""

    def __init__(self, config: ReshardConfig, task: WorkerTask, index: SubsetIndex) -> None:
        self.config = config
        self.task = task
        self.index = index
        self.report = WorkerReport(task.worker)

    def samples(self) -> Iterator[tuple[dict, dict[str, bytes]]]:
        """(parquet row, files) once per occurrence of the sample's uid in the subset."""
        for shard in self.task.shards:
            ledger = read_table(shard.prefix)
            images = image_source(shard.prefix, ledger)
            blur = self._blurs(images.blurred, IMAGES_METADATA in (ledger.schema.metadata or {}))
            table = _candidates(ledger)
            counts = self.index.counts(uids_from_hex(table["uid"])) if table.num_rows else np.zeros(0, np.int64)
            wanted = np.nonzero(counts)[0]
            rows = dict(zip(wanted.tolist(), table.take(wanted).to_pylist(), strict=True))
            by_key = {key: i for i, key in enumerate(table["key"].to_pylist())}
            listed = set(ledger["key"].to_pylist())  # the tar may hold samples a later stage dropped
            source = shard.prefix.rstrip("/").rsplit("/", 1)[-1]
            for key, files in iter_tar_samples(images.prefix):
                row_index = by_key.get(key)
                if row_index is None:
                    self.report.not_in_parquet += key not in listed
                    continue
                self.report.samples_read += 1
                row = rows.get(row_index)
                if row is None:
                    continue
                files = self._blur(row, files) if blur else files
                for repeat in range(int(counts[row_index])):
                    yield {**row, "repeat": repeat, "__source__": source}, files

    def _blurs(self, already_blurred: bool, winnow_ledger: bool) -> bool:
        """Whether this input shard's faces are blurred on the way out."""
        if already_blurred or self.config.blur_faces is False:
            return False
        return self.config.blur_faces or winnow_ledger

    def _blur(self, row: dict, files: dict[str, bytes]) -> dict[str, bytes]:
        boxes = row.get(FACE_BOXES)
        ext = _image_extension(files)
        if not boxes or ext is None:
            return files
        blurred = blur_encoded(files[ext], ext, boxes, quality=self.config.blur_quality)
        if blurred is not files[ext]:
            self.report.blurred += 1
            files = {**files, ext: blurred}
        return files

    def run(self) -> WorkerReport:
        config, task = self.config, self.task
        stream = shuffled(self.samples(), config.shuffle_buffer, random.Random(config.seed * 1_000_003 + task.worker))
        shard_id = task.first_output_shard
        writer, index_in_shard = None, 0
        sources: set[str] = set()
        for row, files in stream:
            if writer is None:
                if shard_id >= task.first_output_shard + task.output_shards:
                    raise ShardFormatError(
                        f"worker {task.worker} has more samples than its parquets list; input shards changed "
                        "while resharding?")
                writer = self._open(shard_id)
                index_in_shard, sources = 0, set()
            out = self._output_row(row, sample_key(shard_id, index_in_shard, config.shard_size))
            writer.add(out, self._output_files(files, out))
            sources.add(row["__source__"])
            index_in_shard += 1
            self.report.samples_written += 1
            if index_in_shard == config.shard_size:
                self._close(writer, shard_id, sources)
                writer, shard_id = None, shard_id + 1
        if writer is not None:
            self._close(writer, shard_id, sources)
            shard_id += 1
        # Fewer samples than planned (a tar short of its parquet): empty shards keep the numbers contiguous.
        while shard_id < task.first_output_shard + task.output_shards:
            log.error("worker %d wrote fewer samples than its parquets list; shard %d is empty", task.worker, shard_id)
            self._close(self._open(shard_id), shard_id, set())
            shard_id += 1
        return self.report

    def _open(self, shard_id: int) -> ShardWriter:
        return ShardWriter(shard_prefix(self.config.output_dir, shard_id), stage=STAGE, job_id=STAGE, shard_id=shard_id)

    def _close(self, writer: ShardWriter, shard_id: int, sources: set[str]) -> None:
        writer.close(subset_file=self.config.subset_file, source_shards=sorted(sources))
        self.report.shards_written.append(shard_id)

    @staticmethod
    def _output_row(row: dict, key: str) -> dict:
        out = {name: row.get(name) for name in CORE_SCHEMA.names if name in row}
        out.update({k: v for k, v in row.items() if k not in CORE_SCHEMA.names and not k.startswith("__")})
        out.update(key=key, source_key=row["key"], status=SUCCESS, reason=None, error_message=None, dropped_by=None)
        return out

    @staticmethod
    def _output_files(files: dict[str, bytes], row: dict) -> dict[str, bytes]:
        """The sample's members, its ``.json`` updated with the final ledger row (the scores and
        columns the stages added after the image was stored)."""
        out = dict(files)
        if "json" in out:
            try:
                meta = json.loads(out["json"])
            except (json.JSONDecodeError, UnicodeDecodeError):
                meta = None
            if isinstance(meta, dict):
                meta.update(row)
                out["json"] = json.dumps(meta, default=str, ensure_ascii=False, sort_keys=True).encode("utf-8")
        return out


def _run_task(config: ReshardConfig, task: WorkerTask) -> WorkerReport:
    index = SubsetIndex(load_subset(config.subset_file))
    return _Worker(config, task, index).run()


def _clear_output(output_dir: str, overwrite: bool) -> None:
    existing = [u for pattern in ("*.tar", "*.parquet", "*_stats.json")
                for u in storage.glob(storage.join(output_dir, pattern))]
    if existing and not overwrite:
        raise ValueError(f"{output_dir} already holds shards; pass --overwrite to replace them")
    for uri in existing:
        storage.remove(uri)


def _write(config: ReshardConfig, tasks: list[WorkerTask], index: SubsetIndex) -> list[WorkerReport]:
    _clear_output(config.output_dir, config.overwrite)
    storage.makedirs(config.output_dir)
    if len(tasks) <= 1:
        return [_Worker(config, task, index).run() for task in tasks]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(len(tasks), mp_context=context) as pool:
        return list(pool.map(_run_task, [config] * len(tasks), tasks))


def reshard(config: ReshardConfig, *, check_source: Callable[[str, str], object] | None = None) -> ReshardResult:
    """Write the subset's samples from ``config.input_dir`` as new shards in ``config.output_dir``.

    ``check_source(uri, what)`` (a service's read roots) is asked about every tar the input
    ledgers name before anything is read from it.
    """
    config.validate()
    started = time.perf_counter()
    subset = load_subset(config.subset_file)
    index = SubsetIndex(subset)
    prefixes, skipped = input_shards(config.input_dir)
    if not prefixes:
        raise FileNotFoundError(f"no finished shards (a .parquet with its _stats.json) in {config.input_dir}")
    if check_source is not None:
        for prefix in prefixes:
            check_source(f"{image_source(prefix).prefix}.tar", f"the image source of {prefix}.parquet")
    tasks = plan(prefixes, index, shard_size=config.shard_size, num_workers=config.num_workers)
    reports = [] if config.dry_run else _write(config, tasks, index)
    expected = sum(s.expected for t in tasks for s in t.shards)
    result = ReshardResult(
        input_shards=len(prefixes), skipped_incomplete=skipped, expected=expected,
        samples_read=sum(r.samples_read for r in reports), samples_written=sum(r.samples_written for r in reports),
        output_shards=sum(t.output_shards for t in tasks), blurred=sum(r.blurred for r in reports),
        not_in_parquet=sum(r.not_in_parquet for r in reports), seconds=time.perf_counter() - started)
    if config.dry_run:
        log.info("dry run: %d samples would be written into %d shards", expected, result.output_shards)
    elif result.samples_written != expected:
        log.error("expected to write %d samples but wrote %d", expected, result.samples_written)
    if len(subset) and result.samples_written < len(subset):
        log.info("%d of the subset's %d entries were not in the input shards", len(subset) - result.samples_written,
                 len(subset))
    return result
