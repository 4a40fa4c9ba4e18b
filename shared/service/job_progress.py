"""What a service's ``GetJob`` answers, for any job in its storage: where the job is, and each stage's totals."""

from __future__ import annotations

import grpc

from winnow.shared import storage
from winnow.shared.access import AccessPolicy, check_identifier
from winnow.shared.jobs import job_stages, stage_totals
from winnow.shared.proto import downloader_pb2
from winnow.shared.service.refusals import refusals_as_status


def requested_job_root(request, context: grpc.ServicerContext, policy: AccessPolicy, output_uri: str) -> str:
    """The job folder a ``GetJob`` request names: its ``job_root`` (a place the service may read) or
    its ``job_id`` (an identifier, under ``output_uri``); the call is aborted with the reason otherwise."""
    if not request.job_root and not request.job_id:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "job_id or job_root is required")
    with refusals_as_status(context):
        if request.job_root:
            return policy.read(request.job_root, "job_root")
        return storage.join(output_uri, check_identifier(request.job_id, "job_id"))


def stage_progress(job_root: str) -> list[downloader_pb2.StageProgress]:
    """Each stage of the job so far: shards done, samples that entered it, kept, and not kept per reason."""
    return [downloader_pb2.StageProgress(stage=s.stage, shards_done=s.shards_done, samples=s.samples,
                                         kept=s.kept, reasons=dict(s.reasons))
            for s in (stage_totals(job_root, name) for name in job_stages(job_root))]
