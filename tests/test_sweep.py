"""Hydra multiruns on this machine: folders named by the swept values, re-running a sweep
skips finished runs and continues unfinished ones, and a sweep with failed jobs exits 1."""

from __future__ import annotations

import csv
import hashlib

from nanogpt.checkpoint import load_checkpoint
from nanogpt.metrics import read_metrics
from tests.conftest import TINY, run_cli

RUN = (*TINY, "eval_interval=4", "log_interval=2", "optimizer.warmup_iters=2", "optimizer.lr_decay_iters=12")


def test_rerunning_a_sweep_skips_finished_runs_and_continues_the_others(data_dir, tmp_path):
    sweep = tmp_path / "sweep"
    args = ("-m", *RUN, "model.n_embd=32,64", f"dataset.data_dir={data_dir}", f"hydra.sweep.dir={sweep}")
    run_cli("nanogpt.train", *args, "max_iters=8")
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [j.name for j in jobs] == ["model.n_embd=32", "model.n_embd=64"]
    digests = {j.name: hashlib.sha256((j / "ckpt_last.pt").read_bytes()).hexdigest() for j in jobs}

    # The same command again: nothing is trained twice.
    proc = run_cli("nanogpt.train", *args, "max_iters=8")
    assert proc.stdout.count("already reached max_iters=8") == 2
    assert {j.name: hashlib.sha256((j / "ckpt_last.pt").read_bytes()).hexdigest() for j in jobs} == digests

    # A longer sweep over the same folder continues each run where it stopped.
    run_cli("nanogpt.train", *args, "max_iters=12")
    for job in jobs:
        assert load_checkpoint(job / "ckpt_last.pt")["iter_num"] == 12
        iters = [r["iter"] for r in read_metrics(job / "metrics.jsonl") if r["event"] == "train"]
        assert iters == [2, 4, 6, 8, 10, 12]


def test_a_sweep_runs_every_job_then_exits_1_with_each_failures_reason(data_dir, tmp_path):
    sweep = tmp_path / "sweep"
    # One job trains, one diverges after its iter-0 evaluation, one is refused for its input.
    proc = run_cli(
        "nanogpt.train",
        "-m",
        *RUN,
        "max_iters=8",
        "eval_at_start=true",
        "optimizer.grad_clip=0",
        "optimizer.learning_rate=1e-3,1e4,-1",
        f"dataset.data_dir={data_dir}",
        f"hydra.sweep.dir={sweep}",
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == f"error: 2 of 3 runs of the sweep failed; the reasons are in {sweep / 'summary.md'}"
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == [f"optimizer.learning_rate={lr}" for lr in ("-1", "0.001", "10000.0")]

    rows = list(csv.reader((sweep / "summary.csv").open()))
    header, body = rows[0], {row[1]: dict(zip(rows[0], row)) for row in rows[1:]}
    assert header[-2:] == ["error", "status"]
    assert body["0.001"]["status"] == "finished" and float(body["0.001"]["best val loss"]) < 4.2 and body["0.001"]["error"] == ""
    diverged, refused = body["10000.0"], body["-1"]
    # The diverged job evaluated iter 0 (val loss ~4.17) before it blew up: that is no result.
    assert diverged["status"] == "failed" and diverged["best val loss"] == "-"
    assert diverged["error"].startswith("training diverged by iter ") and "Lower optimizer.learning_rate" in diverged["error"]
    assert refused["status"] == "failed" and refused["error"] == "optimizer.learning_rate=-1.0 is invalid: must be > 0"
    [row] = [line for line in (sweep / "summary.md").read_text().splitlines() if line.startswith("| optimizer.learning_rate=10000.0 |")]
    assert row.startswith("| optimizer.learning_rate=10000.0 | 10000.0 | - |") and f"| {diverged['error']} | failed |" in row
