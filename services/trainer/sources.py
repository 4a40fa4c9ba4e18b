"""Training data sources: what each ``--data_dir`` names, as webdataset patterns with sample counts and weights.

A source is one of (``Source.kind``):

- ``shards``: a folder of img2dataset-style shards ``NNNNN.tar``, local or on anything fsspec
  opens (``s3://bucket/prefix/``). When the folder holds winnow's ``_stats.json`` completion
  markers only finished shards are used; without markers (img2dataset, DataComp) every tar is.
- ``job``: a winnow job folder (``job.json``, see ``winnow.shared.jobs``): its resharded subset
  ``reshard/`` when that has finished shards, else the furthest pipeline stage that has some.
- ``pool``: a pool file (parquet, CSV, TSV, JSON lines, text; or a folder of parquet files) of
  url and caption: downloaded with winnow's own downloader stage into
  ``WORK_DIR/sources/NAME/`` before training. A second run finds the finished shards there and
  fetches nothing again; an interrupted download resumes where it stopped.
- ``pattern``: a single ``.tar``, a brace pattern or a ``pipe:``/``http(s)://`` URL, given to
  webdataset as it is.

Shards on object storage reach webdataset as ``pipe:`` commands that stream each tar through
fsspec (``python -m winnow.services.trainer.sources cat URL``): the interpreter that runs training is
the one command sure to exist wherever it runs, and fsspec takes its credentials from the
environment, as the rest of winnow does.

Weights are DataComp's ``--data_weights``: the proportions of samples drawn from each source.
open_clip's ``--train-data-upsampling-factors`` is something else: a weight per *shard*, with
shards drawn with replacement and read whole, so a source's share of samples is its factor
times its sample count. ``plan_sampling`` turns weights into factors with the sources' sample
counts (``factor = proportion * total / count``), so the drawn proportions are the weights
whatever each source's shard and sample counts. Without weights every factor is 1 and sources
are drawn in proportion to their sizes. Counts come from ``_stats.json`` (``successes``), else
from a shard's parquet ledger, else from the tar's members (samples with an image and a caption,
as open_clip keeps them).
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import sys
import tarfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import structlog

from winnow.shared import storage
from winnow.shared.topics import CURATION_STAGES

if TYPE_CHECKING:
    from winnow.services.downloader.stage import DownloadOptions

log = structlog.get_logger(__name__)

KINDS = ("shards", "job", "pool", "pattern")
WEBDATASET_URL_SCHEMES = ("http", "https", "sftp", "ftps", "scp")  # webdataset opens these with curl
POOL_SUFFIXES = (".parquet", ".pq", ".csv", ".tsv", ".json", ".jsonl", ".ndjson", ".txt")
# winnow's per-shard stages in pipeline order; reshard/ comes after them all
JOB_STAGES = CURATION_STAGES
RESHARD_FOLDER = "reshard"
RESHARD_DONE = "_done.json"  # the filter stage's marker: the subset is complete
DOWNLOAD_STAGE = "downloader"
IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp"})  # open_clip keeps samples with one of these and txt
LOCAL_TARS_COUNTED = 64  # beyond this many tars without counts, count an even spread and extrapolate
REMOTE_TARS_COUNTED = 4  # remote tars are read whole to count them: a few, then extrapolate
COUNT_THREADS = 8  # stats files read at once (object stores answer slowly, one by one)
DOWNLOAD_POLL_S = 2.0  # how often a rank that does not download a pool looks for rank 0's markers
_SHARD_NAME = re.compile(r"^(?P<prefix>.*?)(?P<number>\d+)\.tar$")
_SCHEME = re.compile(r"^(\w+)://")
_MEMBER = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's key.extension split


@dataclass(frozen=True)
class PoolOptions:
    """How a pool source is downloaded (the options of ``winnow download``)."""

    download: DownloadOptions | None = None  # None: the downloader's defaults (DataComp's 512 px)
    samples_per_shard: int = 10_000
    input_format: str = ""  # inferred from the file name when empty
    url_col: str = "url"
    caption_col: str | None = "text"
    workers: int = 2  # shards downloaded at once

    def validate(self) -> None:
        if self.samples_per_shard < 1:
            raise ValueError(f"pool samples_per_shard must be positive, got {self.samples_per_shard}")
        if self.workers < 1:
            raise ValueError(f"pool download workers must be positive, got {self.workers}")


@dataclass(frozen=True)
class Source:
    """One training data source, resolved: where its shards are and how much it is drawn."""

    name: str  # unique among the run's sources
    kind: str  # one of KINDS
    spec: str  # as the user gave it
    location: str  # the folder or pattern the shards come from (a job's stage folder, a pool's download)
    patterns: tuple[str, ...]  # webdataset patterns
    shard_count: int | None = None  # None where a pattern hides it
    sample_count: int | None = None  # None where not counted
    count_method: str = ""  # stats | ledger | tar | "tar, estimated from K of N shards" | "" (not counted)
    detail: str = ""  # what was chosen and why (a job's stage, a pool's download)
    weight: float | None = None  # as the user gave it (None: proportional to size)
    proportion: float | None = None  # the expected fraction of samples drawn from it
    upsampling_factor: float | None = None  # open_clip's factor for each of its patterns

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["patterns"] = list(self.patterns)
        return data


# ---------------------------------------------------------------------------------------------
# What a spec names


def _scheme(spec: str) -> str | None:
    match = _SCHEME.match(spec)
    return match[1] if match else None


def _is_remote(spec: str) -> bool:
    return _scheme(spec) not in (None, "file")


def _is_pattern(spec: str) -> bool:
    return "{" in spec or spec.rstrip("/").endswith(".tar")


def _is_pool_file(spec: str) -> bool:
    return spec.lower().rstrip("/").endswith(POOL_SUFFIXES)


def _list_names(folder: str) -> set[str]:
    fs, path = storage.filesystem(folder)
    fs.invalidate_cache(path)
    return {entry.rstrip("/").rsplit("/", 1)[-1] for entry in fs.ls(path, detail=False)}


def _exists(uri: str) -> bool:
    try:
        return storage.exists(uri)
    except (ImportError, ValueError) as exc:  # no fsspec implementation for the scheme, a malformed URL
        raise ValueError(f"cannot open training data source {uri}: {exc}") from exc
    except Exception as exc:  # object stores raise their own kinds: no credentials, no endpoint, denied
        if not _is_remote(uri):
            raise
        raise ValueError(f"cannot reach training data source {uri}: {type(exc).__name__}: {exc}") from exc


def _isdir(uri: str) -> bool:
    fs, path = storage.filesystem(uri)
    fs.invalidate_cache(path)
    return fs.isdir(path)


def source_kind(spec: str) -> str:
    """The kind of source ``spec`` names; ``FileNotFoundError`` when it names nothing.

    Cheap: a listing or two, no counting and no downloading (the trainer service calls it to
    refuse a run that cannot start).
    """
    if not spec:
        raise ValueError("an empty training data source")
    scheme = _scheme(spec)
    if spec.startswith("pipe:") or scheme in WEBDATASET_URL_SCHEMES:
        if not _is_pattern(spec) and not spec.startswith("pipe:"):
            raise ValueError(f"{spec}: webdataset cannot list a {scheme} folder; give a .tar URL or a brace pattern "
                             f"such as {spec.rstrip('/')}/{{00000000..00000099}}.tar")
        return "pattern"
    if _is_pattern(spec):
        if "{" not in spec and not _exists(spec):
            raise FileNotFoundError(f"training shard {spec} does not exist")
        return "pattern"
    if not _exists(spec.rstrip("/") or spec):
        raise FileNotFoundError(f"training data source {spec} does not exist")
    if not _isdir(spec):
        if _is_pool_file(spec):
            return "pool"
        raise ValueError(f"{spec} is neither a shard folder, a job folder, a .tar nor a pool file "
                         f"({', '.join(POOL_SUFFIXES)})")
    names = _list_names(spec)
    if "job.json" in names:
        return "job"
    if any(n.endswith(".tar") for n in names):
        return "shards"
    if any(n.endswith((".parquet", ".pq")) for n in names):
        return "pool"
    raise ValueError(f"no finished .tar shards in {spec} (nor a job.json or pool parquet files)")


def check_sources(specs: Sequence[str], weights: Sequence[float] | None = None) -> list[str]:
    """The kinds of ``specs``, after checking each exists and the weights fit (cheap; see ``source_kind``).

    Every shard of a local brace pattern must exist too; ``pipe:`` and ``http(s)`` patterns are
    taken on trust.
    """
    import braceexpand

    check_weights(specs, weights)
    kinds = [source_kind(spec) for spec in specs]
    for spec, kind in zip(specs, kinds):
        if kind == "pattern" and "{" in spec and not _is_remote(spec) and not spec.startswith("pipe:"):
            shards = list(braceexpand.braceexpand(spec))
            missing = [uri for uri in shards if not os.path.exists(uri)]
            if missing:
                raise FileNotFoundError(f"{len(missing)} of the {len(shards)} shards of {spec} do not exist, "
                                        f"e.g. {missing[0]}")
    return kinds


def check_weights(specs: Sequence[str], weights: Sequence[float] | None) -> None:
    if not specs:
        raise ValueError("no training data: give at least one data source")
    if weights is None:
        return
    if len(weights) != len(specs):
        raise ValueError(f"{len(weights)} data weights for {len(specs)} data sources; give one weight per source")
    bad = [w for w in weights if not (math.isfinite(w) and w > 0)]
    if bad:
        raise ValueError(f"data weights must be positive numbers (the proportions of the sources), "
                         f"got {list(weights)}")


def source_names(specs: Sequence[str]) -> list[str]:
    """A short, unique, file-system-safe name per source: the folder's or file's name, numbered on clashes."""
    names: list[str] = []
    for spec in specs:
        base = spec.split("{", 1)[0] if not spec.startswith("pipe:") else "pipe"
        base = base.rstrip("/").rsplit("/", 1)[-1]
        for suffix in (".tar", *POOL_SUFFIXES):
            base = base.removesuffix(suffix)
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._") or "source"
        name, number = base, 2
        while name in names:
            name, number = f"{base}-{number}", number + 1
        names.append(name)
    return names


# ---------------------------------------------------------------------------------------------
# Shard folders


def _remote_pattern(url: str) -> str:
    """A ``pipe:`` command that streams ``url`` (braces allowed: open_clip expands them first) through fsspec."""
    return f"pipe:{shlex.quote(sys.executable)} -m winnow.services.trainer.sources cat {shlex.quote(url)}"


def _webdataset_pattern(uri: str) -> str:
    return _remote_pattern(uri) if _is_remote(uri) else uri


def finished_shards(folder: str) -> list[str]:
    """The shard URIs (``.../NAME.tar``) of a folder, in name order: finished ones only when it has markers."""
    names = _list_names(folder)
    tars = sorted(n for n in names if n.endswith(".tar"))
    if any(n.endswith("_stats.json") for n in names):
        unfinished = [t for t in tars if f"{t[:-4]}_stats.json" not in names]
        if unfinished:
            log.warning("unfinished_shards_skipped", folder=folder, count=len(unfinished), first=unfinished[:5])
        tars = [t for t in tars if t not in unfinished]
    base = folder.rstrip("/") or folder
    return [f"{base}/{t}" for t in tars]


def brace_patterns(shards: Sequence[str]) -> list[str]:
    """Shard URIs as few webdataset patterns: contiguous numbers become ``{first..last}`` runs."""
    runs: dict[tuple[str, str, int], list[int]] = {}
    for uri in shards:
        folder, name = uri.rsplit("/", 1)
        match = _SHARD_NAME.match(name)
        if match is None:
            raise ValueError(f"{uri}: shard names must end in a number, as {{shard:08d}}.tar")
        runs.setdefault((folder, match["prefix"], len(match["number"])), []).append(int(match["number"]))
    patterns = []
    for (folder, prefix, width), numbers in sorted(runs.items()):
        numbers.sort()
        start = previous = numbers[0]
        for number in [*numbers[1:], None]:  # a gap starts a new pattern
            if number is not None and number == previous + 1:
                previous = number
                continue
            base = f"{folder}/{prefix}"
            patterns.append(f"{base}{start:0{width}d}.tar" if start == previous
                            else f"{base}{{{start:0{width}d}..{previous:0{width}d}}}.tar")
            if number is not None:
                start = previous = number
    return patterns


# ---------------------------------------------------------------------------------------------
# Counting samples


def count_tar_samples(fileobj, *, stream: bool) -> int:
    """Samples in a tar that open_clip trains on: members grouped by key as webdataset groups them,
    kept when they have an image and a caption."""
    count, key, extensions = 0, None, set()
    with tarfile.open(fileobj=fileobj, mode="r|*" if stream else "r:*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            match = _MEMBER.match(member.name)
            if match is None:
                continue
            if match[1] != key:
                count += bool(extensions & IMAGE_EXTENSIONS and "txt" in extensions)
                key, extensions = match[1], set()
            extensions.add(match[2].lower())
    return count + bool(extensions & IMAGE_EXTENSIONS and "txt" in extensions)


def _count_tar(uri: str) -> int:
    try:
        return _count_tar_members(uri)
    except tarfile.ReadError as exc:
        raise ValueError(f"{uri} is not a readable tar: {exc}") from exc


def _count_tar_members(uri: str) -> int:
    if uri.startswith("pipe:") or _scheme(uri) in WEBDATASET_URL_SCHEMES:
        from webdataset.gopen import gopen

        stream = gopen(uri)
        try:
            return count_tar_samples(stream, stream=True)
        finally:
            stream.close()
    if _is_remote(uri):
        fs, path = storage.filesystem(uri)
        with fs.open(path, "rb") as handle:
            return count_tar_samples(handle, stream=True)
    with open(uri, "rb") as handle:
        return count_tar_samples(handle, stream=False)


def _ledger_count(uri: str) -> int | None:
    """Kept samples in a shard's parquet (rows with status success; every row without a status column)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    fs, path = storage.filesystem(uri)
    with fs.open(path, "rb") as handle:
        ledger = pq.ParquetFile(handle)
        if "status" not in ledger.schema_arrow.names:
            return ledger.metadata.num_rows
        status = ledger.read(columns=["status"])["status"]
    return int(pc.sum(pc.equal(status, "success")).as_py() or 0)


