"""Reading a directory of shard metadata for the filters: only the columns a filter needs.

Two layouts are read the same way:

- DataComp's own metadata: ``{shard}.parquet`` (``uid``, ``text``, ``original_width``,
  ``original_height``, ``clip_b32_similarity_score``, ``clip_l14_similarity_score``, ...) beside
  ``{shard}.npz`` with the embeddings ``b32_img``, ``b32_txt``, ``l14_img``, ``l14_txt``; every row
  is a candidate.
- winnow's shard ledgers: the same columns plus ``status``; only rows whose status is
  ``success`` are candidates (the others are not in the shard's tar).

An ``.npz`` may hold one row per parquet row or one per candidate row; both line up with the
candidates here. Files are read in sorted order, rows in file order, several files at once.
"""

from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from winnow.shared import storage
from winnow.shared.shards import SUCCESS

log = logging.getLogger(__name__)

EMBEDDING_KEYS = ("b32_img", "b32_txt", "l14_img", "l14_txt")
_EMBEDDING_KEY = re.compile(r"\w+_(img|txt)")  # winnow's embed stage names them after the model key
STATUS_COLUMN = "status"


class MetadataError(ValueError):
    """The metadata directory cannot be read as the filter needs: missing files or columns."""


@dataclass
class Metadata:
    """The candidate rows of a metadata directory: a table of the requested columns and the
    requested embeddings, row for row."""

    table: pa.Table
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    rows_read: int = 0  # all rows of the files, candidates or not

    def __len__(self) -> int:
        return self.table.num_rows

    def column(self, name: str) -> pa.ChunkedArray:
        return self.table.column(name)


def parquet_files(metadata_dir: str) -> list[str]:
    """The ``*.parquet`` files directly in ``metadata_dir``, sorted."""
    files = [f for f in storage.glob(storage.join(metadata_dir, "*.parquet"))
             if not os.path.basename(f).startswith(".")]
    if not files:
        raise MetadataError(f"no .parquet files in {metadata_dir}")
    return files


def _read_one(uri: str, columns: Sequence[str], embedding_keys: Sequence[str]) -> tuple[pa.Table, dict, int]:
    fs, path = storage.filesystem(uri)
    try:
        schema = pq.read_schema(path, filesystem=fs)
    except (pa.ArrowInvalid, OSError) as exc:
        raise MetadataError(f"unreadable parquet {uri}: {exc}") from exc
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise MetadataError(f"{uri} lacks column(s) {missing} (it has {schema.names})")
    has_status = STATUS_COLUMN in schema.names
    wanted = list(dict.fromkeys([*columns, *([STATUS_COLUMN] if has_status else [])]))
    try:
        table = pq.read_table(path, columns=wanted, filesystem=fs)
    except (pa.ArrowInvalid, OSError) as exc:
        raise MetadataError(f"unreadable parquet {uri}: {exc}") from exc
    total = table.num_rows
    mask = None
    if has_status:
        mask = pc.fill_null(pc.equal(table.column(STATUS_COLUMN), SUCCESS), False)
        table = table.filter(mask)
        if STATUS_COLUMN not in columns:
            table = table.drop_columns([STATUS_COLUMN])
    embeddings = {}
    if embedding_keys:
        npz_uri = uri[: -len(".parquet")] + ".npz"
        if not storage.exists(npz_uri):
            raise MetadataError(f"{npz_uri} is missing (the filter needs embeddings {list(embedding_keys)})")
        with np.load(io.BytesIO(storage.read_bytes(npz_uri)), allow_pickle=False) as npz:
            for key in embedding_keys:
                if key not in npz.files:
                    raise MetadataError(f"{npz_uri} has no array {key!r} (it has {npz.files})")
                array = npz[key]
                if len(array) == total and mask is not None:
                    array = array[mask.to_numpy(zero_copy_only=False)]
                elif len(array) != table.num_rows:
                    raise MetadataError(f"{npz_uri}[{key}] has {len(array)} rows; its parquet has {total} rows "
                                        f"and {table.num_rows} candidates")
                embeddings[key] = array
    return table, embeddings, total


def load_metadata(metadata_dir: str, columns: Iterable[str], *, embedding_keys: Sequence[str] = (),
                  num_workers: int | None = None) -> Metadata:
    """Read ``columns`` (and ``embedding_keys`` from the ``.npz`` files) of every candidate row."""
    columns = list(dict.fromkeys(columns))
    unknown = [k for k in embedding_keys if k not in EMBEDDING_KEYS and not _EMBEDDING_KEY.fullmatch(k)]
    if unknown:
        raise ValueError(f"embedding keys are MODEL_img or MODEL_txt (e.g. {', '.join(EMBEDDING_KEYS)}), got {unknown}")
    files = parquet_files(metadata_dir)
    workers = max(1, min(num_workers or (os.cpu_count() or 1), len(files)))
    if workers == 1:
        parts = [_read_one(f, columns, embedding_keys) for f in files]
    else:
        with ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(lambda f: _read_one(f, columns, embedding_keys), files))
    table = pa.concat_tables([p[0] for p in parts], promote_options="permissive")
    embeddings = {k: np.concatenate([p[1][k] for p in parts]) for k in embedding_keys}
    rows_read = sum(p[2] for p in parts)
    log.info("read %d candidate rows of %d in %d files from %s", table.num_rows, rows_read, len(files), metadata_dir)
    return Metadata(table=table, embeddings=embeddings, files=files, rows_read=rows_read)
