"""DDP with torchrun on two CPU processes (gloo): one run folder, rank 0 alone writes, and the
same training as one process with the same global batch."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from omegaconf import OmegaConf

from nanogpt import distributed
from nanogpt.checkpoint import load_checkpoint
from nanogpt.distributed import Dist
from nanogpt.metrics import read_metrics
from nanogpt.training import train
from nanogpt.training.loop import agreement_due
from tests.conftest import ROOT, TINY, cli_env, run_cli, state_digest
from tests.test_config import compose_train

RUN = (*TINY, "max_iters=12", "eval_interval=6", "log_interval=1", "optimizer.warmup_iters=2", "gradient_accumulation_steps=2")


def torchrun(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "nanogpt.train", *args],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


def losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if r["event"] == "train"]


@pytest.mark.slow
def test_two_ranks_train_like_one_process_with_the_same_global_batch(data_dir, tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    run_cli("nanogpt.train", *RUN, f"dataset.data_dir={data_dir}", f"hydra.run.dir={single}")
    proc = torchrun(*RUN, f"dataset.data_dir={data_dir}", f"hydra.run.dir={ddp}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    assert losses(ddp) == pytest.approx(losses(single), rel=1e-4)
    a, b = load_checkpoint(single / "ckpt_last.pt"), load_checkpoint(ddp / "ckpt_last.pt")
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, rtol=1e-4, atol=1e-5)
    assert len(b["rng"]) == 2  # every rank's RNG streams, for exact resume

    # One writer: one config copy, each log line once, one metrics record per event.
    assert (ddp / ".hydra" / "config.yaml").is_file()
    log = (ddp / "train.log").read_text()
    assert log.count("[INFO] run folder:") == 1 and log.count("done: best val loss") == 1 and "2 ranks" in log
    events = [r["event"] for r in read_metrics(ddp / "metrics.jsonl")]
    assert events.count("start") == 1 and events.count("end") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp", "single"]


@pytest.mark.slow
def test_two_ranks_of_two_micro_steps_each_train_like_one_process_of_four(data_dir, tmp_path):
    """gradient_accumulation_steps=4 on 2 ranks: each rank runs 2 micro-steps, the first under
    DDP's no_sync (gradients accumulate locally), the last all-reducing their sum."""
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    run = (*RUN, "gradient_accumulation_steps=4", "max_iters=8", "eval_interval=4", f"dataset.data_dir={data_dir}")
    single.mkdir()
    train(compose_train(*run), single)
    proc = torchrun(*run, f"hydra.run.dir={ddp}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert read_metrics(ddp / "metrics.jsonl")[-1]["tokens"] == 8 * 4 * 8 * 32  # 8 steps of 4 micro-batches of 8 x 32
    assert len(losses(single)) == 8 and losses(ddp) == pytest.approx(losses(single), rel=1e-4)
    a, b = load_checkpoint(single / "ckpt_last.pt"), load_checkpoint(ddp / "ckpt_last.pt")
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_a_two_rank_run_stopped_and_resumed_ends_bit_for_bit_as_one_uninterrupted(data_dir, tmp_path):
    """Dropout on, so that each rank's own random stream must come back from the checkpoint."""
    whole, halves = tmp_path / "whole", tmp_path / "halves"
    run = (*RUN, "model.dropout=0.1", "gradient_accumulation_steps=4", "eval_interval=4", f"dataset.data_dir={data_dir}")
    for args in ((*run, "max_iters=8", f"hydra.run.dir={whole}"), (*run, "max_iters=4", "optimizer.lr_decay_iters=8", f"hydra.run.dir={halves}")):
        proc = torchrun(*args)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert load_checkpoint(halves / "ckpt_last.pt")["iter_num"] == 4
    proc = torchrun("init_from=resume", f"run_dir={halves}", "max_iters=8", f"dataset.data_dir={data_dir}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "resuming" in (halves / "train.log").read_text()
    assert load_checkpoint(halves / "ckpt_last.pt")["iter_num"] == 8
    assert state_digest(halves / "ckpt_last.pt") == state_digest(whole / "ckpt_last.pt")
    assert losses(halves) == losses(whole)  # each iteration once, with identical values


@pytest.mark.slow
def test_ranks_share_one_timestamped_folder(data_dir, tmp_path):
    proc = torchrun(*RUN, "max_iters=2", f"dataset.data_dir={data_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [p for p in (tmp_path / "outputs").glob("*/*") if p.is_dir()]
    assert len(runs) == 1 and (runs[0] / "ckpt_last.pt").is_file()


def test_world_size_must_divide_the_accumulation(data_dir, tmp_path):
    proc = torchrun(*TINY, "gradient_accumulation_steps=3", "max_iters=2", f"dataset.data_dir={data_dir}", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode != 0
    assert "error: gradient_accumulation_steps=3 is invalid: must be divisible by the world size 2" in proc.stderr


@pytest.mark.parametrize("cuda, backend", [(True, "cpu:gloo,cuda:nccl"), (False, "gloo")])
def test_the_group_opened_to_agree_on_the_start_time_carries_cuda_tensors_over_nccl(monkeypatch, cuda, backend):
    """cli() opens the process group before Hydra (to agree on the run folder's name) and init()
    keeps it: on a GPU machine it must already have NCCL for the gradients, not gloo alone."""
    opened: list[str] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(dist, "is_initialized", lambda: bool(opened))
    monkeypatch.setattr(dist, "init_process_group", lambda backend: opened.append(backend))
    monkeypatch.setattr(dist, "broadcast_object_list", lambda objects, src: None)
    monkeypatch.setattr(dist, "get_rank", lambda: 0)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    for key, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "NANOGPT_START_TIME": ""}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("NANOGPT_START_TIME")
    distributed.agree_on_start_time()
    assert distributed.init().world_size == 2
    assert opened == [backend]


def test_ranks_agree_on_stopping_every_ten_steps_and_at_log_lines_and_evaluations():
    """Each agreement is a collective that waits for every rank: not at every step."""
    cfg = OmegaConf.create({"log_interval": 25, "eval_interval": 50})
    assert [i for i in range(61) if agreement_due(i, cfg, Dist(world_size=2))] == [0, 10, 20, 25, 30, 40, 50, 60]
    assert all(agreement_due(i, cfg, Dist()) for i in range(61))  # one process asks no one


def test_agreements_are_cpu_tensors_so_gloo_carries_them_without_a_gpu_sync(monkeypatch):
    reduced: list[torch.Tensor] = []
    monkeypatch.setattr(dist, "all_reduce", lambda tensor, op: reduced.append(tensor))
    world = Dist(rank=0, world_size=2)
    assert distributed.max_over_ranks(2.5, world) == 2.5 and distributed.any_rank(True, world)
    assert [t.device.type for t in reduced] == ["cpu", "cpu"]


def worker_pids(launcher: subprocess.Popen) -> dict[int, int]:
    """{rank: pid} of torchrun's worker processes."""
    children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()
    ranks = {}
    for pid in map(int, children):
        environ = dict(v.split("=", 1) for v in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in v)
        ranks[int(environ["RANK"])] = pid
    return ranks


@pytest.mark.slow
def test_a_signal_to_one_rank_stops_every_rank_at_the_same_agreed_step_with_a_checkpoint(data_dir, tmp_path):
    run_dir = tmp_path / "run"
    args = (*RUN, "max_iters=100000", "eval_interval=100000", "log_interval=7", f"dataset.data_dir={data_dir}", f"hydra.run.dir={run_dir}")
    with open(tmp_path / "out.txt", "w") as out:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "nanogpt.train", *args],
            cwd=ROOT,
            env=cli_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        log = run_dir / "train.log"
        deadline = time.monotonic() + 300
        while not (log.is_file() and "iter 14/" in log.read_text()):
            assert launcher.poll() is None and time.monotonic() < deadline, (tmp_path / "out.txt").read_text()[-3000:]
            time.sleep(0.2)
        os.kill(worker_pids(launcher)[1], signal.SIGTERM)  # rank 1 alone; rank 0 learns it from the agreement
        launcher.wait(timeout=300)
    found = re.search(r"stopped by another rank at iter (\d+); checkpoint saved", log.read_text())
    assert found, (tmp_path / "out.txt").read_text()[-3000:]
    stopped_at = int(found[1])
    assert stopped_at >= 14 and (stopped_at % 10 == 0 or stopped_at % 7 == 0)
    assert load_checkpoint(run_dir / "ckpt_last.pt")["iter_num"] == stopped_at
    # The first rank to end is torchrun's root cause: stopped, resumable (torchrun then ends the other).
    assert "exitcode  : 75" in (tmp_path / "out.txt").read_text()
