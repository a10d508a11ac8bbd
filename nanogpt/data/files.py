"""Writing files atomically: readers see the old file or the new one, never a part."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nanogpt.checkpoint import default_file_mode


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """A temp path in the same folder to write; once the block ends, it is fsynced and renamed
    over `path`, so readers see the old file or the new one, never a part. Removed on error."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, default_file_mode())
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    with atomic_file(path) as tmp:
        tmp.write_bytes(payload)
