"""The first minutes of a new user (issue 31): install hints that work for every kind of install,
the most natural typo, a short run that never leaves warm-up, an ETA that holds still, Ctrl-C at
any moment of start-up, output piped into `head`, eval without a network, a report of one run."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest
import tomllib

from nanogpt.errors import EXIT_INTERRUPTED, install_hint
from nanogpt.metrics import Eta
from tests.conftest import ROOT, TINY, cli_env, copy_run, one_line_error, run_cli

RUN = (*TINY, "eval_interval=4", "log_interval=1", "optimizer.warmup_iters=2")


def test_every_install_hint_names_the_package_extra_and_pip_takes_it():
    """`pip install -e ".[x]"` works only in a clone; `pip install "nanogpt[x]"` works after
    `pip install .` and `pip install -e .` alike: pip reads the installed package's extras."""
    clone_only = re.compile(r"""pip install -e \\?["']\.\[""")  # pip install -e ".[eval]"
    hints = [path for path in (ROOT / "nanogpt").rglob("*.py") if clone_only.search(path.read_text())]
    assert hints == [], hints
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra in sorted(set(extras) - {"dev"}):
        hint = install_hint(extra)
        argv = [sys.executable, "-m", *hint.split()[0:2], "--dry-run", "--no-index", hint.split(None, 2)[2].strip('"')]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0 and "Requirement already satisfied: nanogpt" in proc.stdout, (extra, proc.stdout[-500:], proc.stderr[-1000:])


@pytest.mark.parametrize(
    "argument, suggestion",
    [
        ("learning_rate=1e-3", "optimizer.learning_rate"),
        ("n_layer=3", "model.n_layer"),
        ("batch_size=4", "dataset.batch_size"),
        ("learnig_rate=1", "optimizer.learning_rate"),
    ],
)
def test_a_bare_key_of_a_group_gets_its_group_named(argument, suggestion):
    from nanogpt.cli.commands import command
    from nanogpt.cli.refusals import _unknown_key

    key = argument.split("=")[0]
    assert _unknown_key(command("config"), key) == f"{key} is not a config key; did you mean {suggestion}?"


