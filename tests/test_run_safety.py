"""Run folders under misuse and faults (issue 13): one writer per folder, a checkpoint resumed
only in its own run, no leftovers, signal stops with their own exit codes, and each iteration
once in metrics.jsonl after a restart. Real CLI processes, real signals."""

from __future__ import annotations

import hashlib
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from nanogpt.checkpoint import load_checkpoint
from nanogpt.errors import EXIT_INTERRUPTED, EXIT_STOPPED
from nanogpt.metrics import read_metrics
from tests.conftest import ROOT, TINY, cli_env, copy_run, one_line_error, run_cli, train_here

RUN = (*TINY, "eval_interval=4", "log_interval=1", "optimizer.warmup_iters=2")


def args(run_dir: Path, data_dir: Path, *extra: str) -> list[str]:
    return [*RUN, f"dataset.data_dir={data_dir}", f"hydra.run.dir={run_dir}", *extra]


def start(*overrides: str, cwd: Path = ROOT) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "nanogpt.train", *overrides],
        cwd=cwd,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def folder_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def frozen_live_run(run_dir: Path, data_dir: Path, *extra: str, cwd: Path = ROOT) -> subprocess.Popen:
    """A run that holds its folder's lock and has a checkpoint, frozen by SIGSTOP so that it
    writes nothing while the test looks at its folder."""
    proc = start(*args(run_dir, data_dir, "max_iters=100000", *extra), cwd=cwd)
    wait_for(lambda: (run_dir / "ckpt_last.pt").exists(), proc)
    proc.send_signal(signal.SIGSTOP)
    time.sleep(0.2)  # the signal is delivered asynchronously
    return proc


