"""A crawl job: a list of crawl files, one pool shard each, and how they are extracted.

    {job_root}/crawl.json              the files (shard i = files[i]) and the extraction options
    {job_root}/job.json                the job manifest every stage reads, written after crawl.json
    {job_root}/pool/{i:08d}.parquet    file i's kept pairs, then {i:08d}_stats.json
    {job_root}/extractor/claims/       the cross-file dedup log (winnow.services.extractor.claims)

The shard count is known when the job is submitted: one shard per crawl file, an empty shard
for a file that holds no usable image. Every ShardRef the extractor passes on carries it, so
the filter, which waits for all of a job's shards, knows how many to wait for. The manifest's
``sample_count`` is 0 (unknown until the files are read) and its ``samples_per_shard`` only
sizes the sample keys, as a crawl file yields far more pairs than a pool slice holds.

The options live in ``crawl.json`` so every replica extracts a job the same way, whatever its
own settings say.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field

from winnow.services.extractor.claims import ClaimStoreUnsupported, supports_claims
from winnow.services.extractor.extract import ExtractOptions
from winnow.shared import storage
from winnow.shared.jobs import JobManifest
from winnow.shared.messages import ShardRef, make_ref

CRAWL_MANIFEST = "crawl.json"
CRAWL_STAGE = "crawl"  # the stage of the refs on the crawl topic: their uri is a crawl file
SAMPLES_PER_FILE_HINT = 1_000_000  # sample keys get 6 digits after the shard id


@dataclass(frozen=True)
class CrawlJob:
    job_id: str
    job_root: str
    files: tuple[str, ...]
    options: ExtractOptions = field(default_factory=ExtractOptions)
    dedup_across_files: bool = True
    source: str = ""  # the segment list the files came from, if any
    created: float = 0.0

    def to_json(self) -> dict:
        return {"job_id": self.job_id, "job_root": self.job_root, "files": list(self.files),
                "options": self.options.to_json(), "dedup_across_files": self.dedup_across_files,
                "source": self.source, "created": self.created}

    @classmethod
    def from_json(cls, data: dict) -> CrawlJob:
        return cls(job_id=data["job_id"], job_root=data["job_root"], files=tuple(data["files"]),
                   options=ExtractOptions.from_json(data.get("options", {})),
                   dedup_across_files=bool(data.get("dedup_across_files", True)), source=data.get("source", ""),
                   created=float(data.get("created", 0.0)))

    @staticmethod
    def exists(job_root: str) -> bool:
        return storage.exists(storage.join(job_root, CRAWL_MANIFEST))

    @classmethod
    def load(cls, job_root: str) -> CrawlJob:
        return cls.from_json(json.loads(storage.read_text(storage.join(job_root, CRAWL_MANIFEST))))

    def save(self) -> None:
        storage.write_text(storage.join(self.job_root, CRAWL_MANIFEST), json.dumps(self.to_json(), indent=1))

    def manifest(self) -> JobManifest:
        return JobManifest(job_id=self.job_id, job_root=self.job_root,
                           pool_uri=self.source or storage.join(self.job_root, CRAWL_MANIFEST),
                           shard_count=len(self.files), sample_count=0, samples_per_shard=SAMPLES_PER_FILE_HINT,
                           created=self.created)

    def refs(self) -> list[ShardRef]:
        """One ShardRef per crawl file: the extractor's work items."""
        return [make_ref(job_id=self.job_id, shard_id=i, stage=CRAWL_STAGE, uri=uri, sample_count=0,
                         job_root=self.job_root, shard_count=len(self.files))
                for i, uri in enumerate(self.files)]


def prepare_crawl_job(files: list[str], job_root: str, *, job_id: str = "", options: ExtractOptions | None = None,
                      dedup_across_files: bool = True, source: str = "") -> CrawlJob:
    """Write the job's ``crawl.json`` and manifest, or return the job already there (resubmission)."""
    if CrawlJob.exists(job_root):
        job = CrawlJob.load(job_root)
        if job_id and job.job_id != job_id:
            raise ValueError(f"{job_root} already holds job {job.job_id}, not {job_id}")
        if files and tuple(files) != job.files:
            raise ValueError(f"{job_root} already holds job {job.job_id} over other crawl files")
        if not JobManifest.exists(job_root):
            job.manifest().save()
        return job
    if JobManifest.exists(job_root):
        raise ValueError(f"{job_root} already holds a pool job; a crawl job needs its own directory")
    if not files:
        raise ValueError("a crawl job needs at least one crawl file")
    if dedup_across_files and not supports_claims(job_root):
        raise ClaimStoreUnsupported(f"{job_root}: cross-file dedup needs a job root on a local disk or S3; "
                                    "put the job there or turn dedup_across_files off")
    job = CrawlJob(job_id=job_id or uuid.uuid4().hex[:16], job_root=job_root, files=tuple(files),
                   options=options or ExtractOptions(), dedup_across_files=dedup_across_files, source=source,
                   created=time.time())
    job.save()
    job.manifest().save()  # last: a job with a manifest is complete
    return job


