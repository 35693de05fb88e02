"""Reading back an offline W&B run: the history rows of its ``run-*.wandb`` file.

The file is a log of protobuf ``Record`` messages in 32 KiB blocks (a 7-byte ``:W&B``
header, then per chunk a 7-byte header: CRC32, length (little-endian uint16), type: 1 full,
2 first, 3 middle, 4 last); W&B ships no reader for it, so the tests use this one.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK, HEADER = 32768, 7


def _records(data: bytes) -> list[bytes]:
    pos, parts, records = HEADER, b"", []
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # a block's zero-padded tail
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        parts += data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind in (1, 4):
            records.append(parts)
            parts = b""
    return records


def history(path: Path) -> list[dict[str, object]]:
    """The history rows ({key: value}, with ``_step``) of an offline run's ``.wandb`` file."""
    from wandb.proto import wandb_internal_pb2 as pb

    rows = []
    for raw in _records(path.read_bytes()):
        record = pb.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            items = record.history.item
            rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items})
    return rows
