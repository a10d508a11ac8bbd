"""Sweeps (`nanogpt-train -m ...`): the report written when one ends, and hyperparameter search
with Optuna (`-m hparams_search=optuna ...`).

conf/hparams_search/optuna.yaml chooses hydra-optuna-sweeper (the `sweep` extra). Each trial is
a training run in a folder of the sweep, and the value Optuna minimizes is what the task returns:
the run's best val loss, or +inf for a run that failed (nanogpt.cli.launch.run_sweep_job). A
failed run is thus the worst possible trial: the search goes on, and TPE learns to avoid its
region (a trial marked failed would tell the sampler nothing). This module holds the preset's
resolver and its check of the search space, which refuses a search that cannot work in one line
before any trial runs; the report's part of a search is nanogpt.analysis.report's.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from nanogpt.errors import EXIT_TRAINING_ERROR, EXIT_USER_ERROR, ConfigError, first_line, storage_error, storage_fault

EXAMPLE_SPACE = "'optimizer.learning_rate=tag(log,interval(1e-4,1e-2))' 'model.n_layer=choice(2,4)'"


def parallel_trials(n_jobs: int | None) -> int:
    """How many trials the Optuna sweeper asks for at a time (resolver `nanogpt.parallel_trials`):
    as many as the launcher runs at once. A negative n_jobs is joblib's count back from the CPUs
    (-1: one per core); launchers without n_jobs (basic, SLURM) get 1, which
    hydra.sweeper.n_jobs=N raises."""
    if n_jobs is None:
        return 1
    if n_jobs < 0:
        return max(1, (os.cpu_count() or 1) + 1 + n_jobs)
    return n_jobs


def search_space(config: DictConfig) -> dict[str, Any]:
    """The distributions that the Optuna sweeper will sample, by key, built by the sweeper's own
    code from hydra.sweeper.params and the command line's overrides. Raises ConfigError naming
    an override that Optuna cannot sample, or a key given both a search space and a value."""
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    params = config.hydra.sweeper.params or {}
    arguments = [f"{key}={value}" for key, value in params.items()] + list(config.hydra.overrides.task)
    space: dict[str, Any] = {}
    fixed: dict[str, str] = {}
    for argument in arguments:  # one at a time, to name the one refused
        try:
            distributions, values = create_params_from_overrides([argument])
        except (ValueError, AssertionError, NotImplementedError) as exc:  # Optuna's and the sweeper's refusals
            raise ConfigError(f"{argument}: Optuna cannot search this: {first_line(exc)}") from None
        space.update(distributions)
        fixed.update({key: argument for key in values})
    for key in space.keys() & fixed.keys():
        # The sweeper would silently give every trial the plain value.
        raise ConfigError(f"{key} has a search space and a value ({fixed[key]}): Optuna would not search it; give one of them")
    return space


class OptunaSearchCheck(Callback):
    """Hydra callback of conf/hparams_search/optuna.yaml: refuses a search without a search space
    (every trial would train the same run) or with one Optuna cannot sample, before any trial.
    A key outside the config needs no check here: Hydra refuses it in one line as the first
    trial's config is composed."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            if not search_space(config):
                raise ConfigError(f"hparams_search=optuna needs a search space in Hydra's sweep syntax, e.g. {EXAMPLE_SPACE}")
        except ConfigError as exc:
            # Hydra turns an exception of a callback into a warning and goes on: exit here.
            print(f"error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_USER_ERROR) from None


class SweepReport(Callback):
    """Hydra callback (conf/config.yaml): when a multirun ends, write the report into its sweep
    folder. Where runs failed, the command then exits 1 with one line saying so: a script or CI
    that runs a sweep must see its failures without reading the table."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from nanogpt.analysis.report import report
        from nanogpt.analysis.runs import FAILED, ReportError, collect_runs

        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        try:
            runs = collect_runs(sweep_dir)
            report(sweep_dir, runs=runs, show=lambda text: print(text, flush=True))
            print(f"sweep summary: {sweep_dir / 'summary.md'}, {sweep_dir / 'sweep.png'}", flush=True)
        except ReportError as exc:
            print(f"sweep summary: {exc}", flush=True)
            return
        except OSError as exc:  # the summary files on a full or read-only disk: the runs are what matters
            fault = storage_fault(exc)
            if fault is None:
                raise
            print(f"sweep summary: not saved ({storage_error(fault)})", flush=True)
        failed = [r for r in runs if r.status in FAILED]
        # Hydra calls this at the end of the sweep whether or not it was interrupted: an
        # exception on its way out (a Ctrl-C) keeps its own exit status.
        if failed and sys.exc_info()[0] is None:
            message = f"{len(failed)} of {len(runs)} runs of the sweep failed; the reasons are in {sweep_dir / 'summary.md'}"
            print(f"error: {message}", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_TRAINING_ERROR)
