"""Hyperparameter search with Optuna (hparams_search=optuna) through the real command: trials side
by side with the joblib launcher, the report's best trial against each trial's own metrics, the
sampler's seed, failed trials, and the one-line refusals (a bad search space, a missing plugin)."""

from __future__ import annotations

import csv
import math
import subprocess
from pathlib import Path

import hydra_plugins
import pytest
from omegaconf import OmegaConf

from nanogpt.metrics import read_metrics
from tests.conftest import TINY, one_line_error, run_cli

# The tiny model with the number of layers left to the search.
RUN = (*(o for o in TINY if not o.startswith("model.n_layer=")), "max_iters=8", "eval_interval=4", "log_interval=4", "optimizer.warmup_iters=2")
SPACE = ("optimizer.learning_rate=tag(log,interval(1e-4,1e-2))", "model.n_layer=choice(1,2)")
KEYS = ["model.n_layer", "optimizer.learning_rate"]  # the searched keys, as folder names order them


def search(data_dir: Path, sweep: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_cli(
        "nanogpt.train", "-m", "hparams_search=optuna", *RUN, f"dataset.data_dir={data_dir}", f"hydra.sweep.dir={sweep}", *args, check=check
    )


def trials(sweep: Path) -> list[Path]:
    """The trial folders of a sweep, by job number."""
    return sorted((p for p in sweep.iterdir() if p.is_dir()), key=lambda p: int(p.name.split("_")[0]))


def trial_params(folder: Path) -> dict[str, str]:
    """The values a trial drew, from its overrides."""
    overrides = dict(str(o).split("=", 1) for o in OmegaConf.load(folder / ".hydra" / "overrides.yaml"))
    return {key: overrides[key] for key in KEYS}


def best_val_loss(folder: Path) -> float:
    return min(r["val_loss"] for r in read_metrics(folder / "metrics.jsonl") if r["event"] == "eval")


@pytest.fixture(scope="module")
def parallel_search(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """3 trials, 2 at a time (2 joblib processes); the sweep folder and the command's output."""
    sweep = tmp_path_factory.mktemp("optuna") / "sweep"
    proc = search(data_dir, sweep, *SPACE, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_trials=3")
    return sweep, proc.stdout + proc.stderr


def test_a_search_runs_trials_side_by_side_and_reports_the_trial_with_the_lowest_val_loss(parallel_search):
    sweep, output = parallel_search
    # Two batches of the sweeper's (2 trials, then 1), each run by 2 joblib processes.
    assert "n_jobs=2" in output and "is launching 2 jobs" in output and "is launching 1 jobs" in output
    folders = trials(sweep)
    # Job numbers go on across batches; each folder starts with its own and names its values.
    assert [int(f.name.split("_")[0]) for f in folders] == [0, 1, 2]
    for num, folder in enumerate(folders):
        assert OmegaConf.load(folder / ".hydra" / "hydra.yaml").hydra.job.num == num
        params = trial_params(folder)
        # A drawn float named by 4 significant digits (the number tells two trials apart).
        short = {k: (f"{float(v):.4g}" if "." in v else v) for k, v in params.items()}
        assert folder.name == f"{num}_" + ",".join(f"{k}={v}" for k, v in short.items())
        assert 1e-4 <= float(params["optimizer.learning_rate"]) <= 1e-2 and params["model.n_layer"] in ("1", "2")

    losses = {folder: best_val_loss(folder) for folder in folders}
    best = min(losses, key=losses.get)
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    assert results.best_value == losses[best]
    assert {k: str(v) for k, v in results.best_params.items()} == trial_params(best)

    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert len(rows) == 3 and all(row["status"] == "finished" for row in rows)
    assert rows[0]["best val loss"] == f"{losses[best]:.4f}"  # the table's first row is the best trial
    summary = (sweep / "summary.md").read_text()
    assert f"Optuna's best trial (optimization_results.yaml): val loss {losses[best]:.4f} in {best.name}\n" in summary
    params = " ".join(f"{k}={v}" for k, v in results.best_params.items())
    assert f"\nbest parameters: {params}\n" in summary and f"best parameters: {params}" in output


def test_the_same_seed_draws_the_same_trials(parallel_search, data_dir, tmp_path):
    sweep, _ = parallel_search
    first_two = [trial_params(f) for f in trials(sweep)[:2]]
    # One trial at a time and shorter runs: the first trials are TPE's random start-up draws,
    # which only the sampler's seed decides.
    again = tmp_path / "again"
    search(data_dir, again, *SPACE, "hydra.sweeper.n_trials=2", "max_iters=2")
    assert [trial_params(f) for f in trials(again)] == first_two
    other = tmp_path / "other"
    search(data_dir, other, *SPACE, "hydra.sweeper.n_trials=2", "max_iters=2", "hydra.sweeper.sampler.seed=7")
    assert [trial_params(f) for f in trials(other)] != first_two


def test_a_failed_trial_scores_worst_and_the_search_goes_on(data_dir, tmp_path):
    sweep = tmp_path / "sweep"
    # Without gradient clipping a learning rate of 1e4 diverges; the preset's seed draws 1e-3 first, then 1e4 twice.
    proc = search(data_dir, sweep, "optimizer.grad_clip=0", "optimizer.learning_rate=choice(1e-3,1e4)", "hydra.sweeper.n_trials=3", check=False)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == f"error: 2 of 3 runs of the sweep failed; the reasons are in {sweep / 'summary.md'}"
    finished, *diverged = trials(sweep)
    assert finished.name == "0_optimizer.learning_rate=0.001"
    # Both trials that drew 1e4 trained, each in its own folder, and failed.
    assert [f.name for f in diverged] == ["1_optimizer.learning_rate=10000.0", "2_optimizer.learning_rate=10000.0"]
    assert all((f / "error.txt").read_text().startswith("training diverged") for f in diverged)
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    assert results.best_value == best_val_loss(finished) and results.best_params == {"optimizer.learning_rate": 0.001}
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert [row["status"] for row in rows] == ["finished", "failed", "failed"]
    assert f"val loss {results.best_value:.4f} in {finished.name}" in (sweep / "summary.md").read_text()


def test_a_search_where_every_trial_fails_has_no_best_parameters(data_dir, tmp_path):
    sweep = tmp_path / "sweep"
    proc = search(data_dir, sweep, "optimizer.grad_clip=0", "optimizer.learning_rate=choice(1e4,2e4)", "hydra.sweeper.n_trials=2", check=False)
    assert proc.returncode == 1 and len(trials(sweep)) == 2
    assert math.isinf(OmegaConf.load(sweep / "optimization_results.yaml").best_value)
    summary = (sweep / "summary.md").read_text()
    assert "Optuna's best trial (optimization_results.yaml): none, every trial failed" in summary and "best parameters" not in summary


@pytest.mark.parametrize(
    "space, message",
    [
        (
            (),
            "hparams_search=optuna needs a search space in Hydra's sweep syntax, e.g. 'optimizer.learning_rate=tag(log,interval(1e-4,1e-2))' 'model.n_layer=choice(2,4)'",
        ),
        (
            ("optimizer.learning_rate=interval(1e-2,1e-4)",),
            "optimizer.learning_rate=interval(1e-2,1e-4): Optuna cannot search this: The `low` value must be smaller than or equal to the `high` value (low=0.01, high=0.0001).",
        ),
        (
            ("optimizer.learning_rate=tag(log,interval(0,1e-2))",),
            "optimizer.learning_rate=tag(log,interval(0,1e-2)): Optuna cannot search this: The `low` value must be larger than 0 for a log distribution (low=0.0, high=0.01).",
        ),
        (
            ("model.n_layer=choice(1,2)", "model.n_layer=2"),
            "model.n_layer has a search space and a value (model.n_layer=2): Optuna would not search it; give one of them",
        ),
    ],
    ids=["none", "empty-interval", "log-from-zero", "searched-and-set"],
)
def test_a_search_space_that_cannot_work_is_refused_in_one_line_before_any_trial(space, message, data_dir, tmp_path):
    sweep = tmp_path / "sweep"
    proc = search(data_dir, sweep, *space, check=False)
    assert one_line_error(proc) == f"error: {message}"
    assert not sweep.exists()


def hydra_plugins_without_the_sweep_extra(folder: Path) -> Path:
    """A folder to put first on PYTHONPATH, where Hydra finds every installed plugin but those of
    the sweep extra, as in an environment installed without it."""
    package = folder / "hydra_plugins"
    package.mkdir(parents=True)
    (package / "__init__.py").touch()  # a regular package, which hides the installed namespace package
    for installed in map(Path, hydra_plugins.__path__):
        for plugin in installed.iterdir():
            if plugin.is_dir() and plugin.name not in ("hydra_optuna_sweeper", "hydra_joblib_launcher", "__pycache__"):
                (package / plugin.name).symlink_to(plugin)
    return folder


@pytest.mark.parametrize(
    "choice, message",
    [
        (("hparams_search=optuna", *SPACE), "hydra/sweeper=optuna needs Hydra's hydra-optuna-sweeper plugin"),
        (("hydra/launcher=joblib", "model.n_layer=1,2"), "hydra/launcher=joblib needs Hydra's hydra-joblib-launcher plugin"),
    ],
    ids=["optuna", "joblib"],
)
def test_without_the_sweep_extra_the_command_says_how_to_install_it(choice, message, data_dir, tmp_path):
    shadow = hydra_plugins_without_the_sweep_extra(tmp_path / "plugins")
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "nanogpt.train",
        "-m",
        *choice,
        *RUN,
        f"dataset.data_dir={data_dir}",
        f"hydra.sweep.dir={sweep}",
        env={"PYTHONPATH": str(shadow)},
        check=False,
    )
    assert one_line_error(proc) == f'error: {message}, which is not installed: pip install "nanogpt[sweep]"'
    assert not sweep.exists()


def test_trials_asked_at_a_time_follow_the_launchers_count_of_jobs(monkeypatch):
    """hydra.sweeper.n_jobs of the preset: joblib's n_jobs, whose negative values count back from
    the CPUs (-1: all of them, -2: all but one); a launcher without n_jobs runs one trial at a time."""
    import os

    from nanogpt.cli.sweeps import parallel_trials

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert [parallel_trials(n) for n in (None, 1, 3, -1, -2, -8, -20)] == [1, 1, 3, 8, 7, 1, 1]
