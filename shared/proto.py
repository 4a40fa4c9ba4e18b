"""The generated protobuf modules, checked against ``protos/`` on import."""

from shared.protogen import ensure_generated

ensure_generated()

from protos.winnow.v1 import downloader_pb2, downloader_pb2_grpc, shard_pb2  # noqa: E402

__all__ = ["downloader_pb2", "downloader_pb2_grpc", "shard_pb2"]
