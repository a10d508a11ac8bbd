"""The training loop's guards, in-process: a training loss that turns NaN stops the run before any
evaluation could see it, and Ctrl-C saves a checkpoint that the report then shows as stopped."""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path

import pytest

from nanogpt.checkpoint import load_checkpoint
from nanogpt.cli.report import main as report_main
from nanogpt.errors import RunStopped, TrainingError
from nanogpt.metrics import read_metrics
from nanogpt.training import loop
from nanogpt.training import train as train_run
from nanogpt.training.setup import TrainingRun
from tests.conftest import TINY
from tests.test_config import compose_train

RUN = (*TINY, "log_interval=1", "optimizer.warmup_iters=2")


def train(run_dir: Path, data_dir: Path, *overrides: str) -> float:
    """nanogpt.training.train() as the command runs it, on a composed config, in this process."""
    run_dir.mkdir(exist_ok=True)
    overrides = (*overrides, f"dataset.data_dir={data_dir}")
    return train_run(compose_train(*RUN, *overrides), run_dir, list(overrides))


def test_a_nan_training_loss_stops_the_run_at_its_log_line_before_any_evaluation(data_dir, tmp_path):
    """With no evaluation before max_iters, only the training-loss guard can stop a divergence
    early: without it the run trains 40 steps of NaN and the final evaluation's val loss says so."""
    run_dir = tmp_path / "run"
    train(run_dir, data_dir, "max_iters=8", "eval_interval=4")
    before = hashlib.sha256((run_dir / "ckpt_last.pt").read_bytes()).hexdigest()
    diverge = ("optimizer.learning_rate=1e4", "optimizer.min_lr=1e4", "optimizer.grad_clip=0", "eval_interval=1000")
    with pytest.raises(TrainingError) as caught:
        train(run_dir, data_dir, "init_from=resume", f"run_dir={run_dir}", "max_iters=40", *diverge)
    message = str(caught.value)
    assert "\n" not in message and "(a training loss that is NaN or infinite)" in message, message
    trained = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["event"] == "train"]
    stopped_at = int(message.split("diverged by iter ")[1].split()[0])
    assert 8 < stopped_at < 40 and trained[-1]["iter"] == stopped_at - 1  # at the first log line after the NaN
    assert all(r["iter"] <= 8 for r in read_metrics(run_dir / "metrics.jsonl") if r["event"] == "eval")
    # Never checkpointed: the checkpoint of iter 8 is the one left, bit for bit.
    assert f"the last good checkpoint is kept in {run_dir / 'ckpt_last.pt'}" in message
    assert hashlib.sha256((run_dir / "ckpt_last.pt").read_bytes()).hexdigest() == before
    assert read_metrics(run_dir / "metrics.jsonl")[-1] == {**read_metrics(run_dir / "metrics.jsonl")[-1], "event": "end", "status": "failed"}


@pytest.fixture(scope="module")
def stopped_by_ctrl_c(tmp_path_factory, data_dir) -> Path:
    """A run sent SIGINT (Ctrl-C) during iteration 6; it has a checkpoint of iter 4 by then."""
    run_dir = tmp_path_factory.mktemp("ctrl-c") / "run"
    step = loop.train_step

    def train_step(run: TrainingRun, lr: float):
        loss = step(run, lr)
        if run.state.iter_num == 6:
            os.kill(os.getpid(), signal.SIGINT)
        return loss

    loop.train_step = train_step
    caught: BaseException | None = None
    try:
        train(run_dir, data_dir, "max_iters=100", "eval_interval=4")
    except BaseException as exc:  # a KeyboardInterrupt must fail this test, not end the session
        caught = exc
    finally:
        loop.train_step = step
    assert isinstance(caught, RunStopped), repr(caught)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C is Python's again
    return run_dir


def test_ctrl_c_saves_a_checkpoint_at_the_next_step_boundary(stopped_by_ctrl_c):
    run_dir = stopped_by_ctrl_c
    assert load_checkpoint(run_dir / "ckpt_last.pt")["iter_num"] == 6
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["iter"] for r in records if r["event"] == "train"] == list(range(1, 7))
    assert (records[-1]["event"], records[-1]["status"], records[-1]["iter"]) == ("end", "stopped", 6)
    assert not (run_dir / ".lock").exists() and not (run_dir / ".running").exists()


def test_the_report_shows_a_stopped_run_as_stopped(stopped_by_ctrl_c, capsys):
    assert report_main([str(stopped_by_ctrl_c)]) == 0
    header, row = capsys.readouterr().out.splitlines()[:2]
    assert header.split()[-1] == "status" and row.split()[-1] == "stopped"
    assert not (stopped_by_ctrl_c / "summary.csv").exists()  # one run's report writes nothing into it
