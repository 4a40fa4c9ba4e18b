"""Encoding and decoding of the ``ShardRef`` messages that travel on the bus."""

from __future__ import annotations

from google.protobuf.message import DecodeError

from winnow.shared.proto import shard_pb2
from winnow.shared.shards import SCHEMA_VERSION, ShardFormatError, check_schema_version

ShardRef = shard_pb2.ShardRef
DeadLetter = shard_pb2.DeadLetter


class PoisonMessage(ValueError):
    """A bus message that is not a usable ShardRef; it goes to the dead-letter topic untouched."""


def make_ref(*, job_id: str, shard_id: int, stage: str, uri: str, sample_count: int, job_root: str,
             shard_count: int = 0, attempt: int = 0) -> ShardRef:
    return ShardRef(job_id=job_id, shard_id=shard_id, stage=stage, uri=uri, sample_count=sample_count,
                    schema_version=SCHEMA_VERSION, attempt=attempt, job_root=job_root, shard_count=shard_count)


def encode_ref(ref: ShardRef) -> bytes:
    return ref.SerializeToString(deterministic=True)


def decode_ref(value: bytes | None) -> ShardRef:
    """Parse and validate a ShardRef; anything unusable raises PoisonMessage."""
    if not value:
        raise PoisonMessage("empty message value")
    ref = ShardRef()
    try:
        ref.ParseFromString(value)
    except DecodeError as exc:
        raise PoisonMessage(f"not a ShardRef protobuf: {exc}") from exc
    if not ref.job_id or not ref.uri or not ref.job_root:
        raise PoisonMessage(f"ShardRef lacks job_id, uri or job_root: {ref}")
    try:
        check_schema_version(ref.schema_version)
    except ShardFormatError as exc:
        raise PoisonMessage(str(exc)) from exc
    return ref


def message_key(ref: ShardRef) -> str:
    """Kafka key of a ref: job and shard, so one shard's messages stay in order on one partition."""
    return f"{ref.job_id}/{ref.shard_id:08d}"
