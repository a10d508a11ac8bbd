"""One writer per run folder: `<run_dir>/.lock`, held with flock(2) for the life of a run, and
`<run_dir>/.running` while it trains.

The kernel releases a flock when its process dies, however it dies, so a killed run never blocks
its own resume and no stale lock needs clearing by hand. The lock file names the holder's host
and pid, which a refused second writer quotes. flock works across machines on NFS (Linux emulates
it with fcntl locks there), so two nodes of a cluster cannot share a folder either. The running
marker stays behind when a run is killed, which is how a report tells a crashed run from one
that is still training.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nanogpt.errors import ConfigError

LOCK_NAME = ".lock"
RUNNING_NAME = ".running"

# Run folders this process holds, so that probing one of them (Hydra resolves its config more
# than once) does not mistake our own lock for another run's.
_held: set[Path] = set()


class RunFolderBusy(ConfigError):
    """Another live process holds the run folder's lock; exit code 2, nothing changed."""


def holder(run_dir: Path) -> str | None:
    """ "pid P on host H" of the live process that holds run_dir's lock, None if none does."""
    if run_dir.resolve() in _held:
        return None
    path = run_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None  # no lock file: no run ever held it, or the last one ended cleanly
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        return _describe_holder(fd)
    finally:
        os.close(fd)  # also drops the shared lock, if we got it


def _describe_holder(fd: int) -> str:
    # The holder writes its name just after taking the lock: give it a moment if we caught it between.
    for _ in range(20):
        try:
            info = json.loads(os.pread(fd, 4096, 0) or b"null")
        except (OSError, ValueError):
            info = None
        if isinstance(info, dict):
            return f"pid {info.get('pid')} on host {info.get('host')}"
        time.sleep(0.05)
    return "a process that has not written its name yet"


@contextmanager
def run_lock(run_dir: Path, resuming: bool) -> Iterator[None]:
    """Hold run_dir's lock while the block runs; RunFolderBusy (one line) if a live process holds
    it. The lock file goes at the end, so a finished run leaves no trace of it."""
    run_dir = run_dir.resolve()
    path = run_dir / LOCK_NAME
    fd = _acquire(path, run_dir, resuming)
    _held.add(run_dir)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid()}).encode(), 0)
        yield
    finally:
        _held.discard(run_dir)
        path.unlink(missing_ok=True)  # before closing: nobody can take the lock on a name we then delete
        os.close(fd)


def _acquire(path: Path, run_dir: Path, resuming: bool) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = _describe_holder(fd)
            os.close(fd)
            raise _busy(run_dir, who, resuming) from None
        # The previous holder may have deleted the file between our open and our flock: then we
        # hold a lock on a name that no longer exists, and must take the new file's instead.
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _busy(run_dir: Path, who: str, resuming: bool) -> RunFolderBusy:
    if resuming:
        return RunFolderBusy(
            f"{run_dir} is still training ({who} holds {run_dir / LOCK_NAME}); "
            f"wait for it to end, or stop it (kill -TERM on that host) and then resume"
        )
    return RunFolderBusy(
        f"hydra.run.dir={run_dir} is in use by another run ({who} holds {run_dir / LOCK_NAME}); choose another folder, or wait for that run to end"
    )


@contextmanager
def running_marker(run_dir: Path, write: bool) -> Iterator[None]:
    """`<run_dir>/.running` (host and pid) while the block runs, where `write` (rank 0)."""
    if not write:
        yield
        return
    marker = run_dir / RUNNING_NAME
    marker.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
    try:
        yield
    finally:
        marker.unlink(missing_ok=True)


def marker_status(run_dir: Path) -> str:
    """What the running marker of a run without an end record says: "running" (its process is
    alive), "running?" (on another host, where it cannot be checked) or "crashed"."""
    try:
        info = json.loads((run_dir / RUNNING_NAME).read_text())
    except (OSError, ValueError):
        return "crashed"
    if info.get("host") != socket.gethostname():
        return "running?"
    try:
        os.kill(int(info["pid"]), 0)
    except (ProcessLookupError, ValueError, KeyError):
        return "crashed"
    except PermissionError:
        pass  # alive, under another user
    return "running"
