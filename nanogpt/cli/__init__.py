"""The command floor: the console commands and everything that knows Hydra's command line.

    train, sample, prepare, export, eval, report   one module per command: a thin @hydra.main
                                                   entry calling a plain function of the floors below
    launch       what every command does around its task: help, free text, one-line refusals,
                 exit codes, the run folder a refused command leaves behind
    commands     what a command is: its config groups, keys, defaults and help, read from conf/
    help         --help
    refusals     Hydra's refusals of a command line as one line, and what Hydra lets through
    hydra_compat the few places that lean on Hydra's private API or its message texts
    free_text    prompts and other free text taken verbatim
    run_folders  the resolvers that name run folders, and choosing the run to resume
    sweeps       the report at a sweep's end, Optuna's search space
    slurm        checks made before anything is submitted to SLURM

The functions below are the console scripts of pyproject.toml (`nanogpt-train` is `train`);
`python -m nanogpt.train` (and so on) runs the same. Each imports its command's module only
when called, and a command's module imports torch only once its task runs, so that --help, tab
completion and a refused command line answer without loading torch. This module imports
nothing but the standard library and nanogpt.errors: it is what runs first.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from nanogpt.errors import EXIT_INTERRUPTED, Interrupted, interrupt

# The stop signals a command may get besides Ctrl-C: from `kill`, a scheduler, a closed
# terminal or ssh session (SIGHUP), SLURM's warning before a time limit (SIGUSR2).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR2)


def _raise_interrupted(signum: int, _frame: Any) -> None:
    interrupt(signal.Signals(signum).name)


def _run(module: str) -> None:
    """Run nanogpt.cli.<module>'s cli(): a stop signal at any moment (imports included) ends the
    command with one line and status 130, after the cleanup that Ctrl-C gets (training handles its
    own, to checkpoint first); output piped into a reader that closed early (`| head`) is no error."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _raise_interrupted)
    try:
        importlib.import_module(f"nanogpt.cli.{module}").cli()
        _ignore_stop_signals()  # the work is done: a signal from here to the exit changes nothing
    except SystemExit:
        _ignore_stop_signals()
        raise
    except KeyboardInterrupt as exc:
        name = exc.signal_name if isinstance(exc, Interrupted) else "SIGINT"
        print(f"error: interrupted by {name}; stopped before it finished, nothing half-written was kept", file=sys.stderr, flush=True)
        leave(EXIT_INTERRUPTED)
    except BrokenPipeError:
        # Python's advice: point stdout at devnull, so that flushing it at exit raises nothing more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(0) from None


def leave(status: int) -> NoReturn:
    """End the process now, after a stop signal, with `status`: everything to clean up was cleaned
    up on the way here. A library interrupted half-way through its import (torch's, in the first
    seconds) may trip over itself in the interpreter's exit hooks and end the process by the
    signal instead: leave without them, once what was written is flushed."""
    # logging.shutdown() is left out: a signal can land while logging holds its lock, and flushing
    # would wait on it forever; every handler of ours flushes each record as it is written.
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(status)


def _ignore_stop_signals() -> None:
    for signum in (signal.SIGINT, *STOP_SIGNALS):
        signal.signal(signum, signal.SIG_IGN)


def _command(module: str) -> Callable[[], None]:
    def command() -> None:
        _run(module)

    command.__doc__ = f"The console command of nanogpt.cli.{module}."
    return command


train = _command("train")
sample = _command("sample")
prepare = _command("prepare")
export = _command("export")
evaluate = _command("eval")
report = _command("report")