def _marker_count(prefix: str, names: set[str] | None) -> tuple[int | None, str]:
    """A shard's sample count from its ``_stats.json`` or its parquet ledger, without opening the tar."""
    name = prefix.rsplit("/", 1)[-1]
    if names is None or f"{name}_stats.json" in names:
        try:
            return int(json.loads(storage.read_text(f"{prefix}_stats.json"))["successes"]), "stats"
        except (FileNotFoundError, KeyError, TypeError, ValueError):
            pass
    if names is None or f"{name}.parquet" in names:
        try:
            return _ledger_count(f"{prefix}.parquet"), "ledger"
        except (FileNotFoundError, OSError, ValueError):
            pass
    return None, ""


def count_samples(shards: Sequence[str], *, read_tars: bool = True) -> tuple[int | None, str]:
    """Samples in ``shards`` (tar URIs) and how they were counted.

    ``_stats.json`` or parquet ledgers where every shard has one; otherwise the tars' members,
    all of them locally up to ``LOCAL_TARS_COUNTED`` shards, else an even spread of shards and
    the mean times the shard count. ``read_tars=False`` gives ``(None, "")`` instead of reading tars.
    """
    if not shards:
        return 0, "stats"
    folders = {uri.rsplit("/", 1)[0] for uri in shards}
    listings = {folder: _list_names(folder) for folder in folders} if not any(
        uri.startswith("pipe:") or _scheme(uri) in WEBDATASET_URL_SCHEMES for uri in shards) else {}
    prefixes = [uri[:-4] if uri.endswith(".tar") else uri for uri in shards]
    if listings:
        with ThreadPoolExecutor(COUNT_THREADS) as pool:
            counted = list(pool.map(lambda p: _marker_count(p, listings[p.rsplit("/", 1)[0]]), prefixes))
        if all(count is not None for count, _ in counted):
            methods = sorted({method for _, method in counted})
            return sum(count for count, _ in counted), "+".join(methods)
    if not read_tars:
        return None, ""
    limit = LOCAL_TARS_COUNTED if all(not _is_remote(uri) for uri in shards) else REMOTE_TARS_COUNTED
    if len(shards) <= limit:
        return sum(_count_tar(uri) for uri in shards), "tar"
    picks = sorted({round(i * (len(shards) - 1) / (limit - 1)) for i in range(limit)})
    counts = [_count_tar(shards[i]) for i in picks]
    log.warning("sample_count_estimated", shards=len(shards), counted=len(picks), first=shards[0])
    return round(sum(counts) / len(counts) * len(shards)), f"tar, estimated from {len(picks)} of {len(shards)} shards"


