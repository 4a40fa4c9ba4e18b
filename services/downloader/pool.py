"""Reading a pool of ``(uid, url, text)`` rows and cutting it into shard-sized slices.

Accepted inputs: parquet (a file or a directory of files; a DataComp pool parquet as it is),
CSV, TSV, JSON/JSONL and plain text (one URL a line). Columns are renamed to DataComp's
``url`` and ``text``; every other column rides along to the output. A missing ``uid`` is
generated as the 128-bit BLAKE2b hash of url and caption, in hex, so a resubmitted pool keeps
its uids.

Bad rows cost themselves, not the pool: a url, caption or uid that is not valid UTF-8 (a
``binary`` column, or a ``string`` column from a writer that does not validate) is passed on as
it is, and the downloader records that row as ``invalid_url``, ``invalid_caption`` or
``invalid_uid``. Invalid UTF-8 in another string column makes the pool unusable: one error names
the file, the column and the row. A uid that an earlier row of the pool already has is marked in
the slice (``DUPLICATE_OF_COLUMN``, the earlier row's index), and the downloader records it as
``duplicate_uid`` without fetching it. Only a pool's own uids are checked: a generated uid
repeats exactly when url and caption do, and img2dataset downloads such rows each time.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import time
import uuid

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from winnow.shared import storage
from winnow.shared.jobs import POOL_STAGE, JobManifest
from winnow.shared.messages import ShardRef
from winnow.shared.shards import ShardFormatError, shard_prefix

BASE_FORMATS = ("parquet", "csv", "tsv", "json", "jsonl", "txt")
# img2dataset's input formats: the text ones may be gzip-compressed (``csv.gz``, ...).
FORMATS = (*BASE_FORMATS, *(f"{f}.gz" for f in BASE_FORMATS if f != "parquet"))
_SUFFIXES = {"parquet": (".parquet", ".pq"), "csv": (".csv",), "tsv": (".tsv",), "jsonl": (".jsonl", ".ndjson"),
             "json": (".json",), "txt": (".txt",)}
DEFAULT_SAMPLES_PER_SHARD = 10_000
# In a pool slice only: the pool row that first had this row's uid (null for the first one). The
# downloader takes it out before writing its ledger.
DUPLICATE_OF_COLUMN = "_duplicate_of_row"
# The columns a row can do without: invalid UTF-8 there costs that row, not the pool.
ROW_COLUMNS = ("uid", "url", "text")


class PoolFormatError(ValueError):
    """The pool cannot be read as asked: unknown format, missing column, malformed file."""


def infer_format(uri: str) -> str:
    """The format a file name says (``pool.csv.gz`` is ``csv.gz``); a folder is read by its files' names."""
    lowered = uri.lower().rstrip("/")
    compressed = lowered.endswith(".gz")
    stem = lowered[:-3] if compressed else lowered
    for fmt, suffixes in _SUFFIXES.items():
        if stem.endswith(suffixes):
            if compressed and fmt == "parquet":
                break
            return f"{fmt}.gz" if compressed else fmt
    fs, path = storage.filesystem(uri)
    if fs.isdir(path):
        names = sorted(fs.find(path))
        for fmt in ("parquet", *FORMATS):
            if any(infer_format_of_name(n) == fmt for n in names):
                return fmt
        raise PoolFormatError(f"{uri} is a folder with no file of a known format ({', '.join(FORMATS)})")
    raise PoolFormatError(f"cannot tell the format of {uri!r}; pass input_format (one of {', '.join(FORMATS)})")


def infer_format_of_name(name: str) -> str | None:
    lowered = name.lower()
    compressed = lowered.endswith(".gz")
    stem = lowered[:-3] if compressed else lowered
    for fmt, suffixes in _SUFFIXES.items():
        if stem.endswith(suffixes) and not (compressed and fmt == "parquet"):
            return f"{fmt}.gz" if compressed else fmt
    return None


