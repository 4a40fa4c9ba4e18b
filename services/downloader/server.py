"""The downloader's gRPC API: submit a pool (or shards one already has), fetch a few URLs now, follow a job."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import grpc
import structlog

from winnow.services.downloader.pool import PoolFormatError, prepare_job
from winnow.services.downloader.resize import MIME_TYPES
from winnow.services.downloader.shards_import import list_input_shards, prepare_shards_job
from winnow.services.downloader.stage import DownloadStage, SampleOutcome, download_sample
from winnow.shared import storage
from winnow.shared.access import AccessPolicy, check_identifier
from winnow.shared.bus.base import Bus
from winnow.shared.jobs import JobManifest, publish_refs
from winnow.shared.proto import downloader_pb2, downloader_pb2_grpc
from winnow.shared.service.grpc_server import ServiceBinding
from winnow.shared.service.job_progress import requested_job_root, stage_progress
from winnow.shared.service.refusals import refusals_as_status
from winnow.shared.shards import ShardFormatError

log = structlog.get_logger(__name__)

MAX_FETCH_URLS = 64
SERVICE_NAME = downloader_pb2.DESCRIPTOR.services_by_name["Downloader"].full_name


class DownloaderServicer(downloader_pb2_grpc.DownloaderServicer):
    def __init__(self, stage: DownloadStage, bus: Bus, *, input_topic: str, output_uri: str,
                 samples_per_shard: int, policy: AccessPolicy | None = None) -> None:
        self.stage = stage
        # every path in a request goes through this (winnow.shared.access); by default only the job storage
        self.policy = policy or AccessPolicy(read_roots=(output_uri,), write_roots=(output_uri,))
        self.bus = bus
        self.input_topic = input_topic
        self.output_uri = output_uri
        self.samples_per_shard = samples_per_shard

    def SubmitPool(self, request, context):
        if not request.pool_uri:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "pool_uri is required")
        if request.samples_per_shard < 0 or request.max_samples < 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "samples_per_shard and max_samples must not be negative")
        with refusals_as_status(context):
            pool_uri = self.policy.read(request.pool_uri, "pool_uri")
            job_id = check_identifier(request.job_id, "job_id") if request.job_id else None
            job_root = (self.policy.write(request.output_uri, "output_uri") if request.output_uri
                        else storage.join(self.output_uri, job_id) if job_id else "")
        try:
            if not job_root:
                job_id = uuid.uuid4().hex[:16]
                job_root = storage.join(self.output_uri, job_id)
            manifest = prepare_job(
                pool_uri, job_root, job_id=job_id or "", input_format=request.input_format,
                url_col=request.url_col or "url", caption_col=request.caption_col or "text",
                samples_per_shard=request.samples_per_shard or self.samples_per_shard,
                max_samples=request.max_samples)
        except FileNotFoundError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, f"pool not found: {exc}")
        except (PoolFormatError, ValueError) as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, _without_content(exc, pool_uri))
        publish_refs(self.bus, self.input_topic, manifest.pool_refs())
        log.info("job_submitted", job_id=manifest.job_id, shards=manifest.shard_count, samples=manifest.sample_count)
        return downloader_pb2.SubmitPoolResponse(job_id=manifest.job_id, shard_count=manifest.shard_count,
                                                 sample_count=manifest.sample_count, job_root=manifest.job_root)

    def SubmitShards(self, request, context):
        """A job over shards the caller already has, under the read roots: each is queued on the
        downloader's own topic, and its worker imports it in place (``shards_import``)."""
        if not request.shards_uri:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "shards_uri is required")
        with refusals_as_status(context):
            shards_uri = self.policy.read(request.shards_uri, "shards_uri")
            job_id = check_identifier(request.job_id, "job_id") if request.job_id else None
            job_root = (self.policy.write(request.output_uri, "output_uri") if request.output_uri
                        else storage.join(self.output_uri, job_id) if job_id else "")
        try:
            inputs = list_input_shards(shards_uri)
        except FileNotFoundError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except ShardFormatError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        with refusals_as_status(context):  # each tar too: a link in the folder must not lead out of the roots
            self.policy.read_all([f"{prefix}.tar" for prefix in inputs], "shards_uri")
        if not job_root:
            job_id = uuid.uuid4().hex[:16]
            job_root = storage.join(self.output_uri, job_id)
        try:
            manifest = prepare_shards_job(shards_uri, job_root, job_id=job_id or "",
                                          images_blurred=request.images_blurred, input_shards=inputs)
        except ValueError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        publish_refs(self.bus, self.input_topic, manifest.pool_refs())
        log.info("shards_submitted", job_id=manifest.job_id, shards=manifest.shard_count, shards_uri=shards_uri)
        return downloader_pb2.SubmitShardsResponse(job_id=manifest.job_id, shard_count=manifest.shard_count,
                                                   sample_count=manifest.sample_count, job_root=manifest.job_root)

    def FetchUrls(self, request, context):
        if not request.urls:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "urls is empty")
        if len(request.urls) > MAX_FETCH_URLS:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"at most {MAX_FETCH_URLS} urls per call")
        options = self.stage.options
        overrides = {}
        if request.image_size:
            overrides["image_size"] = request.image_size
        if request.resize_mode:
            overrides["resize_mode"] = request.resize_mode
        if request.encode_format:
            overrides["encode_format"] = request.encode_format
            overrides["encode_quality"] = 9 if request.encode_format == "png" else 95
        if request.encode_quality:
            overrides["encode_quality"] = request.encode_quality
        try:
            resize = replace(options.resize, **overrides)
        except ValueError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        call_options = replace(options, resize=resize)
        if self.stage.fetcher is None:
            self.stage.setup()
        with ThreadPoolExecutor(max_workers=min(16, len(request.urls))) as pool:
            outcomes = list(pool.map(lambda url: download_sample(self.stage.fetcher, url, call_options), request.urls))
        return downloader_pb2.FetchUrlsResponse(images=[_fetched(u, o) for u, o in zip(request.urls, outcomes)])

    def GetJob(self, request, context):
        job_root = requested_job_root(request, context, self.policy, self.output_uri)
        if not JobManifest.exists(job_root):
            context.abort(grpc.StatusCode.NOT_FOUND, f"no job at {job_root}")
        manifest = JobManifest.load(job_root)
        stages = stage_progress(job_root)
        # the downloader's shards, or those imported from shards the user had
        downloaded = next((s.shards_done for s in stages if s.stage == manifest.first_stage), 0)
        return downloader_pb2.JobProgress(
            job_id=manifest.job_id, job_root=job_root, shard_count=manifest.shard_count,
            sample_count=manifest.sample_count, done=downloaded >= manifest.shard_count, stages=stages)


