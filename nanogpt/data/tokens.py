"""Token files: a split's token ids, one after another, as little-endian uint16 when every id
fits in 16 bits (vocabularies of up to 65,536 tokens) and uint32 otherwise. The width is recorded
in meta.json ("dtype"); a file is written incrementally into a temp file and renamed when complete."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import TracebackType

import numpy as np

from nanogpt.errors import storage_error, storage_fault
from nanogpt.files import sync_and_replace

UINT16_VOCAB_LIMIT = 2**16
DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}


def token_dtype(vocab_size: int) -> str:
    """The narrowest token width that holds every id of a `vocab_size`-token vocabulary."""
    return "uint16" if vocab_size <= UINT16_VOCAB_LIMIT else "uint32"


def read_tokens(path: Path, dtype: str = "uint16") -> np.memmap:
    return np.memmap(path, dtype=DTYPES[dtype], mode="r")


class TokenWriter:
    """Appends arrays of ids to a temp file beside `path`; commit() makes it `path`. Until then
    `path` is untouched, and a writer left without commit() (an error, a kill) removes its temp file
    (a kill leaves it to the next preparation, which removes stale temp files first)."""

    def __init__(self, path: Path, dtype: str):
        self.path = path
        self.dtype = DTYPES[dtype]
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        self.tmp = Path(tmp)
        self.file = os.fdopen(fd, "wb")
        self.tokens = 0

    def append(self, ids: np.ndarray) -> None:
        try:
            self.file.write(ids.astype(self.dtype, copy=False).tobytes())
        except OSError as exc:
            raise _named(exc, self.path) from exc
        self.tokens += len(ids)

    def commit(self) -> int:
        """Make the written tokens `path` (fsynced, renamed atomically); returns their count."""
        try:
            self.file.close()
            sync_and_replace(self.tmp, self.path)
        except OSError as exc:
            raise _named(exc, self.path) from exc
        return self.tokens

    def discard(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> TokenWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if not self.file.closed or kind is not None:
            self.discard()


def _named(exc: OSError, path: Path) -> OSError:
    """A disk fault (full, read-only, ...) as one line naming the file being written; other errors as they are."""
    fault = storage_fault(exc)
    return storage_error(fault, path) if fault is not None else exc
