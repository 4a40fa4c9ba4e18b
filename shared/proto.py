"""The generated protobuf modules, checked against ``protos/`` on import."""

from winnow.shared.protogen import ensure_generated

ensure_generated()

from winnow.protos.winnow.v1 import (  # noqa: E402
    curation_pb2,
    curation_pb2_grpc,
    downloader_pb2,
    downloader_pb2_grpc,
    extractor_pb2,
    extractor_pb2_grpc,
    shard_pb2,
    training_pb2,
    training_pb2_grpc,
)

__all__ = ["curation_pb2", "curation_pb2_grpc", "downloader_pb2", "downloader_pb2_grpc", "extractor_pb2",
           "extractor_pb2_grpc", "shard_pb2", "training_pb2", "training_pb2_grpc"]
