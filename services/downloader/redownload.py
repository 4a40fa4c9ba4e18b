"""Fetch again only the samples of finished shards that failed for a transient reason.

Each shard with such samples is rewritten: kept samples are copied from the old tar, the
retried ones are downloaded again, the ledger keeps every row in its place. The stats file is
written last, as always, so a crash midway leaves a shard that the next run retries again.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass

from winnow.services.downloader.fetch import HttpFetcher
from winnow.services.downloader.stage import (DownloadOptions, download_sample, ledger_row, ordered_map, row_boxes,
                                      row_expected_hash, sample_files)
from winnow.shared import storage
from winnow.shared.shards import FAILED_TO_DOWNLOAD, FAILED_TO_RESIZE, SUCCESS, ShardWriter, iter_tar_samples, read_stats, read_table


@dataclass
class RedownloadResult:
    shards: int = 0
    retried: int = 0
    recovered: int = 0


def redownload_failed(job_root: str, options: DownloadOptions, reasons: Set[str]) -> RedownloadResult:
    result = RedownloadResult()
    fetcher = HttpFetcher(options.fetch)
    try:
        for marker in storage.glob(options.layout.stats_glob(job_root)):
            prefix = marker[: -len("_stats.json")]
            retried, recovered = _redownload_shard(prefix, fetcher, options, reasons)
            if retried:
                result.shards += 1
                result.retried += retried
                result.recovered += recovered
    finally:
        fetcher.close()
    return result


def iter_kept_samples(prefix: str, layout, rows: list[dict]):
    """``(key, files)`` of the shard's kept samples, from its tar, its folder, or (parquet) its rows."""
    if layout.members == "tar":
        yield from iter_tar_samples(prefix)
        return
    if layout.members == "none":
        for row in rows:
            if row["status"] == SUCCESS:
                yield row["key"], {}
        return
    for row in rows:
        if row["status"] == SUCCESS:
            files = {}
            for uri in storage.glob(storage.join(prefix, f"{row['key']}.*")):
                files[uri.rsplit("/", 1)[-1].split(".", 1)[1]] = storage.read_bytes(uri)
            yield row["key"], files


def _redownload_shard(prefix: str, fetcher: HttpFetcher, options: DownloadOptions,
                      reasons: Set[str]) -> tuple[int, int]:
    table = read_table(prefix)
    rows = table.to_pylist()
    todo = [i for i, r in enumerate(rows)
            if r["status"] in (FAILED_TO_DOWNLOAD, FAILED_TO_RESIZE) and r.get("reason") in reasons]
    if not todo:
        return 0, 0
    old = read_stats(prefix)
    outcomes = dict(zip(todo, ordered_map(
        lambda i: download_sample(fetcher, rows[i]["url"], options, row_expected_hash(rows[i], options),
                                  row_boxes(rows[i], options)),
        todo, options.thread_count)))
    layout = options.layout
    kept_files = iter_kept_samples(prefix, layout, rows)
    writer = ShardWriter(prefix, stage=old.stage, job_id=old.job_id, shard_id=old.shard_id, extra_schema=table.schema,
                         core_schema=table.schema if layout.img2dataset_columns else None, members=layout.members)
    recovered = 0
    try:
        for index, row in enumerate(rows):
            if index in outcomes:
                ledger = ledger_row(row, row["key"], outcomes[index], layout)
                ok = outcomes[index].status == SUCCESS
                recovered += ok
                writer.add(ledger, sample_files(ledger, outcomes[index], layout) if ok else None)
            elif row["status"] == SUCCESS:
                key, files = next(kept_files)
                if key != row["key"]:
                    raise ValueError(f"{prefix}.tar is out of step with its parquet at {row['key']} (found {key})")
                writer.add(row, files)
            else:
                writer.add(row)
        # Read the old tar to its end before the new one replaces it.
        for _ in kept_files:
            pass
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return len(todo), recovered
