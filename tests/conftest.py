"""Shared fixtures: the real tiny Shakespeare corpus, prepared once per session, and a helper
that runs the real command-line entry points in a subprocess."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import torch

from nanogpt.config import register_configs
from nanogpt.data import TINY_SHAKESPEARE_URL, prepare

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TINY_SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"

# Offline everywhere: GPT-2's BPE from ../shared's tiktoken cache where there is one (elsewhere
# tiktoken's own cache, filled by a download), and no Hugging Face hub, so a test that would reach
# the network fails at once instead of waiting on timeouts.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
if (SHARED / "tiktoken_cache").is_dir():
    OFFLINE_ENV["TIKTOKEN_CACHE_DIR"] = str(SHARED / "tiktoken_cache")
for _key, _value in OFFLINE_ENV.items():
    os.environ.setdefault(_key, _value)


def _gpt2_bpe_problem() -> str | None:
    try:
        from nanogpt.data import gpt2_tokenizer

        gpt2_tokenizer()
    except Exception as exc:  # no cache and no network: the GPT-2 tests are skipped, not failed
        return f"GPT-2's BPE is not in ../shared/tiktoken_cache and cannot be downloaded ({type(exc).__name__})"
    return None


GPT2_BPE_PROBLEM = _gpt2_bpe_problem()
# For modules whose tests tokenize with GPT-2's BPE.
requires_gpt2_bpe = pytest.mark.skipif(GPT2_BPE_PROBLEM is not None, reason=GPT2_BPE_PROBLEM or "")

register_configs()


@pytest.fixture(scope="session")
def shakespeare_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The exact 1,115,394-character tiny Shakespeare: ../shared's copy (CI), else a download,
    else the tests that need it are skipped with the reason."""
    shared = SHARED / "data" / "tinyshakespeare" / "input.txt"
    if shared.is_file():
        return shared
    target = tmp_path_factory.mktemp("corpus") / "input.txt"
    try:
        with urllib.request.urlopen(TINY_SHAKESPEARE_URL, timeout=20) as response:
            target.write_bytes(response.read())
    except OSError as exc:
        pytest.skip(f"tiny Shakespeare is not in ../shared and cannot be downloaded ({exc})")
    return target


@pytest.fixture(scope="session")
def bpe_data_dir(tmp_path_factory: pytest.TempPathFactory, shakespeare_path: Path) -> Path:
    """A data folder with shakespeare (GPT-2 BPE) prepared from the real corpus."""
    folder = tmp_path_factory.mktemp("bpe_data")
    prepare("shakespeare", folder, str(shakespeare_path), 0.1)
    return folder


def make_gpt2_folder(folder: Path, seed: int = 0, **config: Any) -> Path:
    """A small random GPT2LMHeadModel saved by transformers (config.json + model.safetensors)."""
    from transformers import GPT2Config, GPT2LMHeadModel  # slow to import: only where needed

    torch.manual_seed(seed)
    settings = dict(vocab_size=50257, n_positions=64, n_embd=32, n_layer=2, n_head=2)
    settings.update(config)
    GPT2LMHeadModel(GPT2Config(**settings)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def gpt2_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random GPT-2 with GPT-2's vocabulary, in the Hugging Face format."""
    return make_gpt2_folder(tmp_path_factory.mktemp("hf") / "tiny-gpt2")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory, shakespeare_path: Path) -> Path:
    """A data folder with shakespeare_char prepared from the real corpus."""
    folder = tmp_path_factory.mktemp("data")
    prepare("shakespeare_char", folder, str(shakespeare_path), 0.1)
    return folder


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ, **(extra or {}))
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    for key, value in OFFLINE_ENV.items():
        env.setdefault(key, value)
    env["WANDB_MODE"] = env.get("WANDB_MODE", "offline")
    env["HYDRA_FULL_ERROR"] = "0"
    return env


def run_cli(
    module: str, *overrides: str, cwd: Path | None = None, timeout: float = 600, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run `python -m <module> <overrides>` (with `env` added to the environment) and return the
    finished process (text output)."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *overrides],
        cwd=cwd or ROOT,
        env=cli_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} {' '.join(overrides)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


# A model small enough that a few dozen iterations take a few seconds on two cores.
TINY = (
    "model.n_layer=2",
    "model.n_head=2",
    "model.n_embd=32",
    "dataset.block_size=32",
    "dataset.batch_size=8",
    "eval_iters=4",
    "system.device=cpu",
    "system.dtype=float32",
)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The single `error: ...` line of a command refused with exit status 2 (and no traceback)."""
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def state_digest(path: Path) -> str:
    """Hash of a checkpoint's model weights and whole optimizer state (bitwise comparisons)."""
    from nanogpt.checkpoint import load_checkpoint

    state = load_checkpoint(path)
    digest = hashlib.sha256()
    for name, tensor in sorted(state["model"].items()):
        digest.update(name.encode() + tensor.numpy().tobytes())
    for index, per_param in sorted(state["optimizer"]["state"].items()):
        for key in sorted(per_param):
            digest.update(f"{index}.{key}".encode() + per_param[key].numpy().tobytes())
    return digest.hexdigest()
