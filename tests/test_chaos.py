"""A bounded chaos test (issue 13): one run killed with SIGKILL 20 times at random moments (during
start-up, mid-training, and in the middle of checkpoint writes), resumed after each; it ends
bit-for-bit where the uninterrupted run ends, every iteration is recorded once, and no temp file
is left."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nanogpt.checkpoint import load_checkpoint
from nanogpt.metrics import read_metrics
from tests.conftest import ROOT, TINY, cli_env, run_cli, state_digest
from tests.test_resume import losses, wait_for

KILLS = 20
# The tiny model trains at a few ms per iteration: 1,000 iterations outlast 20 short lives.
N = 1000
# Dropout on, so that restoring the torch RNG matters; a checkpoint every 10 iterations, so that
# kills often land in the middle of a write.
RUN = (*TINY, "model.dropout=0.1", f"max_iters={N}", "eval_interval=10", "eval_iters=2", "log_interval=1", "optimizer.warmup_iters=5")


def train(run_dir: Path, data_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "nanogpt.train", *RUN, f"dataset.data_dir={data_dir}", f"hydra.run.dir={run_dir}", *extra]


def metrics_lines(run_dir: Path) -> int:
    try:
        return (run_dir / "metrics.jsonl").read_text().count("\n")
    except OSError:
        return 0


@pytest.mark.slow
def test_twenty_random_kills_then_resume_is_bitwise_identical(data_dir, tmp_path):
    reference = tmp_path / "reference"
    subprocess.run(train(reference, data_dir), cwd=ROOT, env=cli_env(), check=True, capture_output=True)

    run_dir = tmp_path / "run"
    rng = random.Random(2026)
    moments = {"start-up": 0, "training": 0, "checkpoint write": 0}
    for kill in range(KILLS):
        extra = () if kill == 0 else ("init_from=resume", f"run_dir={run_dir}")
        proc = subprocess.Popen(train(run_dir, data_dir, *extra), cwd=ROOT, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if kill == 0:
            moment = "training"
            if not wait_for(lambda: (run_dir / "ckpt_last.pt").exists(), proc, timeout=60):
                continue
        elif kill % 4 != 3:
            # Wait until it trains (a new metrics record), then let it run a moment, or until it writes a checkpoint.
            seen = metrics_lines(run_dir)
            if not wait_for(lambda: metrics_lines(run_dir) > seen, proc, timeout=60):
                continue  # it finished
            if kill % 2:
                moment = "checkpoint write"
                if not wait_for(lambda: any(p.name.endswith(".tmp") for p in run_dir.iterdir()), proc, timeout=30):
                    continue
            else:
                moment = "training"
                time.sleep(rng.uniform(0, 0.05))
        else:
            moment = "start-up"
            time.sleep(rng.uniform(0.1, 2.0))
        if proc.poll() is not None:
            continue
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        moments[moment] += 1
    assert sum(moments.values()) >= KILLS - 2 and moments["checkpoint write"] >= 5, moments
    run_cli("nanogpt.train", "init_from=resume", f"run_dir={run_dir}", f"dataset.data_dir={data_dir}")
    assert load_checkpoint(run_dir / "ckpt_last.pt")["iter_num"] == N
    assert state_digest(run_dir / "ckpt_last.pt") == state_digest(reference / "ckpt_last.pt")
    assert losses(run_dir) == losses(reference)  # the same values
    iters = [[r["iter"] for r in read_metrics(folder / "metrics.jsonl") if r["event"] == "train"] for folder in (run_dir, reference)]
    assert iters[0] == iters[1] and len(iters[0]) >= N - 1  # every iteration once, in order
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]
