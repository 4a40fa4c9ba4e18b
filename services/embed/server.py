"""The embed service's gRPC API: CLIP embeddings of texts or images on request."""

from __future__ import annotations

import grpc

from winnow.services.embed.stage import EmbedStage
from winnow.shared.proto import curation_pb2, curation_pb2_grpc
from winnow.shared.service.grpc_server import ServiceBinding
from winnow.shared.service.images import check_count, decode_images

SERVICE_NAME = curation_pb2.DESCRIPTOR.services_by_name["Embed"].full_name


class EmbedServicer(curation_pb2_grpc.EmbedServicer):
    def __init__(self, stage: EmbedStage) -> None:
        self.stage = stage

    def _encoder(self, key: str, context):
        self.stage.setup()
        key = key or next(iter(self.stage.encoders))
        if key not in self.stage.encoders:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"no model {key!r}; this service has {sorted(self.stage.encoders)}")
        return key, self.stage.encoders[key]

    def EmbedTexts(self, request, context):
        check_count(request.texts, context, "texts")
        key, encoder = self._encoder(request.model, context)
        values = encoder.embed_texts(list(request.texts))
        return curation_pb2.Embeddings(model=key, dim=encoder.dim, values=values.reshape(-1).tolist())

    def EmbedImages(self, request, context):
        images = decode_images(request.images, context)
        key, encoder = self._encoder(request.model, context)
        values = encoder.embed_images(images)
        return curation_pb2.Embeddings(model=key, dim=encoder.dim, values=values.reshape(-1).tolist())


def bindings(stage: EmbedStage):
    return lambda bus: [ServiceBinding(curation_pb2_grpc.add_EmbedServicer_to_server, EmbedServicer(stage),
                                       SERVICE_NAME)]
