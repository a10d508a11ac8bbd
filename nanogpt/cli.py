"""Shared plumbing of the command-line entry points: bad input becomes one line on stderr and a
non-zero exit instead of a traceback, and a run folder that Hydra created for a command that
then refused its input is removed again, so a refused command leaves nothing on disk."""

from __future__ import annotations

import re
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from nanogpt.checkpoint import CheckpointError
from nanogpt.config import ConfigError
from nanogpt.data import DataError

T = TypeVar("T")

USER_ERRORS = (ConfigError, DataError, CheckpointError)
EXIT_USER_ERROR = 2

# Taken when the entry module is imported, i.e. before Hydra creates the run folder.
PROCESS_START = time.time()


def run_or_exit(task: Callable[[], T], created_dir: Path | None = None) -> T:
    """Run task(); on a user error print `error: <message>` and exit with status 2."""
    try:
        return task()
    except USER_ERRORS as exc:
        if created_dir is not None:
            remove_if_fresh(created_dir)
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_USER_ERROR) from None


def remove_if_fresh(run_dir: Path) -> None:
    """Delete run_dir if this process created it and nothing but Hydra's own files is in it."""
    try:
        if run_dir.stat().st_mtime < PROCESS_START - 1:
            return
        entries = {p.name for p in run_dir.iterdir()}
        if not entries <= {".hydra", "train.log"}:
            return
        shutil.rmtree(run_dir)
        parent = run_dir.parent
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", parent.name) and not any(parent.iterdir()):
            parent.rmdir()  # the empty date folder of Hydra's default outputs/<date>/<time>
    except OSError:
        pass