def test_the_bare_key_suggestion_on_the_command_line(tmp_path):
    proc = run_cli("nanogpt.train", "learning_rate=1e-3", f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert one_line_error(proc) == "error: learning_rate is not a config key; did you mean optimizer.learning_rate?"


def test_a_run_shorter_than_its_warmup_says_so_in_one_line(data_dir, tmp_path, caplog):
    from nanogpt.training import train
    from tests.test_config import compose_train

    for name, warmup in (("short", 100), ("long", 2)):
        (tmp_path / name).mkdir()
        cfg = compose_train(*TINY, "max_iters=5", "eval_interval=5", f"optimizer.warmup_iters={warmup}", f"dataset.data_dir={data_dir}")
        with caplog.at_level("WARNING", logger="nanogpt.train"):
            train(cfg, tmp_path / name)
    warned = [r.getMessage() for r in caplog.records if "warmup_iters" in r.getMessage()]
    assert warned == [
        "optimizer.warmup_iters=100 is not below max_iters=5: this run ends still warming up, below optimizer.learning_rate; "
        "set optimizer.warmup_iters to a tenth of the run, say"
    ]


def test_the_eta_holds_within_a_fifth_of_the_truth_after_a_tenth_of_the_run():
    """A fake clock: a 4 s first step (compiling), 0.1 s steps, an evaluation of 2 s every 100
    steps, and a burst of other work (0.5 s steps) for 20 steps; 1000 steps in all."""
    steps, eta, clock, estimates = 1000, Eta(), 0.0, {}
    timeline = []
    for it in range(1, steps + 1):
        clock += 4.0 if it == 1 else 0.5 if 300 <= it < 320 else 0.1
        if it % 100 == 0:
            clock += 2.0
        eta.step_done(it, clock)
        timeline.append(clock)
        estimates[it] = eta.seconds_left(it, steps, clock)
    assert estimates[1] is None  # no pace from the first step alone
    end = timeline[-1]
    for it in range(steps // 10, steps - steps // 10 + 1, 10):  # from a tenth of the run to nine tenths
        truth = end - timeline[it - 1]
        assert abs(estimates[it] - truth) <= 0.2 * truth, (it, estimates[it], truth)


def test_ctrl_c_at_a_dozen_moments_of_start_up_is_one_line(data_dir, tmp_path):
    """From the first import to the first iteration: never a traceback, never a line naming a
    folder that no longer exists; exit 130 (nothing to resume from), the new folder gone."""
    # From 0.2 s: in its first tens of milliseconds the interpreter itself is starting (importing
    # site), before any code of ours runs, and Python reports a Ctrl-C there its own way.
    for i, delay in enumerate([0.2, 0.3, 0.4, 0.6, 0.8, 1.0, 1.3, 1.6, 2.0, 2.5, 3.0, 3.5]):
        run_dir = tmp_path / f"outputs{i}" / "run"
        proc = subprocess.Popen(
            [sys.executable, "-m", "nanogpt.train", *RUN, "max_iters=100000", "eval_iters=400", f"dataset.data_dir={data_dir}", f"hydra.run.dir={run_dir}"],
            cwd=ROOT, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        if any(name.startswith("ckpt_") for name in (p.name for p in run_dir.glob("*"))):
            continue  # the signal came after the first checkpoint: a stop with exit 75 (test_run_safety)
        assert proc.returncode == EXIT_INTERRUPTED, (delay, proc.returncode, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) <= 1, (delay, err)
        assert "done:" not in out and not run_dir.exists(), (delay, out)


@pytest.mark.parametrize("command", [["nanogpt.train", "--help"], ["nanogpt.sample", "--help"], ["nanogpt.report", "FINISHED"]])
def test_a_command_piped_into_head_ends_quietly(command, finished_run):
    args = [finished_run if arg == "FINISHED" else arg for arg in command[1:]]
    shell = f"{sys.executable} -m {command[0]} {' '.join(map(str, args))} | head -1"
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", shell], cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr and proc.stderr == "", proc.stderr
    assert len(proc.stdout.splitlines()) == 1


def test_eval_without_a_network_is_refused_quickly_and_quietly(finished_run, tmp_path):
    """Hub unreachable and HF_HUB_OFFLINE unset: one quick probe, then the caches only; the
    refusal within seconds, without the hub client's retry lines."""
    run_dir = copy_run(finished_run, tmp_path / "run")
    env = {"HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")}
    started = time.monotonic()
    proc = run_cli("nanogpt.eval", f"run_dir={run_dir}", "tasks=hellaswag", "system.device=cpu", env=env, check=False)
    took = time.monotonic() - started
    lines = [line for line in proc.stderr.strip().splitlines() if not line.startswith("the Hugging Face hub cannot be reached")]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: task hellaswag: its data is not in the Hugging Face cache"), (
        proc.stderr
    )
    assert "retry" not in proc.stderr.lower() and proc.stdout == ""
    assert took < 30, took  # the hub client's retries alone took 39 s (lm_eval's index of its tasks takes some seconds)


def test_a_report_of_one_run_names_it_and_writes_nothing_into_it(finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path / "c5")
    before = sorted(p.name for p in run_dir.iterdir())
    proc = run_cli("nanogpt.report", str(run_dir))
    header, row = proc.stdout.splitlines()[:2]
    assert row.startswith("c5 ") and re.search(r"\b\d+m\d\ds\b", row), proc.stdout  # wall time as the log writes it
    assert sorted(p.name for p in run_dir.iterdir()) == before


def test_an_optuna_trials_folder_carries_four_digits_of_a_drawn_float(monkeypatch):
    from nanogpt.cli import run_folders

    monkeypatch.setenv(run_folders.SWEEP_KEYS_ENV, "optimizer.learning_rate,model.n_layer")
    name = run_folders.job_dirname(3, ["optimizer.learning_rate=0.0003342330176505329", "model.n_layer=4"], numbered=True)
    assert name == "3_model.n_layer=4,optimizer.learning_rate=0.0003342"
    assert run_folders.job_dirname(3, ["optimizer.learning_rate=0.0003342330176505329"], numbered=False).endswith("0.0003342330176505329")


def test_sampling_without_run_dir_takes_the_newest_run(finished_run, tmp_path):
    copy_run(finished_run, tmp_path / "outputs" / "2026-01-01" / "10-00-00")
    proc = run_cli("nanogpt.sample", "num_samples=1", "max_new_tokens=5", "system.device=cpu", cwd=tmp_path)
    assert "run_dir not given: sampling from outputs/2026-01-01/10-00-00" in proc.stderr and proc.stdout.strip()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert one_line_error(run_cli("nanogpt.sample", cwd=empty, check=False)).startswith(
        "error: run_dir is required: no run with a checkpoint under ./outputs/"
    )


def test_a_refused_prompt_lists_five_characters_and_says_how_many_more(finished_run):
    proc = run_cli("nanogpt.sample", f"run_dir={finished_run}", "prompt=0123456789", "system.device=cpu", check=False)
    assert one_line_error(proc).endswith("outside this model's vocabulary: '0', '1', '2', '4', '5' and 4 more")


def test_hydras_lines_take_the_runs_time_format(data_dir, tmp_path):
    """Hydra's own lines take the run's time format (one log form, not two)."""
    proc = run_cli("nanogpt.train", "-m", *RUN, "max_iters=2", f"dataset.data_dir={data_dir}", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    hydra_lines = [line for line in proc.stdout.splitlines() if "[HYDRA]" in line]
    assert hydra_lines and all(re.match(r"^\[\d\d:\d\d:\d\d\]\[HYDRA\] ", line) for line in hydra_lines), hydra_lines