def _read_table(uri: str, fmt: str, url_col: str, caption_col: str | None) -> pa.Table:
    fs, path = storage.filesystem(uri)
    try:
        if fmt == "parquet":
            import pyarrow.dataset as pads  # heavy (pulls pandas in): only when a pool is read

            if fs.isdir(path):  # a folder of parquet files, e.g. an extracted job's pool/ (with its stats files)
                files = sorted(f for f in fs.find(path) if f.endswith(".parquet"))
                if not files:
                    raise PoolFormatError(f"{uri} holds no .parquet files")
                return pads.dataset(files, filesystem=fs, format="parquet").to_table()
            return pads.dataset(path, filesystem=fs, format="parquet").to_table()
        if fs.isdir(path):  # a folder of files of this format, read in name order (as img2dataset does)
            files = [f for f in sorted(fs.find(path)) if infer_format_of_name(f) == fmt]
            if not files:
                raise PoolFormatError(f"{uri} holds no {fmt} files")
            tables = [_read_table(fs.unstrip_protocol(f) if "://" in uri else f, fmt, url_col, caption_col)
                      for f in files]
            return pa.concat_tables(tables, promote_options="default")
        raw = fs.cat_file(path)
        if fmt.endswith(".gz"):
            try:
                raw = gzip.decompress(raw)
            except (OSError, EOFError) as exc:
                raise PoolFormatError(f"cannot read {uri} as {fmt}: not a complete gzip file ({exc})") from exc
            fmt = fmt[:-3]
        if fmt == "txt":
            urls = [line.strip() for line in raw.decode("utf-8", errors="replace").splitlines() if line.strip()]
            return pa.table({url_col: pa.array(urls, pa.string())})
        if fmt in ("csv", "tsv"):
            # Text columns are read as bytes and decoded leniently, so one row with invalid
            # UTF-8 does not lose the whole pool.
            header = raw.split(b"\n", 1)[0].decode("utf-8", errors="replace")
            names = [n.strip().strip('"') for n in header.split("," if fmt == "csv" else "\t")]
            binary = {n: pa.binary() for n in (url_col, caption_col) if n in names}
            table = pacsv.read_csv(
                io.BytesIO(raw),
                parse_options=pacsv.ParseOptions(delimiter="," if fmt == "csv" else "\t", newlines_in_values=True),
                convert_options=pacsv.ConvertOptions(column_types=binary, strings_can_be_null=True),
            )
            for name in binary:
                decoded = [None if v is None else v.decode("utf-8", errors="replace") for v in table[name].to_pylist()]
                table = table.set_column(table.column_names.index(name), name, pa.array(decoded, pa.string()))
            return table
        return pajson.read_json(io.BytesIO(raw))
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as exc:
        raise PoolFormatError(f"cannot read {uri} as {fmt}: {exc}") from exc