# ---------------------------------------------------------------------------------------------
# Resolving each kind


def _shard_folder_source(name: str, spec: str, kind: str, folder: str, detail: str, *, count: bool,
                         weight: float | None) -> Source:
    shards = finished_shards(folder)
    if not shards:
        raise ValueError(f"no finished .tar shards in {folder}")
    patterns = tuple(_webdataset_pattern(p) for p in brace_patterns(shards))
    samples, method = count_samples(shards) if count else (None, "")
    return Source(name=name, kind=kind, spec=spec, location=folder, patterns=patterns, shard_count=len(shards),
                  sample_count=samples, count_method=method, detail=detail, weight=weight)


def job_shard_folder(job_root: str) -> tuple[str, str]:
    """The folder a job source trains on, and why: ``reshard/`` with finished shards, else the
    furthest stage with finished shards."""
    from winnow.shared.jobs import JobManifest

    root = job_root.rstrip("/") or job_root
    try:
        manifest = JobManifest.load(root)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{root}/job.json is not a winnow job manifest: {exc}") from exc
    reshard = f"{root}/{RESHARD_FOLDER}"
    if storage.exists(reshard) and finished_shards(reshard):
        if storage.exists(f"{reshard}/{RESHARD_DONE}"):
            return reshard, "the job's resharded subset (reshard/)"
        log.warning("reshard_incomplete", job_root=root, note="reshard/ has no _done.json: the subset is still "
                    "being written; training on its finished shards")
        return reshard, "the job's resharded subset (reshard/), still being written: its finished shards"
    for stage in reversed(JOB_STAGES):
        folder = f"{root}/{stage}"
        if not storage.exists(folder):
            continue
        if done := len(finished_shards(folder)):
            return folder, (f"no resharded subset: the furthest stage with finished shards, {stage}/ "
                            f"({done} of {manifest.shard_count} shards finished)")
        if any(name.endswith("_stats.json") for name in _list_names(folder)):
            # An annotating stage: its verdicts are in its ledgers, its images in the downloader's
            # tars, which hold every sample it dropped too. Only the resharded subset has its choice.
            raise ValueError(f"job {manifest.job_id} at {root} has no resharded subset, and its {stage}/ stage "
                             f"writes ledgers, not images: filter and reshard it first (winnow filter and "
                             f"winnow reshard, or winnow run with --filter), or train on {root}/downloader "
                             f"to use every downloaded sample")
    raise ValueError(f"job {manifest.job_id} at {root} has no finished shards yet (no reshard/ and no stage "
                     f"folder among {', '.join(JOB_STAGES)} with a _stats.json marker)")


