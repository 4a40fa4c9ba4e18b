"""Reading an offline wandb run file (``run-*.wandb``) with wandb's own protobuf ``Record``.

The file is wandb's ``:W&B`` header (7 bytes) and then LevelDB's log format: 32 KiB blocks of
chunks, each ``crc32 (4) | length (2, little-endian) | type (1) | data``, type 1 a whole record,
2/3/4 its first, middle and last pieces.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7


def wandb_records(path: Path) -> Iterator:
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a wandb run file")
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # the tail of a block too short for a chunk header is padding
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        pending += data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def logged_history(path: Path) -> list[dict[str, str]]:
    """Each ``wandb.log`` call's items, keyed ``a/b`` as logged, values as JSON text."""
    return [{item.key or "/".join(item.nested_key): item.value_json for item in record.history.item}
            for record in wandb_records(path) if record.WhichOneof("record_type") == "history"]


def run_config(path: Path) -> tuple[str, dict[str, str]]:
    """The run's project and config (values as JSON text)."""
    for record in wandb_records(path):
        if record.WhichOneof("record_type") == "run":
            return record.run.project, {item.key: item.value_json for item in record.run.config.update}
    raise ValueError(f"{path} has no run record")
