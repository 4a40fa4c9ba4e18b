"""The blur service's gRPC API: find and blur the faces of an image."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from winnow.services.blur.stage import BlurStage
from winnow.shared.face_blur import blur_boxes
from winnow.shared.proto import curation_pb2, curation_pb2_grpc
from winnow.shared.service.grpc_server import ServiceBinding
from winnow.shared.service.images import decode_images

SERVICE_NAME = curation_pb2.DESCRIPTOR.services_by_name["Blur"].full_name


class BlurServicer(curation_pb2_grpc.BlurServicer):
    def __init__(self, stage: BlurStage) -> None:
        self.stage = stage

    def BlurFaces(self, request, context):
        images = decode_images(request.images, context)
        self.stage.setup()
        results = []
        for message, image, found in zip(request.images, images, self.stage.detector.detect(images)):
            boxes = np.asarray(found, np.float32).reshape(-1, 5)
            data = message.data
            if len(boxes):
                with Image.open(io.BytesIO(message.data)) as source:
                    fmt = source.format or "PNG"
                buffer = io.BytesIO()
                blurred = blur_boxes(Image.fromarray(image), boxes[:, :4].tolist())
                blurred.save(buffer, fmt, **({"quality": self.stage.options.jpeg_quality} if fmt != "PNG" else {}))
                data = buffer.getvalue()
            results.append(curation_pb2.BlurredImage(
                faces=[curation_pb2.FaceBox(x0=b[0], y0=b[1], x1=b[2], y1=b[3], score=b[4]) for b in boxes.tolist()],
                data=data))
        return curation_pb2.BlurFacesResponse(images=results)


def bindings(stage: BlurStage):
    return lambda bus: [ServiceBinding(curation_pb2_grpc.add_BlurServicer_to_server, BlurServicer(stage),
                                       SERVICE_NAME)]