def _job_source(name: str, spec: str, *, count: bool, weight: float | None) -> Source:
    folder, detail = job_shard_folder(spec)
    log.info("job_source", source=name, job_root=spec, folder=folder, detail=detail)
    return _shard_folder_source(name, spec, "job", folder, detail, count=count, weight=weight)


def _pattern_source(name: str, spec: str, *, count: bool, weight: float | None) -> Source:
    if spec.startswith("pipe:") or _scheme(spec) in WEBDATASET_URL_SCHEMES:
        shards = None
        if count:
            import braceexpand

            shards = list(braceexpand.braceexpand(spec))
        samples, method = count_samples(shards) if shards else (None, "")
        return Source(name=name, kind="pattern", spec=spec, location=spec, patterns=(spec,),
                      shard_count=len(shards) if shards else None, sample_count=samples, count_method=method,
                      weight=weight)
    import braceexpand

    shards = list(braceexpand.braceexpand(spec))
    if count or _is_remote(spec):
        missing = [uri for uri in shards if not storage.exists(uri)]
        if missing:
            raise FileNotFoundError(f"{len(missing)} of the {len(shards)} shards of {spec} do not exist, "
                                    f"e.g. {missing[0]}")
    samples, method = count_samples(shards) if count else (None, "")
    return Source(name=name, kind="pattern", spec=spec, location=spec, patterns=(_webdataset_pattern(spec),),
                  shard_count=len(shards), sample_count=samples, count_method=method, weight=weight)