def _without_content(exc: Exception, pool_uri: str) -> str:
    """The error for the caller, never quoting the pool file: a parser's message may hold its lines."""
    if isinstance(exc, PoolFormatError) and exc.__cause__ is not None:
        log.warning("pool_unreadable", pool_uri=pool_uri, error=str(exc))
        return (f"cannot read {pool_uri} in the format asked for; check input_format "
                "(the details are in the service log)")
    message = str(exc)
    return message.split("; its columns are", 1)[0]


def _fetched(url: str, outcome: SampleOutcome) -> downloader_pb2.FetchedImage:
    return downloader_pb2.FetchedImage(
        url=url, status=outcome.status, reason=outcome.reason or "", error_message=outcome.error_message or "",
        image=outcome.image or b"", mime_type=MIME_TYPES.get(outcome.extension or "", ""),
        width=outcome.width or 0, height=outcome.height or 0, original_width=outcome.original_width or 0,
        original_height=outcome.original_height or 0, sha256=outcome.sha256 or "")


def downloader_bindings(stage: DownloadStage, *, input_topic: str, output_uri: str, samples_per_shard: int,
                        policy: AccessPolicy | None = None):
    """The gRPC services the downloader hosts, given the bus the service opened."""

    def bind(bus: Bus) -> list[ServiceBinding]:
        servicer = DownloaderServicer(stage, bus, input_topic=input_topic, output_uri=output_uri,
                                      samples_per_shard=samples_per_shard, policy=policy)
        return [ServiceBinding(downloader_pb2_grpc.add_DownloaderServicer_to_server, servicer, SERVICE_NAME)]

    return bind