def end(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.send_signal(signal.SIGCONT)
    proc.communicate()


def test_second_writer_and_resume_of_a_live_run_are_refused_and_change_nothing(data_dir, tmp_path):
    run_dir = tmp_path / "run"
    proc = frozen_live_run(run_dir, data_dir)
    try:
        before = folder_digest(run_dir)
        holder = f"pid {proc.pid} on host {socket.gethostname()} holds {run_dir / '.lock'}"
        second = run_cli("nanogpt.train", *args(run_dir, data_dir, "model.n_layer=3"), check=False)
        assert one_line_error(second) == (
            f"error: hydra.run.dir={run_dir} is in use by another run ({holder}); choose another folder, or wait for that run to end"
        )
        resumed = run_cli("nanogpt.train", "init_from=resume", f"run_dir={run_dir}", f"dataset.data_dir={data_dir}", check=False)
        assert one_line_error(resumed).startswith(f"error: {run_dir} is still training ({holder}); wait for it to end")
        assert folder_digest(run_dir) == before  # Hydra's config copy and log included
    finally:
        end(proc)
    # The kernel dropped the killed run's lock: its resume goes ahead, and removes the lock at the end.
    assert (run_dir / ".lock").exists()
    run_cli("nanogpt.train", "init_from=resume", f"run_dir={run_dir}", f"dataset.data_dir={data_dir}", "max_iters=12")
    assert load_checkpoint(run_dir / "ckpt_last.pt")["iter_num"] == 12
    assert not (run_dir / ".lock").exists()


def test_a_new_run_in_a_folder_that_holds_a_run_is_refused_and_changes_nothing(finished_run, data_dir, tmp_path):
    run_dir = copy_run(finished_run, tmp_path / "run")
    before = folder_digest(run_dir)
    proc = run_cli("nanogpt.train", *args(run_dir, data_dir, "max_iters=4", "model.n_layer=3"), check=False)
    assert one_line_error(proc) == (
        f"error: hydra.run.dir={run_dir} already holds a run: continue it with init_from=resume run_dir={run_dir}, or choose a new folder"
    )
    # Hydra's config copy included: a refused command that rewrote it with model.n_layer=3 left the
    # run unresumable (its own checkpoint "is not this run's checkpoint").
    assert folder_digest(run_dir) == before


def test_resume_without_run_dir_skips_a_live_run_and_says_which_it_chose(finished_run, data_dir, tmp_path):
    old, live = tmp_path / "outputs/2026-01-01/10-00-00", tmp_path / "outputs/2026-01-02/09-00-00"
    copy_run(finished_run, old)  # a finished run of 8 iterations
    proc = frozen_live_run(live, data_dir, cwd=tmp_path)  # the newest checkpoint, but still training
    try:
        resumed = run_cli("nanogpt.train", "init_from=resume", "max_iters=12", f"dataset.data_dir={data_dir}", cwd=tmp_path)
    finally:
        end(proc)
    assert (
        f"init_from=resume without run_dir: chose {old}, the run with the newest checkpoint under outputs/; "
        f"skipped 1 run(s) still training: {live} (pid {proc.pid} on host {socket.gethostname()})"
    ) in resumed.stdout
    assert load_checkpoint(old / "ckpt_last.pt")["iter_num"] == 12


def test_a_sweep_job_live_in_another_sweep_is_left_alone(data_dir, tmp_path):
    sweep = tmp_path / "sweep"
    sweep_args = ("-m", *RUN, "max_iters=100000", f"dataset.data_dir={data_dir}", f"hydra.sweep.dir={sweep}")
    proc = start(*sweep_args)
    job = sweep / "0"
    try:
        wait_for(lambda: (job / "ckpt_last.pt").exists(), proc)
        proc.send_signal(signal.SIGSTOP)
        before = folder_digest(job)
        again = run_cli("nanogpt.train", *sweep_args, check=False)
        assert f"error: hydra.run.dir={job.resolve()} is in use by another run (pid {proc.pid} on host" in again.stderr
        assert folder_digest(job) == before  # no error.txt: the live job is not marked failed
    finally:
        end(proc)


def test_a_checkpoint_from_another_run_is_refused(finished_run, data_dir, bpe_data_dir, tmp_path):
    two, three, bpe = copy_run(finished_run, tmp_path / "two"), tmp_path / "three", tmp_path / "bpe"
    # The other runs' checkpoints only are used: trained in this process.
    train_here(three, *RUN, "max_iters=4", "model.n_layer=3", f"dataset.data_dir={data_dir}")
    train_here(bpe, *RUN, "max_iters=4", "dataset=shakespeare", f"dataset.data_dir={bpe_data_dir}")
    for other, key, theirs, ours in [(three, "model.n_layer", 3, 2), (bpe, "dataset.name", '"shakespeare"', '"shakespeare_char"')]:
        for which in ("last", "best"):  # the folder's only checkpoint, the one a resume takes
            shutil.copy(other / "ckpt_last.pt", two / f"ckpt_{which}.pt")
        before = folder_digest(two)
        proc = run_cli("nanogpt.train", "init_from=resume", f"run_dir={two}", f"dataset.data_dir={data_dir}", check=False)
        assert one_line_error(proc) == (
            f"error: {two / 'ckpt_last.pt'} is not this run's checkpoint: it has {key}={theirs}, "
            f"{two / '.hydra/config.yaml'} has {ours}; put it back in its own run folder, or resume that run instead"
        )
        assert folder_digest(two) == before


def test_leftover_temp_files_are_removed_at_the_next_start_and_only_ours(finished_run, data_dir, tmp_path):
    run_dir = copy_run(finished_run, tmp_path / "run")
    ours = [".ckpt_last.pt.k3j_x9.tmp", ".ckpt_best.pt.0a1b2c.tmp", "metrics.jsonl.tmp", "loss.tmp.png"]
    theirs = ["notes.tmp", ".ckpt_last.tmp", "ckpt_last.pt.tmp"]
    for name in ours + theirs:
        (run_dir / name).write_bytes(b"left by a kill")
    proc = run_cli("nanogpt.train", "init_from=resume", f"run_dir={run_dir}", f"dataset.data_dir={data_dir}", "max_iters=12")
    assert f"removed the temp files of an interrupted write: {', '.join(sorted(ours))}" in proc.stdout
    assert sorted(p.name for p in run_dir.iterdir() if p.name in ours + theirs) == sorted(theirs)


def test_sigterm_stops_with_exit_75_a_checkpoint_and_the_resume_line(data_dir, tmp_path):
    run_dir = tmp_path / "run"
    proc = start(*args(run_dir, data_dir, "max_iters=100000"))
    wait_for(lambda: (run_dir / "ckpt_last.pt").exists(), proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_STOPPED == 75, err
    iter_num = load_checkpoint(run_dir / "ckpt_last.pt")["iter_num"]
    assert f"stopped by SIGTERM at iter {iter_num}; checkpoint saved. Resume with: python -m nanogpt.train init_from=resume run_dir={run_dir}" in out
    last = read_metrics(run_dir / "metrics.jsonl")[-1]
    assert (last["event"], last["status"], last["iter"]) == ("end", "stopped", iter_num)


def test_ctrl_c_during_start_up_leaves_no_folder(data_dir, tmp_path):
    run_dir = tmp_path / "outputs" / "day" / "run"
    # A long evaluation at iter 0 (eval_at_start): the stop is seen before the first iteration.
    proc = start(*args(run_dir, data_dir, "eval_at_start=true", "eval_iters=400"))
    for line in proc.stdout:
        if line.startswith("[") and "model:" in line:  # the model is built: start-up is under way
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_INTERRUPTED, err  # nothing to resume: not EXIT_STOPPED
    # In the evaluation at iter 0 the loop sees it at its first boundary; a moment earlier, still
    # starting, the run stops at once.
    assert (
        "stopped by SIGINT before the first iteration; nothing to keep" in out
        or err.strip() == "error: interrupted by SIGINT before the run's first checkpoint; nothing was kept"
    ), (out, err)
    assert "done:" not in out and "Traceback" not in err  # no line naming the folder, which is gone
    assert list(tmp_path.iterdir()) == []  # the run folder and the folders made for it


def test_second_ctrl_c_ends_at_once_in_one_line_and_keeps_the_last_checkpoint(data_dir, tmp_path):
    run_dir = tmp_path / "run"
    # Each evaluation takes seconds: the first Ctrl-C lands in one and waits for its end.
    proc = start(*args(run_dir, data_dir, "max_iters=100000", "eval_iters=1500"))
    wait_for(lambda: (run_dir / "ckpt_last.pt").exists(), proc, timeout=300)
    # Iteration 8's train record is written just before the evaluation at iter 8 starts.
    wait_for(lambda: any(r["event"] == "train" and r["iter"] == 8 for r in read_metrics(run_dir / "metrics.jsonl")), proc, timeout=300)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_INTERRUPTED == 130
    assert err.strip() == f"error: interrupted; stopped at once, the last checkpoint in {run_dir} is intact", err
    assert load_checkpoint(run_dir / "ckpt_last.pt")["iter_num"] == 4
    assert not list(run_dir.glob("*.tmp")) and not (run_dir / ".lock").exists() and not (run_dir / ".running").exists()


def test_a_sweep_job_killed_before_its_first_checkpoint_restarts_with_each_iteration_once(data_dir, tmp_path):
    sweep = tmp_path / "sweep"
    sweep_args = ("-m", *RUN, "max_iters=30", "eval_interval=30", f"dataset.data_dir={data_dir}", f"hydra.sweep.dir={sweep}")
    proc = start(*sweep_args)
    metrics = sweep / "0" / "metrics.jsonl"
    wait_for(lambda: sum(r["event"] == "train" for r in read_metrics(metrics)) >= 3, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert not (sweep / "0" / "ckpt_last.pt").exists()
    run_cli("nanogpt.train", *sweep_args)
    records = read_metrics(metrics)
    assert [r["iter"] for r in records if r["event"] == "train"] == list(range(1, 31))
    assert [r["event"] for r in records if r["event"] in ("start", "end")] == ["start", "end"]