def _wait_for_download(job_root: str, poll_s: float = DOWNLOAD_POLL_S) -> None:
    """Another rank downloads the pool; wait for its manifest and every shard's marker."""
    from winnow.shared.jobs import MANIFEST, JobManifest
    from winnow.shared.shards import is_complete, shard_prefix

    log.info("waiting_for_pool_download", job_root=job_root)
    while not storage.exists(storage.join(job_root, MANIFEST)):
        time.sleep(poll_s)
    manifest = JobManifest.load(job_root)
    folder = storage.join(job_root, DOWNLOAD_STAGE)
    while not all(is_complete(shard_prefix(folder, i)) for i in range(manifest.shard_count)):
        time.sleep(poll_s)


def download_pool(spec: str, job_root: str, options: PoolOptions, *, job_id: str) -> str:
    """Download pool ``spec`` into ``job_root`` with winnow's downloader stage (resumable); the shard folder.

    Shards already finished there are not fetched again; a pool with no rows, or none that
    could be downloaded, is an error.
    """
    from winnow.services.downloader.pool import prepare_job
    from winnow.services.downloader.stage import DownloadOptions, DownloadStage
    from winnow.shared.service.embedded import run_pipeline
    from winnow.shared.jobs import JobManifest, stage_totals
    from winnow.shared.shards import is_complete, shard_prefix

    options.validate()
    if JobManifest.exists(job_root):
        manifest = JobManifest.load(job_root)
        if manifest.pool_uri != spec:
            raise ValueError(f"{job_root} holds the download of pool {manifest.pool_uri}, not {spec}; "
                             f"give the run another exp_name or remove that folder")
    manifest = prepare_job(spec, job_root, job_id=job_id, input_format=options.input_format,
                           url_col=options.url_col, caption_col=options.caption_col,
                           samples_per_shard=options.samples_per_shard)
    if manifest.sample_count == 0:
        raise ValueError(f"pool {spec} has no rows to download")
    folder = storage.join(job_root, DOWNLOAD_STAGE)
    done = sum(is_complete(shard_prefix(folder, i)) for i in range(manifest.shard_count))
    if done < manifest.shard_count:
        log.info("pool_download", pool=spec, rows=manifest.sample_count, shards=manifest.shard_count,
                 already_finished=done, job_root=job_root)
        stage = DownloadStage(options.download or DownloadOptions())
        result = run_pipeline(manifest, [stage], workers_per_stage=options.workers, partitions=options.workers,
                              show_progress=False)
        if result.dead_letters:
            errors = "; ".join(f"shard {d.ref.shard_id}: {d.error}" for d in result.dead_letters[:3])
            raise RuntimeError(f"{len(result.dead_letters)} of {manifest.shard_count} shards of pool {spec} could "
                               f"not be downloaded ({errors}); run again to retry them")
    totals = stage_totals(job_root, DOWNLOAD_STAGE)
    if totals.kept == 0:
        reasons = ", ".join(f"{reason}: {n}" for reason, n in totals.reasons.most_common(5)) or "none recorded"
        raise ValueError(f"pool {spec} has no usable rows: none of its {totals.samples} samples could be "
                         f"downloaded (reasons: {reasons})")
    log.info("pool_downloaded", pool=spec, kept=totals.kept, of=totals.samples, reasons=dict(totals.reasons),
             skipped_fetching=done == manifest.shard_count)
    return folder


