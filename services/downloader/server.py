"""The downloader's gRPC API: submit a pool, fetch a few URLs now, follow a job."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import grpc
import structlog

from services.downloader.pool import PoolFormatError, prepare_job
from services.downloader.resize import MIME_TYPES
from services.downloader.stage import DownloadStage, SampleOutcome, download_sample
from shared import storage
from shared.bus.base import Bus
from shared.jobs import JobManifest, job_stages, publish_pool, stage_totals
from shared.proto import downloader_pb2, downloader_pb2_grpc
from shared.service.grpc_server import ServiceBinding

log = structlog.get_logger(__name__)

MAX_FETCH_URLS = 64
SERVICE_NAME = downloader_pb2.DESCRIPTOR.services_by_name["Downloader"].full_name


class DownloaderServicer(downloader_pb2_grpc.DownloaderServicer):
    def __init__(self, stage: DownloadStage, bus: Bus, *, input_topic: str, output_uri: str,
                 samples_per_shard: int) -> None:
        self.stage = stage
        self.bus = bus
        self.input_topic = input_topic
        self.output_uri = output_uri
        self.samples_per_shard = samples_per_shard

    def SubmitPool(self, request, context):
        if not request.pool_uri:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "pool_uri is required")
        if request.samples_per_shard < 0 or request.max_samples < 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "samples_per_shard and max_samples must not be negative")
        job_id = request.job_id or None
        job_root = request.output_uri or (storage.join(self.output_uri, job_id) if job_id else "")
        try:
            if not job_root:
                job_id = uuid.uuid4().hex[:16]
                job_root = storage.join(self.output_uri, job_id)
            manifest = prepare_job(
                request.pool_uri, job_root, job_id=job_id or "", input_format=request.input_format,
                url_col=request.url_col or "url", caption_col=request.caption_col or "text",
                samples_per_shard=request.samples_per_shard or self.samples_per_shard,
                max_samples=request.max_samples)
        except FileNotFoundError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, f"pool not found: {exc}")
        except (PoolFormatError, ValueError) as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        publish_pool(self.bus, manifest, self.input_topic)
        log.info("job_submitted", job_id=manifest.job_id, shards=manifest.shard_count, samples=manifest.sample_count)
        return downloader_pb2.SubmitPoolResponse(job_id=manifest.job_id, shard_count=manifest.shard_count,
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
        job_root = request.job_root or (storage.join(self.output_uri, request.job_id) if request.job_id else "")
        if not job_root:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "job_id or job_root is required")
        if not JobManifest.exists(job_root):
            context.abort(grpc.StatusCode.NOT_FOUND, f"no job at {job_root}")
        manifest = JobManifest.load(job_root)
        stages = [stage_totals(job_root, name) for name in job_stages(job_root)]
        downloaded = next((s.shards_done for s in stages if s.stage == self.stage.name), 0)
        return downloader_pb2.JobProgress(
            job_id=manifest.job_id, job_root=job_root, shard_count=manifest.shard_count,
            sample_count=manifest.sample_count, done=downloaded >= manifest.shard_count,
            stages=[downloader_pb2.StageProgress(stage=s.stage, shards_done=s.shards_done, samples=s.samples,
                                                 kept=s.kept, reasons=dict(s.reasons)) for s in stages])


def _fetched(url: str, outcome: SampleOutcome) -> downloader_pb2.FetchedImage:
    return downloader_pb2.FetchedImage(
        url=url, status=outcome.status, reason=outcome.reason or "", error_message=outcome.error_message or "",
        image=outcome.image or b"", mime_type=MIME_TYPES.get(outcome.extension or "", ""),
        width=outcome.width or 0, height=outcome.height or 0, original_width=outcome.original_width or 0,
        original_height=outcome.original_height or 0, sha256=outcome.sha256 or "")


def downloader_bindings(stage: DownloadStage, *, input_topic: str, output_uri: str, samples_per_shard: int):
    """The gRPC services the downloader hosts, given the bus the service opened."""

    def bind(bus: Bus) -> list[ServiceBinding]:
        servicer = DownloaderServicer(stage, bus, input_topic=input_topic, output_uri=output_uri,
                                      samples_per_shard=samples_per_shard)
        return [ServiceBinding(downloader_pb2_grpc.add_DownloaderServicer_to_server, servicer, SERVICE_NAME)]

    return bind
