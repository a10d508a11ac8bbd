"""Faults of the machine rather than of the input, each met for real: a disk that fills up while a
checkpoint is written, a run folder on a read-only disk, a checkpoint whose model_args describe a
model far larger than its weights, and a Hugging Face hub that cannot be reached. Each ends in one
`error:` line that names the file and the cause; storage faults exit with status 3 (bad input is 2),
and the checkpoints already on disk stay intact."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nanogpt.checkpoint import CKPT_FORMAT, check_model_args, load_checkpoint, save_checkpoint
from nanogpt.errors import EXIT_STORAGE_ERROR, CheckpointError
from nanogpt.model import GPT, GPTConfig
from tests.conftest import ROOT, TINY, cli_env, copy_run, one_line_error, run_cli

RUN = (*TINY, "eval_interval=4", "log_interval=2")


def storage_error_line(proc: subprocess.CompletedProcess) -> str:
    """The single `error: ...` line of a command stopped by a storage fault (exit status 3)."""
    assert proc.returncode == EXIT_STORAGE_ERROR, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def trained_run(run_dir: Path, finished_run: Path) -> str:
    """A copy of the session's finished tiny run (8 iterations) in run_dir; the digest of its ckpt_last."""
    copy_run(finished_run, run_dir)
    return digest(run_dir / "ckpt_last.pt")


def resume(run_dir: Path) -> subprocess.CompletedProcess:
    return run_cli("nanogpt.train", "init_from=resume", f"run_dir={run_dir}", "max_iters=12", check=False)


def test_a_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_old_checkpoint(small_disk, finished_run):
    run_dir = small_disk / "run"
    before = trained_run(run_dir, finished_run)
    # Leave 100 kB: room for the resumed run's config copy and log lines, not for a 370 kB checkpoint.
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    with open(small_disk / "filler", "wb") as f:
        os.posix_fallocate(f.fileno(), 0, free - 100_000)

    line = storage_error_line(resume(run_dir))
    assert line.startswith(f"error: {run_dir}/ckpt_") and "disk full (no space left on device)" in line
    assert digest(run_dir / "ckpt_last.pt") == before and load_checkpoint(run_dir / "ckpt_last.pt")["iter_num"] == 8
    assert not list(run_dir.glob(".*.tmp"))  # the half-written temp file is gone


def test_a_read_only_run_folder_on_resume_is_one_line(small_disk, finished_run):
    run_dir = small_disk / "run"
    before = trained_run(run_dir, finished_run)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)

    line = storage_error_line(resume(run_dir))
    assert line.startswith(f"error: {run_dir}/") and "read-only file system" in line
    assert digest(run_dir / "ckpt_last.pt") == before


def test_a_run_folder_that_cannot_be_created_is_one_line(small_disk, data_dir):
    parent = small_disk / "frozen"
    parent.mkdir()
    subprocess.run(["chattr", "+i", str(parent)], check=True)  # root ignores chmod, not the immutable flag
    try:
        proc = run_cli("nanogpt.train", *RUN, "max_iters=4", f"dataset.data_dir={data_dir}", f"hydra.run.dir={parent / 'run'}", check=False)
    finally:
        subprocess.run(["chattr", "-i", str(parent)], check=True)
    assert storage_error_line(proc) == (
        f"error: {parent / 'run'}: operation not permitted; make the folder writable for this user or use another folder"
    )


# ----------------------------------------------------------------------------- untrusted shapes


def tiny_checkpoint(path: Path, **model_args) -> Path:
    """A checkpoint of a 2-layer, 32-wide model whose model_args are overridden by model_args."""
    args = dict(vocab_size=65, block_size=32, n_layer=2, n_head=2, n_embd=32)
    model = GPT(GPTConfig(**args))
    meta = {"tokenizer": "char", "vocab_size": 65, "itos": "".join(chr(32 + i) for i in range(65))}
    state = {"format": CKPT_FORMAT, "model": model.state_dict(), "model_args": {**args, **model_args}, "dataset_meta": json.dumps(meta)}
    save_checkpoint(path, state)
    return path


def test_check_model_args_passes_a_true_checkpoint(tmp_path):
    path = tiny_checkpoint(tmp_path / "ckpt_best.pt")
    assert check_model_args(load_checkpoint(path), path) == dict(vocab_size=65, block_size=32, n_layer=2, n_head=2, n_embd=32)


