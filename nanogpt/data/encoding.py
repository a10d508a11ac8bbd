"""Encoding a corpus into token ids on every core, with bounded memory.

Documents are cut into pieces of about a megabyte at places where the tokenizer would cut
anyway, so the ids are the same as if each document were encoded whole; pieces are grouped into
work units that worker processes encode; the results come back in order, with only a few units in
flight at any time, so memory holds a few megabytes of text and ids however large the corpus.
"""

from __future__ import annotations

import collections
import ctypes
import multiprocessing
import os
import signal
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from nanogpt.data.tokenizers import Tokenizer
from nanogpt.data.tokens import DTYPES
from nanogpt.errors import check_interrupted

# Characters per piece (and per work unit): big enough that the per-unit cost of handing work to
# another process is negligible, small enough that a few units in flight per worker stay small.
PIECE_CHARS = 1 << 20
# A document with no line break for this long is cut between two words instead (or, with no space
# either, wherever it reaches this length).
MAX_PIECE_CHARS = 8 << 20


def pieces(blocks: Iterable[str], size: int = PIECE_CHARS, limit: int = MAX_PIECE_CHARS) -> Iterator[str]:
    """The text of one document (given as blocks of any length) re-cut into pieces of about `size`
    characters. A cut goes after a line break between two non-space characters ("end.\nNext"): GPT-2's
    pre-tokenizer (and so every byte-level BPE, and characters) makes that line break a piece of its
    own, so the pieces encode to exactly the ids of the whole. (After a blank line it would not: at
    the end of a text, "\n\n" is one piece, and inside it two.) A piece without such a place for `limit`
    characters is cut before a space between two words (also a pre-tokenizer boundary), or at worst
    at `limit` characters."""
    buffer = ""
    for block in blocks:
        buffer = buffer + block if buffer else block
        while len(buffer) >= size:
            cut = _cut(buffer, limit)
            if not cut:
                break
            yield buffer[:cut]
            buffer = buffer[cut:]
    if buffer:
        yield buffer


def _cut(text: str, limit: int) -> int:
    """Where to cut `text` (0: not yet, wait for more text)."""
    end = min(len(text), limit) - 1  # a cut needs the character after it
    at = text.rfind("\n", 1, end)
    while at > 0 and (text[at - 1].isspace() or text[at + 1].isspace()):
        at = text.rfind("\n", 1, at)
    if at > 0:
        return at + 1
    if len(text) < limit:
        return 0
    at = text.rfind(" ", 1, end)
    while at > 0 and (text[at - 1].isspace() or text[at + 1].isspace()):
        at = text.rfind(" ", 1, at)
    return at if at > 0 else limit


# In a work unit's parts: where the tokenizer's document separator goes.
SEPARATOR = None


@dataclass
class Unit:
    """Text to encode as one stream of ids: pieces of documents, and SEPARATOR where one ends and
    the next begins. `split` is where the ids go; `size` is what the unit advances the progress by."""

    split: str
    parts: list[str | None] = field(default_factory=list)
    chars: int = 0
    size: float = 0.0

    def add(self, part: str | None, size: float = 0.0) -> None:
        self.parts.append(part)
        self.chars += len(part) if part else 0
        self.size += size


def encode_parts(tokenizer: Tokenizer, parts: list[str | None], dtype: str) -> np.ndarray:
    separator = np.array(tokenizer.document_separator, dtype=np.uint32)
    arrays = [separator if part is SEPARATOR else tokenizer.encode_array(part) for part in parts]
    ids = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.uint32)
    return ids.astype(DTYPES[dtype], copy=False)


def worker_count() -> int:
    """The cores this process may run on (a SLURM job's or a container's share, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


class ParallelEncoder:
    """Encodes work units with `tokenizer` in `workers` processes (in this one when 1), yielding
    (unit, ids) in the order the units came in. At most IN_FLIGHT_PER_WORKER units per worker are
    queued or being encoded, which bounds memory and makes reading the corpus wait for the workers."""

    IN_FLIGHT_PER_WORKER = 3

    def __init__(self, tokenizer: Tokenizer, dtype: str, workers: int):
        self.tokenizer = tokenizer
        self.dtype = dtype
        self.workers = max(1, workers)

    def map(self, units: Iterable[Unit]) -> Iterator[tuple[Unit, np.ndarray]]:
        if self.workers == 1:
            for unit in units:
                check_interrupted()
                yield unit, encode_parts(self.tokenizer, unit.parts, self.dtype)
            return
        # Workers that are forked share the tokenizer with this process for free; elsewhere (macOS,
        # Windows) they are spawned, and get it pickled once each.
        method = "fork" if sys.platform.startswith("linux") else "spawn"
        # A Hugging Face tokenizer that has used threads in this process (training a BPE) warns in
        # every forked worker unless told how many threads to use; each worker is one thread.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        pool = ProcessPoolExecutor(
            self.workers, mp_context=multiprocessing.get_context(method), initializer=_start_worker, initargs=(self.tokenizer,)
        )
        pending: collections.deque[tuple[Unit, Future]] = collections.deque()
        try:
            for unit in units:
                check_interrupted()  # a stop signal whose exception landed in a finalizer, and was lost
                pending.append((unit, pool.submit(_encode_in_worker, unit.parts, self.dtype)))
                if len(pending) >= self.IN_FLIGHT_PER_WORKER * self.workers:
                    done, future = pending.popleft()
                    yield done, future.result()
            while pending:
                done, future = pending.popleft()
                yield done, future.result()
        finally:
            # Wait even after an error (a full disk, Ctrl-C): only the units already running are
            # waited for, and a pool left running at exit makes Python 3.11 print a traceback
            # ("Bad file descriptor" from its exit hook) after our one-line error.
            pool.shutdown(wait=True, cancel_futures=True)


_worker_tokenizer: Tokenizer | None = None


def _start_worker(tokenizer: Tokenizer) -> None:
    global _worker_tokenizer
    _worker_tokenizer = tokenizer
    # Ctrl-C, and a closed terminal's SIGHUP, reach the whole process group: the parent stops the
    # work (and waits for the units running here); a worker's own traceback would be noise.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR2):
        signal.signal(signum, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        # End with the parent even when it is killed outright (kill -9), instead of waiting forever.
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _encode_in_worker(parts: list[str | None], dtype: str) -> np.ndarray:
    assert _worker_tokenizer is not None
    return encode_parts(_worker_tokenizer, parts, dtype)
