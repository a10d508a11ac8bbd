"""A bounded chaos test (issue 13): one run killed with SIGKILL 12 times at random moments (during
start-up, mid-training, and in the middle of checkpoint writes: half of the kills), resumed after
each; it ends bit-for-bit where the uninterrupted run ends, every iteration is recorded once, and
no temp file is left. Every kill after the first lands on a resumed run, so this is also the test of
many kills in one run."""

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

# Each kill after the first, in turn; a life makes little progress (a write kill none: it loses the
# checkpoint it was writing), so 300 iterations outlast the 12 lives with room to spare.
MOMENTS = ("checkpoint write", "start-up", "checkpoint write", "training")
KILLS = 12
N = 300
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
def test_random_kills_then_resume_is_bitwise_identical(data_dir, tmp_path):
    reference = tmp_path / "reference"
    subprocess.run(train(reference, data_dir), cwd=ROOT, env=cli_env(), check=True, capture_output=True)

    run_dir = tmp_path / "run"
    rng = random.Random(2026)
    moments = {"start-up": 0, "training": 0, "checkpoint write": 0}
    startup = 2.0  # seconds; then the shortest start-up seen: launch to a life's first metrics record
    for kill in range(KILLS):
        extra = () if kill == 0 else ("init_from=resume", f"run_dir={run_dir}")
        launched = time.monotonic()
        proc = subprocess.Popen(train(run_dir, data_dir, *extra), cwd=ROOT, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        moment = "training" if kill == 0 else MOMENTS[(kill - 1) % len(MOMENTS)]
        if kill == 0:
            if not wait_for(lambda: (run_dir / "ckpt_last.pt").exists(), proc, timeout=60):
                continue
        elif moment == "start-up":
            # A random moment of start-up (imports, Hydra, the lock, loading the checkpoint), on
            # a fast machine as on a slow one.
            time.sleep(rng.uniform(0.1, 0.9) * startup)
        else:
            # Wait until it trains (a new metrics record), then let it run a moment, or until it writes a checkpoint.
            seen = metrics_lines(run_dir)
            if not wait_for(lambda: metrics_lines(run_dir) > seen, proc, timeout=60):
                continue  # it finished
            startup = min(startup, time.monotonic() - launched)
            if moment == "checkpoint write":
                if not wait_for(lambda: any(p.name.endswith(".tmp") for p in run_dir.iterdir()), proc, timeout=30):
                    continue
            else:
                time.sleep(rng.uniform(0, 0.05))
        if proc.poll() is not None:
            continue
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
        moments[moment] += 1
    assert sum(moments.values()) >= KILLS - 1 and moments["checkpoint write"] >= 5, moments
    assert load_checkpoint(run_dir / "ckpt_last.pt")["iter_num"] < N  # every life was cut short
    run_cli("nanogpt.train", "init_from=resume", f"run_dir={run_dir}", f"dataset.data_dir={data_dir}")
    assert load_checkpoint(run_dir / "ckpt_last.pt")["iter_num"] == N
    assert state_digest(run_dir / "ckpt_last.pt") == state_digest(reference / "ckpt_last.pt")
    assert losses(run_dir) == losses(reference)  # the same values
    iters = [[r["iter"] for r in read_metrics(folder / "metrics.jsonl") if r["event"] == "train"] for folder in (run_dir, reference)]
    assert iters[0] == iters[1] and len(iters[0]) >= N - 1  # every iteration once, in order
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]