@pytest.mark.parametrize(
    "model_args, why",
    [
        (dict(n_layer=64, n_embd=16384), "vocab_size=65, n_embd=16384, but the token embedding is 65x32"),
        (dict(n_layer=64), "n_layer=64, but the weights hold 2 layers"),
        (dict(block_size=1 << 20), "transformer.wpe.weight is (32, 32), model_args give (1048576, 32)"),
        (dict(n_head=3), "n_embd=32 is not divisible by n_head=3"),
        (dict(n_layer=-1), "n_layer=-1 is not a positive integer"),
    ],
)
def test_check_model_args_refuses_sizes_the_weights_do_not_have(tmp_path, model_args, why):
    path = tiny_checkpoint(tmp_path / "ckpt_best.pt", **model_args)
    with pytest.raises(CheckpointError) as info:
        check_model_args(load_checkpoint(path), path)
    assert str(info.value) == f"{path}: its model_args do not match its weights ({why}); refused before building the model"


def test_sampling_a_crafted_checkpoint_is_refused_before_allocating(tmp_path):
    """64 layers x 16384 wide in a 400 kB file: nanogpt.sample allocated 4.4 GB before failing."""
    run_dir = tmp_path / "run"
    tiny_checkpoint(run_dir / "ckpt_best.pt", n_layer=64, n_embd=16384)
    # A parent of its own, so that RUSAGE_CHILDREN is the peak memory of the sample process alone.
    measure = (
        "import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "sys.stderr.write(p.stderr); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(p.returncode)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", measure, sys.executable, "-m", "nanogpt.sample", f"run_dir={run_dir}", "system.device=cpu"],
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert one_line_error(proc) == (
        f"error: {run_dir / 'ckpt_best.pt'}: its model_args do not match its weights "
        "(vocab_size=65, n_embd=16384, but the token embedding is 65x32); refused before building the model"
    )
    peak_kib = int(proc.stdout.split()[-1])
    assert peak_kib < 1_000_000, f"peak memory {peak_kib / 1e6:.1f} GB"


# ----------------------------------------------------------------------------- no network


@pytest.fixture
def silent_server() -> Iterator[socket.socket]:
    """An endpoint that accepts connections and never answers: a hub behind a dead proxy. The
    kernel completes the connections, so they wait in its queue to be counted."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield server


def connections(server: socket.socket) -> int:
    server.setblocking(False)
    count = 0
    try:
        while True:
            server.accept()[0].close()
            count += 1
    except BlockingIOError:
        return count


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:9", "silent"])
def test_init_from_gpt2_without_a_network_fails_fast_in_one_line(bpe_data_dir, tmp_path, endpoint, request):
    server = request.getfixturevalue("silent_server") if endpoint == "silent" else None
    if server is not None:
        endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
    # Online as far as huggingface_hub knows (HF_HUB_OFFLINE=0), with an empty cache.
    env = {"HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf_home"), "HF_ENDPOINT": endpoint}
    started = time.monotonic()
    proc = run_cli(
        "nanogpt.train",
        "init_from=gpt2",
        "dataset=shakespeare",
        f"dataset.data_dir={bpe_data_dir}",
        "max_iters=2",
        "optimizer.warmup_iters=0",
        "system.device=cpu",
        f"hydra.run.dir={tmp_path / 'run'}",
        env=env,
        check=False,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    host = endpoint.removeprefix("http://")
    line = one_line_error(proc)
    assert line.startswith(
        f"error: init_from=gpt2: OpenAI's GPT-2 weights (openai-community/gpt2) are not in the Hugging Face cache and {host} cannot be reached ("
    )
    assert "init_from=hf:<folder>" in line  # the way out
    assert elapsed < 10, f"took {elapsed:.1f} s"
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == len(set(lines)) and "warn" not in proc.stdout.lower() and "Retry" not in proc.stdout + proc.stderr, proc.stdout
    assert not (tmp_path / "run").exists()
    if server is not None:  # one request that timed out, not one per retry or helper request
        assert connections(server) == 1


def test_resuming_a_crafted_checkpoint_is_refused_before_allocating(tmp_path, data_dir, finished_run):
    """The same check guards a resume: sizes that the file's tensors do not have are refused in
    one line, and nothing in the run folder changes."""
    run_dir = tmp_path / "run"
    trained_run(run_dir, finished_run)
    for path in run_dir.glob("ckpt_*.pt"):
        state = load_checkpoint(path)
        state["model_args"] = {**state["model_args"], "n_layer": 64, "n_embd": 16384}
        save_checkpoint(path, state)
    before = {p.name: digest(p) for p in run_dir.rglob("*") if p.is_file()}
    proc = run_cli("nanogpt.train", "init_from=resume", f"run_dir={run_dir}", f"dataset.data_dir={data_dir}", check=False)
    assert "its model_args do not match its weights" in one_line_error(proc)
    assert {p.name: digest(p) for p in run_dir.rglob("*") if p.is_file()} == before