def _as_string(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """The column as strings, invalid UTF-8 left in place for the downloader to refuse per row."""
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        return pc.cast(column, options=pc.CastOptions(pa.string(), allow_invalid_utf8=True))
    return pc.cast(column, pa.string())


def first_invalid_utf8(column: pa.ChunkedArray) -> tuple[int, bytes] | None:
    """``(row, value)`` of the first value of a string column that is not valid UTF-8, or None."""
    try:
        column.validate(full=True)
        return None
    except pa.ArrowInvalid:
        pass
    values = pc.cast(column, pa.large_binary() if pa.types.is_large_string(column.type) else pa.binary())
    for row, value in enumerate(values.to_pylist()):
        if value is not None:
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                return row, value
    return None


def _refuse_invalid_utf8(uri: str, table: pa.Table, columns: list[str]) -> None:
    for name in columns:
        column = table[name]
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            found = first_invalid_utf8(column)
            if found is not None:
                raise PoolFormatError(f"cannot read {uri}: column {name!r}, row {found[0]}, is not valid UTF-8 "
                                      f"({found[1][:40]!r})")


def duplicate_rows(uids: pa.Array | pa.ChunkedArray) -> pa.Array | None:
    """For each row, the index of the earlier row with the same uid (null when none); None when no
    uid repeats."""
    first: dict[object, int] = {}
    earlier: list[int | None] = []
    for row, uid in enumerate(pc.cast(uids, pa.binary()).to_pylist()):
        if uid is not None and uid in first:
            earlier.append(first[uid])
        else:
            earlier.append(None)
            if uid is not None:
                first[uid] = row
    if all(e is None for e in earlier):
        return None
    return pa.array(earlier, pa.int64())


def generate_uid(url: str, text: str | None) -> str:
    return hashlib.blake2b(f"{url}\x00{text or ''}".encode(), digest_size=16).hexdigest()


def read_pool(uri: str, *, input_format: str = "", url_col: str = "url", caption_col: str | None = "text",
              max_samples: int = 0, keep_columns: tuple[str, ...] | None = None) -> pa.Table:
    """The pool as a table with ``uid``, ``url``, ``text`` first and the other columns after.

    ``keep_columns``: which other columns ride along (img2dataset's ``save_additional_columns``);
    None keeps every one (DataComp's flow). A listed column the pool lacks is an error.
    """
    return _read_pool(uri, input_format=input_format, url_col=url_col, caption_col=caption_col,
                      max_samples=max_samples, keep_columns=keep_columns)[0]


def _read_pool(uri: str, *, input_format: str, url_col: str, caption_col: str | None, max_samples: int,
               keep_columns: tuple[str, ...] | None) -> tuple[pa.Table, bool]:
    """``read_pool``'s table, and whether its uids are the pool's own (not generated)."""
    if not storage.exists(uri):
        raise FileNotFoundError(f"no pool at {uri}")
    fmt = input_format or infer_format(uri)
    if fmt not in FORMATS:
        raise PoolFormatError(f"input_format must be one of {FORMATS}, got {fmt!r}")
    table = _read_table(uri, fmt, url_col, caption_col)
    if max_samples:
        table = table.slice(0, max_samples)
    if url_col not in table.column_names:
        raise PoolFormatError(f"{uri} has no url column {url_col!r}; its columns are {table.column_names}")
    if caption_col and caption_col not in table.column_names:
        if caption_col == "text" and "caption" in table.column_names:
            caption_col = "caption"
        elif caption_col != "text":
            raise PoolFormatError(f"{uri} has no caption column {caption_col!r}; its columns are {table.column_names}")
    urls = _as_string(table[url_col])
    texts = (_as_string(table[caption_col]) if caption_col and caption_col in table.column_names
             else pa.nulls(len(table), pa.string()))
    if "uid" in table.column_names:
        uids = _as_string(table["uid"])
    else:
        uids = pa.array([generate_uid(u or "", t) for u, t in zip(urls.to_pylist(), texts.to_pylist())], pa.string())
    rest = [n for n in table.column_names if n not in {"uid", url_col, caption_col, "url", "text"}]
    if keep_columns is not None:
        missing = [n for n in keep_columns if n not in table.column_names and n != "uid"]  # uid: generated
        if missing:
            raise PoolFormatError(f"{uri} has no column {missing[0]!r} to save; its columns are {table.column_names}")
        rest = [n for n in keep_columns if n in rest]
    _refuse_invalid_utf8(uri, table, rest)
    return (pa.table([uids, urls, texts, *[table[n] for n in rest]], names=["uid", "url", "text", *rest]),
            "uid" in table.column_names)


def prepare_job(pool_uri: str, job_root: str, *, job_id: str = "", input_format: str = "", url_col: str = "url",
                caption_col: str | None = "text", samples_per_shard: int = DEFAULT_SAMPLES_PER_SHARD,
                max_samples: int = 0, keep_columns: tuple[str, ...] | None = None, options: dict | None = None,
                extend: bool = False) -> JobManifest:
    """Cut the pool into slices under ``job_root/pool`` and write the manifest (once per job).

    ``extend``: an existing job gets this pool as new shards after its last one (img2dataset's
    ``incremental_mode extend``); ``options`` are recorded in the manifest.
    """
    if samples_per_shard <= 0:
        raise ValueError(f"samples_per_shard must be positive, got {samples_per_shard}")
    existing = JobManifest.load(job_root) if storage.exists(storage.join(job_root, "job.json")) else None
    if existing is not None and not extend:
        if job_id and existing.job_id != job_id:
            raise ValueError(f"{job_root} already holds job {existing.job_id}, not {job_id}")
        return existing
    table, own_uids = _read_pool(pool_uri, input_format=input_format, url_col=url_col, caption_col=caption_col,
                                 max_samples=max_samples, keep_columns=keep_columns)
    first = existing.shard_count if existing is not None else 0
    if existing is not None:
        samples_per_shard = existing.samples_per_shard
    shard_count = max(1, -(-len(table) // samples_per_shard)) if len(table) else 0
    # Only the pool's own uids: a generated one repeats when a row does (url and caption), and
    # img2dataset downloads such rows each time.
    duplicates = duplicate_rows(table["uid"]) if own_uids else None
    if duplicates is not None:  # only then: a pool without repeated uids is cut as it always was
        table = table.append_column(DUPLICATE_OF_COLUMN, duplicates)
    for index in range(shard_count):
        buffer = io.BytesIO()
        pq.write_table(table.slice(index * samples_per_shard, samples_per_shard), buffer)
        storage.write_bytes(shard_prefix(storage.join(job_root, POOL_STAGE), first + index) + ".parquet",
                            buffer.getvalue())
    if existing is not None:
        manifest = JobManifest(job_id=existing.job_id, job_root=job_root, pool_uri=existing.pool_uri,
                               shard_count=first + shard_count, sample_count=existing.sample_count + len(table),
                               samples_per_shard=samples_per_shard, created=existing.created,
                               options=options or existing.options,
                               shard_sizes=[*existing.sizes(), *_slice_sizes(len(table), samples_per_shard)])
    else:
        manifest = JobManifest(job_id=job_id or uuid.uuid4().hex[:16], job_root=job_root, pool_uri=pool_uri,
                               shard_count=shard_count, sample_count=len(table), samples_per_shard=samples_per_shard,
                               created=time.time(), options=options or {})
    manifest.save()
    return manifest


def _slice_sizes(rows: int, samples_per_shard: int) -> list[int]:
    return [min(samples_per_shard, rows - i * samples_per_shard) for i in range(-(-rows // samples_per_shard))]


def read_pool_slice(ref: ShardRef) -> pa.Table:
    try:
        return pq.ParquetFile(io.BytesIO(storage.read_bytes(ref.uri + ".parquet"))).read()
    except (pa.ArrowInvalid, OSError) as exc:
        raise ShardFormatError(f"unreadable pool slice {ref.uri}.parquet: {exc}") from exc
