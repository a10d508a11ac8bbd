"""The errors that the commands print as one line (`error: ...`) instead of a traceback. They live
in this module, which imports nothing of nanogpt's, so that every other module can raise them."""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad value in the config or on the command line; exit code 2."""


class DataError(RuntimeError):
    """Missing, unreadable or unusable data; exit code 2."""


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, truncated, corrupt or unsafe; exit code 2."""


class TrainingError(RuntimeError):
    """Training went wrong (it diverged); the run folder stays as it is. Exit code 1."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name where it has none): what a
    one-line refusal quotes of a library's multi-line error."""
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


# Refused input: nothing ran, nothing on disk changed.
USER_ERRORS = (ConfigError, DataError, CheckpointError)
