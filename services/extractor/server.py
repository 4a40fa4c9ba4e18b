"""The extractor's gRPC API: read one crawl file now, submit a crawl as a job, follow a job."""

from __future__ import annotations

import uuid

import grpc
import structlog

from winnow.services.extractor.claims import ClaimStoreUnsupported
from winnow.services.extractor.crawl_job import CrawlJob, prepare_crawl_job
from winnow.shared.jobs import publish_refs
from winnow.services.extractor.extract import ExtractOptions, FileStats, extract_file
from winnow.services.extractor.pool_shard import job_file_stats, pool_parquet, sum_file_stats
from winnow.services.extractor.reader import CrawlFileMissing, CrawlReadError
from winnow.services.extractor.segments import COMMON_CRAWL_PREFIX, check_crawl_file, read_segment_list
from winnow.services.extractor.stage import ExtractStage
from winnow.shared import storage
from winnow.shared.access import AccessPolicy, check_identifier
from winnow.shared.bus.base import Bus
from winnow.shared.proto import extractor_pb2, extractor_pb2_grpc
from winnow.shared.service.grpc_server import ServiceBinding
from winnow.shared.service.job_progress import requested_job_root, stage_progress
from winnow.shared.service.refusals import refusals_as_status

log = structlog.get_logger(__name__)

SERVICE_NAME = extractor_pb2.DESCRIPTOR.services_by_name["Extractor"].full_name
DEFAULT_PAIRS = 1000
MAX_PAIRS = 10_000


def stats_message(stats: FileStats) -> extractor_pb2.CrawlFileStats:
    return extractor_pb2.CrawlFileStats(
        source_file=stats.source_file, records=stats.records, pages=stats.pages, images=stats.images,
        kept=stats.kept, reasons=dict(stats.reasons), skipped=dict(stats.skipped), issues=dict(stats.issues),
        seconds=stats.seconds)


class ExtractorServicer(extractor_pb2_grpc.ExtractorServicer):
    def __init__(self, stage: ExtractStage, bus: Bus, *, input_topic: str, output_uri: str,
                 policy: AccessPolicy | None = None) -> None:
        self.stage = stage
        # every path in a request goes through this (winnow.shared.access); by default only the job storage
        self.policy = policy or AccessPolicy(read_roots=(output_uri,), write_roots=(output_uri,))
        self.bus = bus
        self.input_topic = input_topic
        self.output_uri = output_uri

    def _options(self, request, context) -> ExtractOptions:
        defaults = self.stage.options
        if request.min_caption_chars < 0 or request.max_caption_chars < 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "caption bounds must not be negative")
        try:
            return ExtractOptions(min_caption_chars=request.min_caption_chars or defaults.min_caption_chars,
                                  max_caption_chars=request.max_caption_chars or defaults.max_caption_chars)
        except ValueError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    def ExtractFile(self, request, context):
        if not request.uri:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "uri is required")
        if not 0 <= request.max_pairs <= MAX_PAIRS:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"max_pairs must be between 0 and {MAX_PAIRS}")
        options = self._options(request, context)
        with refusals_as_status(context):
            uri = self.policy.read(request.uri, "uri")
            output_uri = self.policy.write(request.output_uri, "output_uri") if request.output_uri else ""
        try:
            extraction = extract_file(check_crawl_file(uri), options)
        except CrawlFileMissing as exc:  # before ValueError: it is one
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except ValueError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except CrawlReadError as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        if output_uri:
            storage.write_bytes(output_uri, pool_parquet(extraction.rows))
        limit = request.max_pairs or DEFAULT_PAIRS
        pairs = [extractor_pb2.ExtractedPair(uid=r.uid, url=r.url, text=r.text, page_url=r.page_url,
                                             source_file=r.source_file) for r in extraction.rows[:limit]]
        return extractor_pb2.ExtractFileResponse(pairs=pairs, stats=stats_message(extraction.stats),
                                                 pairs_truncated=len(extraction.rows) > limit,
                                                 output_uri=request.output_uri)

    def SubmitCrawl(self, request, context):
        if request.max_files < 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "max_files must not be negative")
        options = self._options(request, context)
        with refusals_as_status(context):
            job_id = check_identifier(request.job_id, "job_id") if request.job_id else ""
            output_uri = self.policy.write(request.output_uri, "output_uri") if request.output_uri else ""
            paths_uri = self.policy.read(request.paths_uri, "paths_uri") if request.paths_uri else ""
            named = self.policy.read_all(request.files, "files")
        if not output_uri and not job_id:
            job_id = uuid.uuid4().hex[:16]
        job_root = output_uri or storage.join(self.output_uri, job_id)
        dedup = request.dedup_across_files if request.HasField("dedup_across_files") else self.stage.dedup_across_files
        try:
            files = []
            if paths_uri:
                listed = read_segment_list(paths_uri, request.paths_prefix or COMMON_CRAWL_PREFIX)
                with refusals_as_status(context):  # every listed file, before any is fetched
                    files += self.policy.read_all(listed, "a file of paths_uri")
            files += [check_crawl_file(uri) for uri in named]
            files = list(dict.fromkeys(files))
            if request.max_files:
                files = files[:request.max_files]
            if not files and not CrawlJob.exists(job_root):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "paths_uri or files is required")
            job = prepare_crawl_job(files, job_root, job_id=job_id, options=options,
                                    dedup_across_files=dedup, source=paths_uri)
        except FileNotFoundError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, f"segment list not found: {exc}")
        except ClaimStoreUnsupported as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except ValueError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        publish_refs(self.bus, self.input_topic, job.refs())
        log.info("crawl_submitted", job_id=job.job_id, files=len(job.files), job_root=job.job_root)
        return extractor_pb2.SubmitCrawlResponse(job_id=job.job_id, job_root=job.job_root, file_count=len(job.files))

    def GetJob(self, request, context):
        job_root = requested_job_root(request, context, self.policy, self.output_uri)
        if not CrawlJob.exists(job_root):
            context.abort(grpc.StatusCode.NOT_FOUND, f"no crawl job at {job_root}")
        job = CrawlJob.load(job_root)
        finished = job_file_stats(job_root)
        return extractor_pb2.CrawlJobProgress(
            job_id=job.job_id, job_root=job_root, file_count=len(job.files), files_done=len(finished),
            done=len(finished) >= len(job.files), totals=stats_message(sum_file_stats(finished)),
            stages=stage_progress(job_root))


def extractor_bindings(stage: ExtractStage, *, input_topic: str, output_uri: str, policy: AccessPolicy | None = None):
    """The gRPC services the extractor hosts, given the bus the service opened."""

    def bind(bus: Bus) -> list[ServiceBinding]:
        servicer = ExtractorServicer(stage, bus, input_topic=input_topic, output_uri=output_uri, policy=policy)
        return [ServiceBinding(extractor_pb2_grpc.add_ExtractorServicer_to_server, servicer, SERVICE_NAME)]

    return bind
