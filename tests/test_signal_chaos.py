"""Stop signals at random moments (drawn with fixed seeds) of every command: SIGHUP, SIGTERM and
SIGINT while prepare, train, sample, export and eval start up, work or end. Whatever the moment:
never a traceback, the documented exit status (0 if the command had finished, 75 for a training
run with a checkpoint to resume from, 130 otherwise), never a lost checkpoint, never a half-made
dataset or export."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nanogpt.checkpoint import checkpoint_path, load_checkpoint
from nanogpt.data import read_meta
from nanogpt.errors import EXIT_INTERRUPTED, EXIT_STOPPED
from tests.conftest import ROOT, TINY, cli_env, copy_run
from tests.test_lm_eval import TASK, task_dir  # noqa: F401 - a fixture: local lm_eval tasks

SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)
CASES = 4  # moments per command


def signalled(module: str, args: list[str], delay: float, sig: int, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=cwd, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    if proc.poll() is None:
        proc.send_signal(sig)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def moments(seed: int, longest: float) -> list[tuple[float, int]]:
    draw = random.Random(seed)
    return [(draw.uniform(0.0, longest), SIGNALS[i % len(SIGNALS)]) for i in range(CASES)]


def assert_clean_end(proc: subprocess.CompletedProcess, allowed: set[int]) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode in allowed, (proc.returncode, proc.stderr[-2000:])


@pytest.mark.slow
def test_prepare(shakespeare_path, tmp_path):
    for i, (delay, sig) in enumerate(moments(1, 4.0)):
        data = tmp_path / f"data{i}"
        args = ["dataset=text", "dataset.name=words", f"dataset.source={shakespeare_path}", "dataset.tokenizer=gpt2", f"dataset.data_dir={data}"]
        proc = signalled("nanogpt.prepare", args, delay, sig)
        assert_clean_end(proc, {0, EXIT_INTERRUPTED})
        folder = data / "words"
        if proc.returncode == 0:
            assert read_meta(folder) is not None
        elif folder.exists():  # no dataset half-made, no temp file
            assert read_meta(folder) is None and not [p for p in folder.iterdir() if p.name != ".prepare.lock"], list(folder.iterdir())


@pytest.mark.slow
def test_train_fresh_and_resumed(finished_run, data_dir, tmp_path):
    for i, (delay, sig) in enumerate(moments(2, 8.0)):
        fresh = tmp_path / f"fresh{i}"
        args = [*TINY, "max_iters=100000", "eval_interval=20", f"dataset.data_dir={data_dir}", f"hydra.run.dir={fresh}"]
        proc = signalled("nanogpt.train", args, delay, sig)
        assert_clean_end(proc, {EXIT_STOPPED, EXIT_INTERRUPTED})
        if proc.returncode == EXIT_STOPPED:
            load_checkpoint(checkpoint_path(fresh, "last"))
        else:  # nothing to resume from: nothing left behind
            assert not fresh.exists() or not any(fresh.glob("ckpt_*")), list(fresh.iterdir())

        resumed = copy_run(finished_run, tmp_path / f"resumed{i}")
        proc = signalled("nanogpt.train", ["init_from=resume", f"run_dir={resumed}", "max_iters=100000", f"dataset.data_dir={data_dir}"], delay, sig)
        # 75 once the run has started (its checkpoint is there to resume from); 130 in the command's
        # first moments (imports, the command line), before it knows its run.
        assert_clean_end(proc, {EXIT_STOPPED, EXIT_INTERRUPTED})
        assert load_checkpoint(checkpoint_path(resumed, "last"))["iter_num"] >= 8  # never lost, never gone back


@pytest.mark.slow
def test_sample_and_export(finished_run, tmp_path):
    for i, (delay, sig) in enumerate(moments(3, 5.0)):
        proc = signalled("nanogpt.sample", [f"run_dir={finished_run}", "system.device=cpu", "max_new_tokens=20000"], delay, sig)
        assert_clean_end(proc, {0, EXIT_INTERRUPTED})
        out = tmp_path / f"hf{i}"
        proc = signalled("nanogpt.export", [f"run_dir={finished_run}", f"out={out}"], delay / 2, sig)
        assert_clean_end(proc, {0, EXIT_INTERRUPTED})
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(f".hf{i}.")]  # no staging folder left
        if out.exists():  # an export is whole or not there
            assert {"config.json", "model.safetensors", "nanogpt_tokenizer.json"} <= {p.name for p in out.iterdir()}


@pytest.mark.slow
def test_eval(finished_run, task_dir, tmp_path):  # noqa: F811
    run_dir = copy_run(finished_run, tmp_path / "run")
    for delay, sig in moments(4, 10.0):
        args = [f"run_dir={run_dir}", f"tasks={TASK}", f"include_path={task_dir}", "system.device=cpu"]
        proc = signalled("nanogpt.eval", args, delay, sig)
        assert_clean_end(proc, {0, EXIT_INTERRUPTED})
        assert not list((run_dir / "eval").glob(".*.tmp")) if (run_dir / "eval").exists() else True  # results whole or absent
    assert load_checkpoint(checkpoint_path(run_dir, "best"))["iter_num"] == 8
