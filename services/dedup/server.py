"""The dedup service's gRPC API: is this image a copy of an evaluation image?"""

from __future__ import annotations

import grpc

from winnow.services.dedup.stage import DedupStage
from winnow.shared.proto import curation_pb2, curation_pb2_grpc
from winnow.shared.service.grpc_server import ServiceBinding
from winnow.shared.service.images import decode_images

SERVICE_NAME = curation_pb2.DESCRIPTOR.services_by_name["Dedup"].full_name


class DedupServicer(curation_pb2_grpc.DedupServicer):
    def __init__(self, stage: DedupStage) -> None:
        self.stage = stage

    def MatchEvalSet(self, request, context):
        images = decode_images(request.images, context)
        self.stage.setup()
        if self.stage.eval_index is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "this dedup service has no evaluation index")
        similarity, matches = self.stage.eval_index.match(self.stage.descriptor.describe(images))
        return curation_pb2.MatchEvalSetResponse(
            matches=[curation_pb2.EvalMatch(similarity=float(s), is_duplicate=m is not None, match=m or "")
                     for s, m in zip(similarity, matches)],
            threshold=self.stage.eval_index.threshold, descriptor=self.stage.eval_index.descriptor)


def bindings(stage: DedupStage):
    return lambda bus: [ServiceBinding(curation_pb2_grpc.add_DedupServicer_to_server, DedupServicer(stage),
                                       SERVICE_NAME)]
