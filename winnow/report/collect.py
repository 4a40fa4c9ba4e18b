"""What a curation report shows, read from a job's files (a local folder or an ``s3://`` job).

Everything comes from what the stages already wrote: the ``_stats.json`` markers (the funnel), the
last stage's ledgers (one row per uid that entered, carried along by every stage: the outcome of
each sample, its scores and its URL), the filter's subset and its criteria
(``winnow.services.filter.criteria``) and each stage's recorded thresholds. Nothing is embedded row by
row except a compact uid index for the page's lookup; histograms are binned here, and sample
grids are drawn from a bounded number of shards.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from winnow.services.filter import criteria as C
from winnow.shared.subset import load_subset, uids_from_hex
from winnow.shared import storage
from winnow.shared.jobs import MANIFEST, JobManifest, StageTotals, stage_totals
from winnow.shared.shards import SUCCESS, ShardStats, read_stats

log = logging.getLogger(__name__)

DOWNLOAD_STAGE = "downloader"
FILTER_STAGE = "filter"
NOT_STAGES = frozenset({"pool", FILTER_STAGE, "reshard", "training", "report"})
LEDGER_COLUMNS = ("uid", "key", "url", "text", "status", "reason", "error_message", "dropped_by",
                  "original_width", "original_height")
# Score columns and what they are; clip_*_similarity_score columns are found by name.
SCORE_COLUMNS = {
    "toxicity_score": "caption toxicity",
    "nsfw_score": "image NSFW score",
    "eval_similarity": "evaluation-set similarity",
    "duplicate_similarity": "near-duplicate similarity",
}
# Per-sample download sizes and timings, when the downloader's ledger has them.
DOWNLOAD_MEASURES = ("bytes", "download_bytes", "content_length", "download_seconds", "elapsed", "fetch_seconds")
KEPT = ("kept", "kept")
HISTOGRAM_BINS = 40


class ReportError(ValueError):
    """The job cannot be reported on: no manifest, no finished shards."""


@dataclass
class Outcome:
    """Where a group of samples ended: the stage that decided and why."""

    stage: str
    reason: str
    count: int = 0
    rows: list[dict] = field(default_factory=list)  # the sampled rows shown in the page


@dataclass
class FilterFacts:
    name: str
    candidates: int
    kept: int
    removed_by: dict[str, int]
    rules: dict[str, str]
    threshold: float | None
    subset_uri: str
    primary: bool  # the job's filter (the one resharded), not another subset beside it
    only_reason: str | None = None  # the reason of every dropped candidate, when there is one


@dataclass
class Histogram:
    column: str
    title: str
    stage: str  # the stage that wrote the column
    edges: list[float]
    kept: list[int]  # samples that passed the column's stage, per bin
    dropped: list[int]  # samples the column's stage dropped, per bin
    threshold: float | None
    share_kept: float | None = None  # for a filter's cut: the share of candidates at or above it


@dataclass
class JobFacts:
    manifest: JobManifest
    stages: list[str]  # in pipeline order
    totals: list[StageTotals]
    filters: list[FilterFacts]
    outcomes: dict[tuple[str, str], Outcome]
    histograms: list[Histogram]
    download_reasons: Counter
    domains: list[dict]  # top domains: total, failed, failures by reason
    download_measures: dict[str, dict]  # measure -> summary over the ledgers
    shard_timings: list[dict]  # per stage: shards, seconds, samples/s
    uid_index: bytes  # sorted (8-byte uid prefix, uint16 outcome code) records
    outcome_codes: list[tuple[str, str]]
    total_samples: int
    sampled_shards: list[int]


def stage_order(job_root: str) -> list[str]:
    """The stages that finished shards, in pipeline order: by when they began their first shard."""
    firsts: dict[str, float] = {}
    for marker in storage.glob(storage.join(job_root, "*", "*_stats.json")):
        stage = marker.rstrip("/").split("/")[-2]
        if stage in NOT_STAGES:
            continue
        try:
            stats = json.loads(storage.read_text(marker))
        except (OSError, json.JSONDecodeError):
            continue
        started = float(stats.get("start_time") or 0.0)
        firsts[stage] = min(firsts.get(stage, math.inf), started)
    return sorted(firsts, key=lambda s: (firsts[s], s))


def _read_ledgers(stage_dir: str, columns: list[str]) -> pa.Table:
    parts = []
    for uri in sorted(storage.glob(storage.join(stage_dir, "*.parquet"))):
        fs, path = storage.filesystem(uri)
        names = pq.read_schema(path, filesystem=fs).names
        table = pq.read_table(path, columns=[c for c in dict.fromkeys(columns) if c in names], filesystem=fs)
        shard = int(uri.rstrip("/").split("/")[-1].split(".")[0])
        parts.append(table.append_column("shard", pa.array(np.full(table.num_rows, shard, np.int32))))
    if not parts:
        raise ReportError(f"no ledgers in {stage_dir}")
    return pa.concat_tables(parts, promote_options="permissive")


def _filters(job_root: str) -> list[FilterFacts]:
    """Every subset with criteria under ``{job}/filter/``; the resharded one first."""
    from winnow.services.filter.stage import filter_summary

    summary = filter_summary(job_root) or {}
    primary = summary.get("subset")
    found = []
    for uri in sorted(storage.glob(storage.join(job_root, FILTER_STAGE, f"*{C.CRITERIA_SUFFIX}"))):
        data = json.loads(storage.read_text(uri))
        subset = uri[: -len(C.CRITERIA_SUFFIX)] + ".npy"
        is_primary = primary is not None and subset.rstrip("/").split("/")[-1] == primary.rstrip("/").split("/")[-1]
        found.append(FilterFacts(name=data["filter"], candidates=int(data["candidates"]), kept=int(data["kept"]),
                                 removed_by=data.get("removed_by", {}), rules=data.get("rules", {}),
                                 threshold=data.get("threshold"), subset_uri=subset, primary=is_primary,
                                 only_reason=data.get("only_reason")))
    return sorted(found, key=lambda f: (not f.primary, f.name))


def _outcome_columns(ledger: pa.Table, primary: FilterFacts | None,
                     first_stage: str = DOWNLOAD_STAGE) -> tuple[np.ndarray, np.ndarray]:
    """The deciding stage and reason of every row (a failure no stage dropped is ``first_stage``'s:
    the downloader's, or ``source`` for shards the user had)."""
    status = pc.fill_null(ledger["status"], "").to_numpy(zero_copy_only=False).astype(object)
    reason = pc.fill_null(ledger["reason"], "").to_numpy(zero_copy_only=False).astype(object)
    dropped_by = pc.fill_null(ledger["dropped_by"], "").to_numpy(zero_copy_only=False).astype(object)
    stage = np.where(dropped_by != "", dropped_by, first_stage).astype(object)
    reason = np.where(reason != "", reason, status).astype(object)
    success = status == SUCCESS
    stage[success], reason[success] = KEPT
    if primary is not None:
        in_subset = _members(uids_from_hex(ledger["uid"]), load_subset(primary.subset_uri))
        filtered = success & ~in_subset
        stage[filtered] = FILTER_STAGE
        reason[filtered] = primary.only_reason or "filtered"
        _, dropped_uri = C.sidecar_paths(primary.subset_uri)
        if storage.exists(dropped_uri):
            fs, path = storage.filesystem(dropped_uri)
            dropped = pq.read_table(path, filesystem=fs)
            by_uid = dict(zip(dropped["uid"].to_pylist(), dropped["reason"].cast(pa.string()).to_pylist()))
            uids = ledger["uid"].to_pylist()
            for row in np.nonzero(filtered)[0]:
                reason[row] = by_uid.get(uids[row], "filtered")
    return stage, reason


def _members(uids: np.ndarray, subset: np.ndarray) -> np.ndarray:
    """True where a uid record is in the sorted subset."""
    if len(subset) == 0:
        return np.zeros(len(uids), dtype=bool)
    at = np.minimum(np.searchsorted(subset, uids), len(subset) - 1)
    return subset[at] == uids


def _pick_shards(shards: np.ndarray, limit: int) -> list[int]:
    """At most ``limit`` shard ids spread evenly over the job (the sample grids draw from these)."""
    unique = np.unique(shards)
    if len(unique) <= limit:
        return unique.tolist()
    return unique[np.linspace(0, len(unique) - 1, limit).round().astype(int)].tolist()


def _histogram(values: np.ndarray, dropped: np.ndarray, column: str, title: str, stage: str,
               threshold: float | None) -> Histogram | None:
    finite = np.isfinite(values)
    if not finite.any():
        return None
    low, high = float(values[finite].min()), float(values[finite].max())
    if threshold is not None and math.isfinite(threshold):
        low, high = min(low, threshold), max(high, threshold)
    if high <= low:
        high = low + 1e-6
    edges = np.linspace(low, high, HISTOGRAM_BINS + 1)
    kept, _ = np.histogram(values[finite & ~dropped], edges)
    gone, _ = np.histogram(values[finite & dropped], edges)
    return Histogram(column=column, title=title, stage=stage, edges=edges.tolist(), kept=kept.tolist(),
                     dropped=gone.tolist(), threshold=threshold)


def _float_column(ledger: pa.Table, column: str) -> np.ndarray:
    values = ledger[column]
    if not (pa.types.is_floating(values.type) or pa.types.is_integer(values.type)):
        values = pc.cast(values, pa.float64(), safe=False) if not pa.types.is_string(values.type) \
            else pc.cast(pc.if_else(pc.equal(values, ""), None, values), pa.float64())
    return pc.fill_null(pc.cast(values, pa.float64()), np.nan).to_numpy(zero_copy_only=False)


def _thresholds(job_root: str, stages: list[str]) -> dict[str, tuple[str, float]]:
    """Score column -> (stage, threshold), from the first shard's stats of each stage."""
    found = {}
    for stage in stages:
        markers = sorted(storage.glob(storage.join(job_root, stage, "*_stats.json")))
        if markers:
            stats = read_stats(markers[0][: -len("_stats.json")])
            for column, value in (stats.extra.get("thresholds") or {}).items():
                found[column] = (stage, float(value))
    return found


def _histograms(ledger: pa.Table, stage_of: np.ndarray, job_root: str, stages: list[str],
                filters: list[FilterFacts]) -> list[Histogram]:
    thresholds = _thresholds(job_root, stages)
    columns = [c for c in SCORE_COLUMNS if c in ledger.column_names]
    # a stage plugin's scores: whatever a stage recorded a threshold for
    columns += [c for c in thresholds if c not in columns and c in ledger.column_names]
    columns += sorted(c for c in ledger.column_names if c.startswith("clip_") and c.endswith("_similarity_score"))
    histograms = []
    for column in columns:
        values = _float_column(ledger, column)
        stage, threshold = thresholds.get(column, ("", None))
        title = SCORE_COLUMNS.get(column) or (f"CLIP score ({column[len('clip_'):-len('_similarity_score')]})"
                                              if column.startswith("clip_") else f"{stage}: {column}")
        cut = None
        if column.startswith("clip_"):
            # A CLIP-score subset's cut: the filter's threshold over its candidates.
            cut = next((f for f in filters if f.threshold is not None and "clip_score" in f.name), None)
            stage, threshold = (FILTER_STAGE, float(cut.threshold)) if cut else ("", None)
        dropped = stage_of == stage if stage else np.zeros(len(values), dtype=bool)
        candidates = np.isfinite(values) & ((stage_of == "kept") | (stage_of == FILTER_STAGE))
        if cut is not None:  # kept and dropped by that subset, which need not be the job's filter
            dropped = candidates & ~_members(uids_from_hex(ledger["uid"]), load_subset(cut.subset_uri))
        histogram = _histogram(values, dropped, column, title, stage, threshold)
        if histogram is None:
            continue
        if cut is not None and candidates.any():
            histogram.stage = f"{FILTER_STAGE} {cut.name}"
            histogram.share_kept = float((values[candidates] >= threshold).mean())
        histograms.append(histogram)
    return histograms


def _downloads(job_root: str, first_stage: str = DOWNLOAD_STAGE) -> tuple[Counter, list[dict], dict[str, dict]]:
    """Download failures by reason and by domain (the downloader's, or those the user's shards
    recorded), and per-sample sizes and timings where recorded."""
    stage_dir = storage.join(job_root, first_stage)
    if not storage.glob(storage.join(stage_dir, "*.parquet")):
        return Counter(), [], {}
    ledger = _read_ledgers(stage_dir, ["url", "status", "reason", *DOWNLOAD_MEASURES])
    status = pc.fill_null(ledger["status"], "").to_pylist()
    reasons = pc.fill_null(ledger["reason"], "").to_pylist()
    domains: dict[str, Counter] = {}
    totals: Counter = Counter()
    failures: Counter = Counter()
    for url, state, reason in zip(ledger["url"].to_pylist(), status, reasons):
        try:
            host = urlsplit(url or "").hostname or "(no host)"
        except ValueError:
            host = "(invalid url)"
        totals[host] += 1
        if state != SUCCESS:
            failures[reason or state] += 1
            domains.setdefault(host, Counter())[reason or state] += 1
    top = sorted(domains, key=lambda h: (-sum(domains[h].values()), h))[:20]
    by_domain = [{"domain": h, "samples": totals[h], "failed": sum(domains[h].values()),
                  "reasons": dict(domains[h].most_common())} for h in top]
    measures = {}
    for column in DOWNLOAD_MEASURES:
        if column in ledger.column_names:
            values = _float_column(ledger, column)
            values = values[np.isfinite(values)]
            if len(values):
                measures[column] = {"count": int(len(values)), "mean": float(values.mean()),
                                    "p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95)),
                                    "max": float(values.max())}
    return failures, by_domain, measures


def _shard_timings(job_root: str, stages: list[str]) -> list[dict]:
    timings = []
    for stage in stages:
        seconds, samples, shards = 0.0, 0, 0
        for marker in storage.glob(storage.join(job_root, stage, "*_stats.json")):
            stats = ShardStats.from_json(json.loads(storage.read_text(marker)))
            seconds += max(0.0, (stats.end_time or stats.start_time) - stats.start_time)
            samples += stats.count
            shards += 1
        timings.append({"stage": stage, "shards": shards, "seconds": round(seconds, 3), "samples": samples,
                        "samples_per_second": round(samples / seconds, 1) if seconds > 0 else None})
    return timings


UID_MIX = 0x9E3779B97F4A7C15  # odd: multiplying by it permutes 64-bit numbers


def uid_key(records: np.ndarray) -> np.ndarray:
    """A 64-bit key per uid record: upper half XOR (lower half * UID_MIX mod 2**64). Uids that
    share a half (``{i:032x}``, say) still get distinct keys; the page computes the same."""
    with np.errstate(over="ignore"):
        return records["f0"] ^ (records["f1"] * np.uint64(UID_MIX))


def _uid_index(uids: pa.ChunkedArray, codes: np.ndarray) -> bytes:
    """Sorted records of (the uid's 64-bit key, big-endian; the outcome code) for the page's
    binary search: 10 bytes a sample; a million random uids collide with a chance near 3e-8."""
    records = uids_from_hex(uids)
    index = np.empty(len(records), dtype=[("prefix", ">u8"), ("code", ">u2")])
    index["prefix"], index["code"] = uid_key(records), codes
    index.sort(order="prefix")
    return index.tobytes()


def collect(job_root: str, *, per_reason: int = 24, max_shards: int = 16) -> JobFacts:
    """Read a job's facts for the report; ``per_reason`` samples are drawn per outcome from at
    most ``max_shards`` shards."""
    if not storage.exists(storage.join(job_root, MANIFEST)):
        raise ReportError(f"{job_root} is not a winnow job (no {MANIFEST})")
    manifest = JobManifest.load(job_root)
    stages = stage_order(job_root)
    if not stages:
        raise ReportError(f"{job_root} has no finished shards yet")
    totals = [stage_totals(job_root, stage) for stage in stages]
    filters = _filters(job_root)
    primary = next((f for f in filters if f.primary), None)
    last = stages[-1]
    ledger = _read_ledgers(storage.join(job_root, last), list(LEDGER_COLUMNS) + [
        *SCORE_COLUMNS, *[f"clip_{k}_similarity_score" for k in ("b32", "l14")], "face_bboxes",
        *_thresholds(job_root, stages)])
    # clip_<key> columns for any model key the embed stage was given
    fs, path = storage.filesystem(sorted(storage.glob(storage.join(job_root, last, "*.parquet")))[0])
    extra = [n for n in pq.read_schema(path, filesystem=fs).names
             if n.startswith("clip_") and n.endswith("_similarity_score") and n not in ledger.column_names]
    if extra:
        ledger = _read_ledgers(storage.join(job_root, last), [*ledger.column_names, *extra])
    stage_of, reason_of = _outcome_columns(ledger, primary, manifest.first_stage)
    pairs = list(dict.fromkeys(zip(stage_of.tolist(), reason_of.tolist())))
    outcome_codes = [KEPT] + sorted(p for p in pairs if p != KEPT)
    code_of = {pair: i for i, pair in enumerate(outcome_codes)}
    codes = np.fromiter((code_of[p] for p in zip(stage_of.tolist(), reason_of.tolist())), dtype=np.uint16,
                        count=len(stage_of))
    sampled_shards = _pick_shards(ledger["shard"].to_numpy(), max_shards)
    in_sampled = np.isin(ledger["shard"].to_numpy(), sampled_shards)
    uid_order = np.argsort(ledger["uid"].to_numpy(zero_copy_only=False).astype(str), kind="stable")
    outcomes: dict[tuple[str, str], Outcome] = {}
    counts = np.bincount(codes, minlength=len(outcome_codes))
    for code, pair in enumerate(outcome_codes):
        if counts[code] == 0:
            continue
        members = uid_order[(codes[uid_order] == code) & in_sampled[uid_order]][:per_reason]
        rows = ledger.take(pa.array(members)).to_pylist() if len(members) else []
        outcomes[pair] = Outcome(stage=pair[0], reason=pair[1], count=int(counts[code]), rows=rows)
    failures, domains, measures = _downloads(job_root, manifest.first_stage)
    return JobFacts(manifest=manifest, stages=stages, totals=totals, filters=filters, outcomes=outcomes,
                    histograms=_histograms(ledger, stage_of, job_root, stages, filters), download_reasons=failures,
                    domains=domains, download_measures=measures, shard_timings=_shard_timings(job_root, stages),
                    uid_index=_uid_index(ledger["uid"], codes), outcome_codes=outcome_codes,
                    total_samples=ledger.num_rows, sampled_shards=sampled_shards)
