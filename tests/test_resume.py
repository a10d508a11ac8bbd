"""Exact resume: a run killed at any moment and resumed ends bit-for-bit where the
uninterrupted run ends. Real CLI processes, real SIGKILL/SIGTERM."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nanogpt.checkpoint import load_checkpoint
from nanogpt.metrics import read_metrics
from tests.conftest import ROOT, TINY, cli_env, copy_run, run_cli, state_digest, train_here

N = 40
# Dropout on, so that restoring the torch RNG matters; frequent checkpoints, so that kills
# often land in the middle of a write.
RUN = (*TINY, "model.dropout=0.1", f"max_iters={N}", "eval_interval=4", "log_interval=1", "optimizer.warmup_iters=5")


def train_args(run_dir: Path, data_dir: Path, *extra: str) -> list[str]:
    return [*RUN, f"dataset.data_dir={data_dir}", f"hydra.run.dir={run_dir}", *extra]


def resume(run_dir: Path, data_dir: Path, *extra: str, check: bool = True):
    return run_cli("nanogpt.train", "init_from=resume", f"run_dir={run_dir}", f"dataset.data_dir={data_dir}", *extra, check=check)


def losses(run_dir: Path) -> dict[tuple[str, int], float]:
    out = {}
    for r in read_metrics(run_dir / "metrics.jsonl"):
        if r["event"] == "train":
            out[("train", r["iter"])] = r["loss"]
        elif r["event"] == "eval":
            out[("eval", r["iter"])] = r["val_loss"]
    return out


def folder_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    run_cli("nanogpt.train", *train_args(run_dir, data_dir))
    return run_dir


def start(run_dir: Path, data_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "nanogpt.train", *train_args(run_dir, data_dir)],
        cwd=ROOT,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 120, poll: float = 0.0005) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(poll)
    return False


def kill_and_resume(run_dir: Path, data_dir: Path, rng: random.Random, during_write: bool) -> None:
    proc = start(run_dir, data_dir)
    assert wait_for(lambda: (run_dir / "ckpt_last.pt").exists(), proc), proc.communicate()[0]
    if during_write:
        # Kill the moment a checkpoint's temp file appears: mid-write.
        wait_for(lambda: any(p.name.endswith(".tmp") for p in run_dir.iterdir()), proc, timeout=30)
    else:
        # A random moment of training, after a random iteration's record: the same on a fast
        # machine and a slow one, and never after the tiny run's end.
        target = rng.randrange(1, N - 4)
        trained = lambda: any(r["event"] == "train" and r["iter"] >= target for r in read_metrics(run_dir / "metrics.jsonl"))  # noqa: E731
        wait_for(trained, proc, poll=0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # the kill landed: the run had not finished by itself
    assert load_checkpoint(run_dir / "ckpt_last.pt")["iter_num"] < N  # and was cut short
    resume(run_dir, data_dir)


def assert_same_run(run_dir: Path, reference: Path) -> None:
    assert load_checkpoint(run_dir / "ckpt_last.pt")["iter_num"] == N
    assert state_digest(run_dir / "ckpt_last.pt") == state_digest(reference / "ckpt_last.pt")
    ours, theirs = losses(run_dir), losses(reference)
    assert ours == theirs  # every iteration once, with identical values


# One kill at a random moment of training and one in the middle of a checkpoint write; tests/test_chaos.py
# kills one run 12 times (resumed runs too, half of the kills mid-write).
@pytest.mark.slow
@pytest.mark.parametrize("point", ["training", "checkpoint write"])
def test_kill_anywhere_then_resume_is_bitwise_identical(point, reference, data_dir, tmp_path):
    rng = random.Random(0)
    kill_and_resume(tmp_path / "run", data_dir, rng, during_write=point == "checkpoint write")
    assert_same_run(tmp_path / "run", reference)


def test_sigterm_checkpoints_and_says_how_to_resume(reference, data_dir, tmp_path):
    run_dir = tmp_path / "run"
    proc = start(run_dir, data_dir)
    assert wait_for(lambda: (run_dir / "ckpt_last.pt").exists(), proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 75, out  # EXIT_STOPPED: stopped by a signal, resumable
    assert f"Resume with: python -m nanogpt.train init_from=resume run_dir={run_dir}" in out
    assert load_checkpoint(run_dir / "ckpt_last.pt")["iter_num"] < N
    resume(run_dir, data_dir)
    assert_same_run(run_dir, reference)


def test_resume_with_more_iterations_continues_in_the_same_folder(reference, data_dir, tmp_path):
    run_dir = tmp_path / "run"
    run_cli("nanogpt.train", *train_args(run_dir, data_dir, "max_iters=20", f"optimizer.lr_decay_iters={N}"))
    proc = resume(run_dir, data_dir, f"max_iters={N}", "log_interval=1")
    assert f"resuming {run_dir} from ckpt_last.pt (iter 20)" in proc.stdout
    assert_same_run(run_dir, reference)
    assert sorted(p.name for p in run_dir.iterdir() if p.is_dir()) == [".hydra"]
    assert len(list((run_dir / ".hydra").glob("resume-*"))) == 1


def test_corrupt_last_checkpoint_falls_back_to_an_older_one(reference, data_dir, tmp_path):
    run_dir = tmp_path / "run"
    run_cli("nanogpt.train", *train_args(run_dir, data_dir, "max_iters=20", f"optimizer.lr_decay_iters={N}", "keep_last_k=2"))
    assert sorted(p.name for p in run_dir.glob("ckpt_iter_*.pt")) == ["ckpt_iter_0000016.pt", "ckpt_iter_0000020.pt"]
    # New files, not writes into the old ones: the snapshots are hard links of ckpt_last.
    last, snapshot = run_dir / "ckpt_last.pt", run_dir / "ckpt_iter_0000020.pt"
    truncated = last.read_bytes()[: last.stat().st_size // 2]
    last.unlink(), snapshot.unlink()
    snapshot.write_bytes(b"garbage")
    last.write_bytes(truncated)
    proc = resume(run_dir, data_dir, f"max_iters={N}", "keep_last_k=0")
    assert "ckpt_last.pt: unreadable, truncated or corrupt" in proc.stdout
    assert "ckpt_iter_0000020.pt: unreadable, truncated or corrupt" in proc.stdout
    assert "resuming from" in proc.stdout and "instead" in proc.stdout
    assert_same_run(run_dir, reference)


def test_eval_settings_never_change_the_training_batches(data_dir, tmp_path):
    # In this process: the claim is the trainer's, not the command's.
    for name, evals in (("default", ()), ("other", ("eval_interval=7", "eval_iters=2"))):
        train_here(tmp_path / name, *RUN, *evals, f"dataset.data_dir={data_dir}")
    assert state_digest(tmp_path / "other" / "ckpt_last.pt") == state_digest(tmp_path / "default" / "ckpt_last.pt")


def test_resume_refusals_change_nothing_on_disk(finished_run, data_dir, tmp_path):
    run_dir = copy_run(finished_run, tmp_path / "run")
    before = folder_digest(run_dir)
    for extra, message in [
        (("model.n_layer=3",), "error: model.n_layer cannot change on resume: the checkpoint has 2, you asked for 3"),
        (("model=small",), "error: model cannot change on resume"),
        (("dataset.block_size=16",), "error: dataset.block_size cannot change on resume: the checkpoint has 32, you asked for 16"),
        (("seed=7",), "error: seed cannot change on resume"),
    ]:
        proc = resume(run_dir, data_dir, *extra, check=False)
        assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [proc.stderr.strip()], proc.stderr
        assert proc.stderr.startswith(message), proc.stderr
    assert folder_digest(run_dir) == before

    empty = tmp_path / "empty"
    empty.mkdir()
    proc = resume(empty, data_dir, check=False)
    assert proc.returncode == 2 and f"{empty}: no checkpoint to resume from" in proc.stderr
    assert list(empty.iterdir()) == []


def test_checkpoint_of_another_architecture_is_refused(finished_run, data_dir, tmp_path):
    a, b = copy_run(finished_run, tmp_path / "a"), tmp_path / "b"
    train_here(b, *RUN, "max_iters=4", "model.n_embd=64", f"dataset.data_dir={data_dir}")  # its checkpoint only is used
    os.replace(b / "ckpt_last.pt", a / "ckpt_last.pt")
    os.remove(a / "ckpt_best.pt")
    # a's checkpoint now comes from b: its own config rules, and a's config overrides are refused.
    proc = resume(a, data_dir, "model.n_embd=32", check=False)
    assert proc.returncode == 2 and "model.n_embd cannot change on resume: the checkpoint has 64, you asked for 32" in proc.stderr


def test_resume_without_run_dir_takes_the_latest_run(finished_run, data_dir, tmp_path):
    for name in ("2026-01-01/10-00-00", "2026-01-02/09-00-00"):
        latest = copy_run(finished_run, tmp_path / "outputs" / name)  # finished at iter 8
    os.utime(latest / "ckpt_last.pt")  # written after the other run's (and its own ckpt_best.pt)
    proc = run_cli("nanogpt.train", "init_from=resume", "max_iters=12", f"dataset.data_dir={data_dir}", cwd=tmp_path)
    assert f"resuming {tmp_path / 'outputs/2026-01-02/09-00-00'} from ckpt_last.pt (iter 8)" in proc.stdout
    assert load_checkpoint(tmp_path / "outputs/2026-01-02/09-00-00/ckpt_last.pt")["iter_num"] == 12
    assert load_checkpoint(tmp_path / "outputs/2026-01-01/10-00-00/ckpt_last.pt")["iter_num"] == 8
    assert sorted(p.name for p in (tmp_path / "outputs").iterdir()) == ["2026-01-01", "2026-01-02"]
