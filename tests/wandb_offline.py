"""Read back what wandb logged offline: the records of a `run-<id>.wandb` file.

The file is a header (":W&B", a 2-byte magic, a version byte) followed by 32 KiB blocks of
LevelDB-style log records (crc32, length, type: full/first/middle/last) holding protobuf
`Record` messages from wandb.proto.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[Any]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a wandb log"
    out, pos, pending = [], HEADER, b""
    while pos + HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < HEADER:
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == FULL:
            pending = chunk
        elif kind == FIRST:
            pending = chunk
            continue
        elif kind == MIDDLE:
            pending += chunk
            continue
        elif kind == LAST:
            pending += chunk
        else:
            break
        record = pb.Record()
        record.ParseFromString(pending)
        out.append(record)
    return out


def history(path: Path) -> list[dict[str, Any]]:
    """Every logged step as {key: value}, keys joined with '/' as logged."""
    rows = []
    for record in records(path):
        if record.WhichOneof("record_type") == "history":
            row = {}
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                row[key] = json.loads(item.value_json)
            rows.append(row)
    return rows


def run_info(path: Path) -> dict[str, Any]:
    """The run id and the logged config (values decoded from JSON)."""
    for record in records(path):
        if record.WhichOneof("record_type") == "run":
            config = {item.key: json.loads(item.value_json) for item in record.run.config.update}
            return {"id": record.run.run_id, "config": config, "group": record.run.run_group, "tags": list(record.run.tags)}
    raise AssertionError(f"{path} holds no run record")
