"""Hydra multiruns on this machine: folders named by the swept values, re-running a sweep
skips finished runs and continues unfinished ones."""

from __future__ import annotations

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
