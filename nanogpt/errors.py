"""The errors that the commands print as one line (`error: ...`) instead of a traceback. They live
in this module, which imports nothing of nanogpt's, so that every other module can raise them."""

from __future__ import annotations

import errno
import os

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
# A second Ctrl-C: ended at once, without a new checkpoint (the previous one is intact, since
# checkpoints are replaced by rename); 128 + SIGINT, as shells report an interrupted command.
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


class RunStopped(BaseException):
    """Training stopped at a signal and saved what there was to save; exit code EXIT_STOPPED. A
    BaseException, like KeyboardInterrupt, so that a sweep's handling of failed jobs does not take
    it for one: the user asked the whole command to stop."""


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