def _pool_source(name: str, spec: str, *, work_dir: str | None, pool: PoolOptions, count: bool, download: bool,
                 weight: float | None) -> Source:
    if work_dir is None:
        raise ValueError(f"{spec} is a pool: it is downloaded into the run's folder when training starts "
                         f"(train(), winnow train), not here")
    job_root = storage.join(work_dir, "sources", name)
    if download:
        folder = download_pool(spec, job_root, pool, job_id=name)
    else:
        _wait_for_download(job_root)
        folder = storage.join(job_root, DOWNLOAD_STAGE)
    detail = f"pool downloaded with winnow's downloader into {job_root}"
    return _shard_folder_source(name, spec, "pool", folder, detail, count=count, weight=weight)


def resolve_source(spec: str, *, name: str | None = None, weight: float | None = None, work_dir: str | None = None,
                   pool: PoolOptions | None = None, count: bool = True, download: bool = True) -> Source:
    """One source, resolved: its kind, webdataset patterns and (with ``count``) its sample count.

    ``work_dir`` is where pools are downloaded (``WORK_DIR/sources/NAME/``); ``download=False``
    waits for another process (rank 0) to download them instead.
    """
    kind = source_kind(spec)
    name = name or source_names([spec])[0]
    if kind == "job":
        return _job_source(name, spec, count=count, weight=weight)
    if kind == "shards":
        return _shard_folder_source(name, spec, "shards", spec.rstrip("/") or spec, "", count=count, weight=weight)
    if kind == "pool":
        return _pool_source(name, spec, work_dir=work_dir, pool=pool or PoolOptions(), count=count,
                            download=download, weight=weight)
    return _pattern_source(name, spec, count=count, weight=weight)


