"""What every Hydra command does around its task: our own --help, free text taken verbatim, bad
input as one line on stderr and exit status 2 instead of a traceback, a storage fault as exit 3,
and a run folder that Hydra created for a command that then refused its input removed again, so
a refused command leaves nothing on disk."""

from __future__ import annotations

import logging
import math
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from nanogpt.config import register_schemas
from nanogpt.errors import (
    EXIT_STORAGE_ERROR,
    EXIT_TRAINING_ERROR,
    EXIT_USER_ERROR,
    USER_ERRORS,
    StorageError,
    TrainingError,
    storage_error,
    storage_fault,
)

T = TypeVar("T")


def register_configs() -> None:
    """Make the schemas and our resolvers (the run folder's name, where Hydra logs, sweep job
    folders: nanogpt.cli.run_folders) known to Hydra and OmegaConf."""
    from nanogpt.cli import run_folders, sweeps

    register_schemas()
    OmegaConf.register_new_resolver("nanogpt.job_dirname", run_folders.job_dirname, replace=True)
    OmegaConf.register_new_resolver("nanogpt.run_dir", run_folders.resolve_run_dir, replace=True)
    OmegaConf.register_new_resolver("nanogpt.output_subdir", run_folders.hydra_output_subdir, replace=True)
    OmegaConf.register_new_resolver("nanogpt.log_file", run_folders.log_file, replace=True)
    OmegaConf.register_new_resolver("nanogpt.now", run_folders.start_time, use_cache=True, replace=True)
    OmegaConf.register_new_resolver("nanogpt.parallel_trials", sweeps.parallel_trials, replace=True)


def launch(main: Callable[[], Any], config_name: str) -> None:
    """Run a Hydra command (`main`, decorated with @hydra.main(config_name=config_name)) from
    sys.argv: --help prints our help; free-text values are quoted for Hydra so that they arrive
    verbatim; a refusal of Hydra's (unknown key, wrong type, bad syntax) becomes one line."""
    from nanogpt.cli.free_text import quote_free_text
    from nanogpt.cli.help import command_help, wants_help
    from nanogpt.cli.refusals import one_line_hydra_errors

    argv = sys.argv[1:]
    if wants_help(argv):
        print(command_help(config_name))
        raise SystemExit(0)
    sys.argv[1:] = quote_free_text(argv, config_name)
    register_configs()
    with one_line_hydra_errors(config_name):
        try:
            main()
        except KeyboardInterrupt:
            # Between Hydra's making the run folder and the command's own handling of a stop:
            # what was made for this command goes, and nanogpt.cli says the rest in one line.
            if RunDirGuard.run_dir is not None:
                RunDirGuard.remove_if_fresh(RunDirGuard.run_dir)
            raise
        except Exception as exc:
            # Hydra writes into the run folder before our task runs (its log file, the config
            # copy): a read-only or full disk fails there, as a ValueError of logging's; a file
            # where the folder should be, as os.makedirs' FileExistsError or NotADirectoryError.
            fault = storage_fault(exc)
            if fault is not None:
                exit_storage_error(storage_error(fault))
            if isinstance(exc, (FileExistsError, NotADirectoryError)):
                print(
                    f"error: {exc.filename}: a file stands where a folder must be made (hydra.run.dir); choose another folder",
                    file=sys.stderr,
                    flush=True,
                )
                raise SystemExit(EXIT_USER_ERROR) from None
            raise


def run_or_exit(task: Callable[[], T], undo: Callable[[], None] | None = None) -> T:
    """Run task(); on a user error run undo() (removing what Hydra wrote for this command),
    print `error: <message>` and exit with status 2; on a storage fault (disk full, read-only,
    permission denied) print it and exit with status 3, leaving the run folder as it is."""
    try:
        return task()
    except USER_ERRORS as exc:
        if undo is not None:
            undo()
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_USER_ERROR) from None
    except TrainingError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_TRAINING_ERROR) from None
    except StorageError as exc:
        exit_storage_error(exc)
    except OSError as exc:  # a write of metrics, plots or data to a full or read-only disk
        fault = storage_fault(exc)
        if fault is None:
            raise
        exit_storage_error(storage_error(fault))


def exit_storage_error(exc: StorageError) -> NoReturn:
    print(f"error: {exc}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_STORAGE_ERROR) from None


def run_sweep_job(task: Callable[[], float], run_dir: Path) -> float:
    """Run one job of a multirun: a job that fails is recorded in `<run_dir>/error.txt` (the
    sweep report lists it as failed) and scores +inf for sweepers, while the other jobs go on."""
    try:
        return task()
    except (*USER_ERRORS, TrainingError, StorageError) as exc:
        message = str(exc)
    except Exception as exc:  # any crash of one job must not stop the sweep
        fault = storage_fault(exc)
        if fault is not None:
            message = str(storage_error(fault))
        else:
            logging.getLogger(__name__).exception("job failed")
            message = f"{type(exc).__name__}: {exc}"
    print(f"error: {message}", file=sys.stderr, flush=True)
    try:
        (run_dir / "error.txt").write_text(message + "\n")
    except OSError:
        pass  # the disk that failed the job may refuse this too; the sweep goes on regardless
    return math.inf


class RunDirGuard(Callback):
    """Hydra callback (conf/config.yaml) that notes what existed before Hydra creates the run
    folder, so that a refused command removes exactly what was made for it (`undo`). Hydra makes
    the callback itself, before the folder; the command's task, after it, asks the class."""

    HYDRA_FILES = {".hydra", "train.log"}
    # The run folder, the entries already in it, and the highest folder Hydra has yet to create;
    # None: not known (the callback did not run), so nothing is removed.
    run_dir: Path | None = None
    before: tuple[set[str], Path | None] | None = None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_dir = Path(config.hydra.run.dir).absolute()
        missing = [p for p in (run_dir, *run_dir.parents) if not p.exists()]
        RunDirGuard.run_dir = run_dir
        RunDirGuard.before = (set(os.listdir(run_dir)) if run_dir.is_dir() else set(), missing[-1] if missing else None)

    @classmethod
    def undo(cls, run_dir: Path, output_subdir: str | None) -> None:
        """Remove the config copy Hydra saved for this command and, if Hydra created the run folder
        for it, the folder itself."""
        if output_subdir and Path(output_subdir).name.startswith("resume-"):
            shutil.rmtree(run_dir / output_subdir, ignore_errors=True)
        cls.remove_if_fresh(run_dir)

    @classmethod
    def remove_if_fresh(cls, run_dir: Path) -> None:
        """Remove Hydra's files from run_dir if they were made for this command, then the folders
        Hydra created on the way to it, as long as they are empty."""
        if cls.before is None:
            return
        existing, created_root = cls.before
        run_dir = run_dir.absolute()
        try:
            for name in cls.HYDRA_FILES - existing:
                path = run_dir / name
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
            if created_root is None:
                return
            for folder in (run_dir, *run_dir.parents):
                if any(folder.iterdir()):
                    break
                folder.rmdir()
                if folder == created_root:
                    break
        except OSError:
            pass
