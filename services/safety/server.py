"""The safety service's gRPC API: score captions or images on request."""

from __future__ import annotations

from winnow.services.safety.stage import SafetyStage
from winnow.shared.proto import curation_pb2, curation_pb2_grpc
from winnow.shared.service.grpc_server import ServiceBinding
from winnow.shared.service.images import check_count, decode_images

SERVICE_NAME = curation_pb2.DESCRIPTOR.services_by_name["Safety"].full_name


class SafetyServicer(curation_pb2_grpc.SafetyServicer):
    def __init__(self, stage: SafetyStage) -> None:
        self.stage = stage

    def ScoreCaptions(self, request, context):
        check_count(request.texts, context, "texts")
        self.stage.setup()
        scores = self.stage.toxicity.score(list(request.texts))
        threshold = self.stage.options.toxicity_threshold
        return curation_pb2.Scores(scores=scores.tolist(), dropped=[s >= threshold for s in scores.tolist()],
                                   threshold=threshold, model=self.stage.toxicity.name)

    def ScoreImages(self, request, context):
        images = decode_images(request.images, context)
        self.stage.setup()
        scores = self.stage.nsfw.score(images)
        threshold = self.stage.options.nsfw_threshold
        return curation_pb2.Scores(scores=scores.tolist(), dropped=[s >= threshold for s in scores.tolist()],
                                   threshold=threshold, model=self.stage.nsfw.name)


def bindings(stage: SafetyStage):
    return lambda bus: [ServiceBinding(curation_pb2_grpc.add_SafetyServicer_to_server, SafetyServicer(stage),
                                       SERVICE_NAME)]