def resolve_sources(specs: Sequence[str], weights: Sequence[float] | None = None, *, work_dir: str | None = None,
                    pool: PoolOptions | None = None, count: bool = True, download: bool = True) -> list[Source]:
    """Every source resolved and, with ``count``, its proportion and upsampling factor planned.

    Sources that are cheap to count (markers, ledgers, local tars) are always counted with
    ``count``; ``pipe:`` and ``http(s)`` patterns are read to count them only when weights ask for it.
    """
    check_weights(specs, weights)
    names = source_names(specs)
    resolved = []
    for index, (spec, name) in enumerate(zip(specs, names)):
        weight = None if weights is None else float(weights[index])
        expensive = spec.startswith("pipe:") or _scheme(spec) in WEBDATASET_URL_SCHEMES
        source = resolve_source(spec, name=name, weight=weight, work_dir=work_dir, pool=pool,
                                count=count and (weights is not None or not expensive), download=download)
        if count and source.sample_count == 0:
            raise ValueError(f"data source {spec} holds no samples (counted by {source.count_method})")
        resolved.append(source)
    return plan_sampling(resolved) if count else resolved


# ---------------------------------------------------------------------------------------------
# Weights


def plan_sampling(sources: Sequence[Source]) -> list[Source]:
    """The sources with their expected proportions and open_clip upsampling factors.

    With weights, source s gets the factor ``p_s * N / n_s`` (``p_s`` its normalised weight,
    ``n_s`` its samples, ``N`` all samples): shards are drawn with probability proportional to
    their factor and read whole, so s yields ``p_s`` of the samples. Without weights the factors
    are left out (open_clip draws every shard alike) and a source's proportion is its size's.
    """
    weighted = [s.weight is not None for s in sources]
    if any(weighted) and not all(weighted):
        raise ValueError("give a weight to every data source or to none")
    counts = [s.sample_count for s in sources]
    if not all(weighted):
        total = sum(counts) if all(c is not None for c in counts) else None
        return [replace(s, proportion=(s.sample_count / total) if total else None) for s in sources]
    unknown = [s.spec for s in sources if not s.sample_count]
    if unknown:
        raise ValueError(f"weights need every source's sample count, and {', '.join(unknown)} could not be counted")
    total_weight, total_samples = sum(s.weight for s in sources), sum(counts)
    return [replace(s, proportion=s.weight / total_weight,
                    upsampling_factor=(s.weight / total_weight) * total_samples / s.sample_count)
            for s in sources]


def train_data(sources: Sequence[Source]) -> tuple[str, str | None]:
    """open_clip's ``--train-data`` and ``--train-data-upsampling-factors`` (``::``-separated, one per pattern)."""
    patterns = [pattern for s in sources for pattern in s.patterns]
    if all(s.upsampling_factor is None for s in sources):
        return "::".join(patterns), None
    if any(s.upsampling_factor is None for s in sources):
        raise ValueError("some sources have upsampling factors and some not; plan them together (plan_sampling)")
    factors = [f"{s.upsampling_factor:.8g}" for s in sources for _ in s.patterns]
    return "::".join(patterns), "::".join(factors)


# ---------------------------------------------------------------------------------------------
# python -m winnow.services.trainer.sources cat URL


def cat(url: str, out=None) -> None:
    """Copy ``url`` (anything fsspec opens) to stdout: the command behind object-storage patterns."""
    import fsspec

    out = out or sys.stdout.buffer
    with fsspec.open(url, "rb") as handle:
        shutil.copyfileobj(handle, out, 1 << 20)
    out.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m winnow.services.trainer.sources cat URL``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 2 or argv[0] != "cat":
        print("usage: python -m winnow.services.trainer.sources cat URL", file=sys.stderr)
        return 2
    try:
        cat(argv[1])
    except BrokenPipeError:  # the reader stopped early (webdataset may): exit with the status it ignores
        os._exit(141)
    except FileNotFoundError as exc:
        print(f"cat: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
