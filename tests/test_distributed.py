"""DDP with torchrun on two CPU processes (gloo): one run folder, rank 0 alone writes, and the
same training as one process with the same global batch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from nanogpt import distributed
from nanogpt.checkpoint import load_checkpoint
from nanogpt.metrics import read_metrics
from tests.conftest import ROOT, TINY, cli_env, run_cli

RUN = (*TINY, "max_iters=12", "eval_interval=6", "log_interval=1", "optimizer.warmup_iters=2", "gradient_accumulation_steps=2")


def torchrun(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "nanogpt.train", *args],
        cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=600,
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
