"""Faults of the machine rather than of the input, each met for real. Here: a checkpoint whose
model_args describe a model far larger than its weights is refused in one line before anything
is allocated."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nanogpt.checkpoint import CKPT_FORMAT, check_model_args, load_checkpoint, save_checkpoint
from nanogpt.errors import CheckpointError
from nanogpt.model import GPT, GPTConfig
from tests.conftest import ROOT, cli_env, one_line_error


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
        cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=120,
    )
    assert one_line_error(proc) == (
        f"error: {run_dir / 'ckpt_best.pt'}: its model_args do not match its weights "
        "(vocab_size=65, n_embd=16384, but the token embedding is 65x32); refused before building the model"
    )
    peak_kib = int(proc.stdout.split()[-1])
    assert peak_kib < 1_000_000, f"peak memory {peak_kib / 1e6:.1f} GB"
