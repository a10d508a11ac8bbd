"""The errors that the commands print as one line (`error: ...`) instead of a traceback. They live
in this module, which imports nothing of nanogpt's, so that every other module can raise them."""

from __future__ import annotations

import errno
import os
from typing import NoReturn

# Exit statuses (README, "Where outputs go"): 2 is bad input (the command can be fixed), 3 a
# fault of the disk (full, read-only, no permission: the command was fine, the machine must
# change), 1 a run that failed.
EXIT_TRAINING_ERROR = 1
EXIT_USER_ERROR = 2
EXIT_STORAGE_ERROR = 3
# A run stopped by SIGINT, SIGTERM or SIGUSR2 at a step boundary, its checkpoint saved: not
# finished, but resumable; sysexits.h's EX_TEMPFAIL ("try again later"), so that scripts and
# schedulers can tell it from a finished run (0) and from a failure.
EXIT_STOPPED = 75
# Ended by a signal with nothing to resume from (a command other than training, a run stopped
# before its first checkpoint), or at once by a second Ctrl-C (the previous checkpoint is intact,
# since checkpoints are replaced by rename); 128 + SIGINT, as shells report an interrupted command.
EXIT_INTERRUPTED = 130


class ConfigError(ValueError):
    """A bad value in the config or on the command line; exit code 2."""


class DataError(RuntimeError):
    """Missing, unreadable or unusable data; exit code 2."""


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, truncated, corrupt or unsafe; exit code 2."""


class StorageError(OSError):
    """The disk refused a write: full, read-only, no permission or failing. Exit code 3. An
    OSError, so that code which handles a failed write goes on handling it."""


class TrainingError(RuntimeError):
    """Training went wrong (it diverged); the run folder stays as it is. Exit code 1."""


class Interrupted(KeyboardInterrupt):
    """A stop signal (SIGINT, SIGTERM, SIGHUP, SIGUSR2) where no step boundary can wait for it: in a
    command other than training, while a run starts, or a second Ctrl-C. A KeyboardInterrupt, so
    that everything that cleans up after Ctrl-C (temp files, staging folders, worker pools) cleans
    up after these too."""

    def __init__(self, signal_name: str, second: bool = False):
        super().__init__(signal_name)
        self.signal_name, self.second = signal_name, second


# The stop signal that raised Interrupted, kept where that exception could be lost: a signal
# handler's exception that lands in a finalizer (__del__, a weakref callback) is printed as
# "Exception ignored" and dropped. Long work calls check_interrupted() between its pieces.
_interrupted: Interrupted | None = None


def interrupt(signal_name: str, second: bool = False) -> NoReturn:
    """Stop at once for a signal (from a signal handler): raise Interrupted, and remember it."""
    global _interrupted
    _interrupted = Interrupted(signal_name, second)
    raise _interrupted


def check_interrupted() -> None:
    """Raise the Interrupted of a stop signal whose first raise was lost, if there was one."""
    global _interrupted
    if _interrupted is not None:
        lost, _interrupted = _interrupted, None
        raise Interrupted(lost.signal_name, lost.second)


def clear_interrupted() -> None:
    """Forget an earlier stop signal: a new command or run starts in this process."""
    global _interrupted
    _interrupted = None


class RunStopped(BaseException):
    """Training stopped at a signal and saved what there was to save; exit code EXIT_STOPPED. A
    BaseException, like KeyboardInterrupt, so that a sweep's handling of failed jobs does not take
    it for one: the user asked the whole command to stop."""


def install_hint(extra: str) -> str:
    """How to add one of pyproject's extras: right after `pip install .` and after `pip install -e .`
    alike (pip reads the extra from the installed package's metadata; no clone is needed)."""
    return f'pip install "nanogpt[{extra}]"'


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name where it has none): what a
    one-line refusal quotes of a library's multi-line error."""
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


# Refused input: nothing ran, nothing on disk changed.
USER_ERRORS = (ConfigError, DataError, CheckpointError)


# The errnos of a storage fault, and what the user can do about each.
STORAGE_FAULTS = {
    errno.ENOSPC: ("disk full (no space left on device)", "free some space or write to another disk"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or write to another disk"),
    errno.EROFS: ("read-only file system", "remount it read-write or copy the folder to a writable place"),
    errno.EACCES: ("permission denied", "make the folder writable for this user or use another folder"),
    errno.EPERM: ("operation not permitted", "make the folder writable for this user or use another folder"),
    errno.EIO: ("input/output error (a failing disk or network file system)", "check the disk and run again"),
}


def storage_fault(exc: BaseException) -> OSError | None:
    """The OSError of a storage fault that exc is, or that caused it (torch.save reports a failed
    write as a RuntimeError raised while handling the OSError; logging as a ValueError)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and current.errno in STORAGE_FAULTS:
            return current
        seen.add(id(current))
        # `raise ... from None` says the earlier exception is no part of the story
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return None


def storage_error(fault: OSError, path: str | os.PathLike | None = None) -> StorageError:
    """The one-line StorageError of a storage fault met on `path` (default: the fault's own file
    name): the path, the cause, the fix."""
    cause, fix = STORAGE_FAULTS.get(fault.errno or 0, (fault.strerror or first_line(fault), "check the disk and run again"))
    where = path if path is not None else fault.filename
    return StorageError(f"{where}: {cause}; {fix}" if where is not None else f"{cause}; {fix}")
