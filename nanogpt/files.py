"""Writing files so that a crash never leaves half of one: readers see the old file or the new
one. Datasets, checkpoints, evaluation results and caches are all written this way."""

from __future__ import annotations

import hashlib
import os
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMP_SUFFIX = ".tmp"


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """A temp path in the same folder to write; once the block ends, it is fsynced and renamed
    over `path`, so readers see the old file or the new one, never a part. Removed on error."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    os.close(fd)
    try:
        yield Path(tmp)
        sync_and_replace(Path(tmp), path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sync_and_replace(tmp: Path, path: Path) -> None:
    """fsync the finished temp file `tmp`, give it the mode a new file would get, rename it over `path`."""
    os.chmod(tmp, default_file_mode())
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    with atomic_file(path) as tmp:
        tmp.write_bytes(payload)


def fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable: until the folder itself is synced, a power cut can
    lose the new name even though the file's bytes are on disk."""
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def default_file_mode() -> int:
    """The mode a plain open() would give a new file (0644 under the usual umask); mkstemp's
    0600 would hide checkpoints and datasets from the other users of a shared cluster."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def remove_temp_files(folder: Path) -> list[Path]:
    """Remove what interrupted atomic writes left in `folder` (hidden `.<name>.<random>.tmp`
    files); call it only while no other process can be writing there."""
    stale = [p for p in folder.glob(f".*{TEMP_SUFFIX}") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def file_crc32(path: Path) -> int:
    """The CRC-32 of a file's bytes, as zip archives store it: cheap enough to check at every load."""
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            crc = zlib.crc32(chunk, crc)
    return crc
