"""The filter stage: once every shard of a job has passed the last curation stage, apply a
DataComp baseline to the whole pool and reshard the subset.

Unlike the per-shard stages it acts on a job: each incoming ShardRef checks whether the job is
complete (every shard's completion marker exists); the first message that finds it complete
runs the filter and the resharder, and their output's own marker (``reshard/_done.json``) makes
every later message, and any replica racing it, a cheap no-op.

The result is published once per job: the marker names the shard whose message completed the
job, and only a message of that shard (its redelivery after a crash between the marker and the
publish) publishes again. Late copies of other shards' messages, which at-least-once delivery
upstream produces, publish nothing, so the trainer is not asked to train the same subset twice.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace

from winnow.services.filter.apply import FilterConfig, apply_filter
from winnow.services.reshard.resharder import ReshardConfig, reshard
from winnow.shared import storage
from winnow.shared.messages import ShardRef, make_ref
from winnow.shared.shards import is_complete, shard_prefix
from winnow.shared.stage import JobStage

DONE_MARKER = "_done.json"


@dataclass(frozen=True)
class FilterOptions:
    filter: FilterConfig  # metadata_dir and save_path are filled in per job
    shard_size: int = 10_000
    shuffle_buffer: int = 0
    blur_faces: bool | None = None  # at reshard: None = the face_bboxes not yet blurred (ReshardConfig)


class FilterStage(JobStage):
    name = "filter"
    output_name = "reshard"

    def __init__(self, options: FilterOptions) -> None:
        self.options = options

    def job_complete(self, job_root: str, last_stage: str, shard_count: int) -> bool:
        """Whether every shard of the job has passed ``last_stage`` (its completion marker is there)."""
        source = storage.join(job_root, last_stage)
        return shard_count > 0 and all(is_complete(shard_prefix(source, i)) for i in range(shard_count))

    def process(self, ref: ShardRef) -> ShardRef | None:
        """The resharded subset's reference, once per job: None while the job is incomplete, and
        None for a late message of a shard other than the one that completed the job."""
        summary = self.finish_job(ref.job_root, ref.stage, ref.shard_count, completed_by_shard=ref.shard_id)
        if summary is None or summary.get("completed_by_shard", ref.shard_id) != ref.shard_id:
            return None
        return self.result_ref(ref.job_id, ref.job_root, summary)

    def finish_job(self, job_root: str, last_stage: str, shard_count: int, *,
                   completed_by_shard: int = 0) -> dict | None:
        """Filter and reshard the job if every shard has passed ``last_stage`` and it is not done yet.

        The result's summary, or None while shards are missing. ``completed_by_shard`` is recorded
        in the summary: the message of that shard is the one that publishes the result.
        """
        marker = storage.join(job_root, self.output_name, DONE_MARKER)
        if not storage.exists(marker):
            if not self.job_complete(job_root, last_stage, shard_count):
                return None
            output_dir = storage.join(job_root, self.output_name)
            summary = self.run_job(job_root, storage.join(job_root, last_stage), output_dir)
            summary["completed_by_shard"] = completed_by_shard
            storage.write_text(marker, json.dumps(summary, indent=1, default=str))
        return json.loads(storage.read_text(marker))

    def result_ref(self, job_id: str, job_root: str, summary: dict) -> ShardRef:
        """The reference to the resharded subset that ``summary`` describes."""
        return make_ref(job_id=job_id, shard_id=0, stage=self.output_name,
                        uri=storage.join(job_root, self.output_name), sample_count=summary["samples_written"],
                        job_root=job_root, shard_count=summary["output_shards"])

    def run_job(self, job_root: str, metadata_dir: str, output_dir: str) -> dict:
        # A filter of your own is named module:function; its files are named module.function.npy.
        subset_path = storage.join(job_root, self.name, f"{self.options.filter.name.replace(':', '.')}.npy")
        storage.makedirs(storage.join(job_root, self.name))
        config = replace(self.options.filter, metadata_dir=metadata_dir, save_path=subset_path)
        filtered = apply_filter(config)
        resharded = reshard(ReshardConfig(input_dir=metadata_dir, output_dir=output_dir, subset_file=subset_path,
                                          shard_size=self.options.shard_size,
                                          shuffle_buffer=self.options.shuffle_buffer,
                                          blur_faces=self.options.blur_faces, overwrite=True),
                            check_source=self.source_check)
        return {"filter": self.options.filter.name, "subset": subset_path, "kept": int(len(filtered.uids)),
                "candidates": filtered.candidates, "threshold": filtered.threshold, "removed_by": filtered.removed_by,
                "rules": filtered.rules, **{k: v for k, v in asdict(resharded).items()}}


def filter_summary(job_root: str) -> dict | None:
    """What the filter did to a job (``reshard/_done.json``), or None before it has run."""
    marker = storage.join(job_root, FilterStage.output_name, DONE_MARKER)
    if not storage.exists(marker):
        return None
    return json.loads(storage.read_text(marker))
