"""Shared fixtures: the real tiny Shakespeare corpus, prepared once per session, and a helper
that runs the real command-line entry points in a subprocess. Everything here works offline and
without ../shared: the corpus and GPT-2's BPE ship inside the package."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# One intra-op thread in each test process and in every command the tests launch (cli_env copies
# os.environ; torchrun and SLURM jobs inherit it): the tiny models gain nothing from a second
# thread, and pytest-xdist runs two test processes side by side (pyproject's addopts). Set before
# torch is imported; a test that wants more threads sets them in its command's env.
for _key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_key] = "1"

import torch  # noqa: E402

torch.set_num_threads(1)

from nanogpt.cli.launch import register_configs  # noqa: E402
from nanogpt.data import prepare  # noqa: E402
from nanogpt.data.bundled import read_bundled  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TINY_SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"

# No Hugging Face hub, so a test that would reach the network fails at once instead of waiting on
# timeouts.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
for _key, _value in OFFLINE_ENV.items():
    os.environ.setdefault(_key, _value)

register_configs()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With NANOGPT_FORBID_SKIPS=1 (set by .ci/run, which has every service), a skipped test
    fails the run: CI must prove everything a user's clone proves, and more. Under pytest-xdist
    the controller decides: the workers' skips reach its terminal reporter, and a worker's own
    exit status is not the run's."""
    if hasattr(session.config, "workerinput"):  # a pytest-xdist worker
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if os.environ.get("NANOGPT_FORBID_SKIPS") == "1" and skipped and session.exitstatus == 0:
        reporter.ensure_newline()
        reporter.write_line(f"NANOGPT_FORBID_SKIPS=1: {len(skipped)} test(s) were skipped; CI allows none", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """pytest-xdist (--dist loadgroup in pyproject's addopts) gives each xdist_group to one worker.
    The tests that use a module-scoped fixture (a trained run, a prepared dataset, a built wheel)
    form their module's group, so that the fixture is built once rather than once per worker;
    the module's other tests, and a test marked with a group of its own, are left as they are."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None or item.get_closest_marker("xdist_group") is not None:
            continue
        if any(fixture.scope == "module" for fixtures in info.name2fixturedefs.values() for fixture in fixtures):
            item.add_marker(pytest.mark.xdist_group(item.path.stem))


@pytest.fixture(scope="session", autouse=True)
def dtype_probe_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """One dtype=auto measurement cache for the session's runs, not the user's ~/.cache."""
    os.environ["NANOGPT_CACHE_DIR"] = str(tmp_path_factory.mktemp("nanogpt-cache"))


@pytest.fixture(scope="session")
def shakespeare_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The exact 1,115,394-character tiny Shakespeare: ../shared's copy where there is one (CI),
    else the package's own."""
    shared = SHARED / "data" / "tinyshakespeare" / "input.txt"
    if shared.is_file():
        return shared
    target = tmp_path_factory.mktemp("corpus") / "input.txt"
    target.write_bytes(read_bundled("tinyshakespeare.txt"))
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


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of its own: a disk that can really fill up or turn read-only."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI and the dev container run as root)")
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (no CAP_SYS_ADMIN?): {proc.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


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


def train_here(run_dir: Path, *overrides: str) -> float:
    """nanogpt.training.train() on the composed config, in this process: a run folder with checkpoints
    and metrics.jsonl (no .hydra/ or train.log, which are Hydra's part of the command), for tests
    whose claim is not the command line. Returns the best val loss."""
    from nanogpt.training import train
    from tests.test_config import compose_train

    run_dir.mkdir(parents=True, exist_ok=True)
    return train(compose_train(*overrides), run_dir, list(overrides))


# The run of finished_run: a checkpoint at iterations 4 and 8.
FINISHED = (*TINY, "max_iters=8", "eval_interval=4", "log_interval=1", "optimizer.warmup_iters=2")


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A finished tiny run (FINISHED) made once by the real command, for the tests that need a run
    folder to resume, refuse or damage: they copy it (copy_run) instead of training their own."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    run_cli("nanogpt.train", *FINISHED, f"dataset.data_dir={data_dir}", f"hydra.run.dir={run_dir}")
    return run_dir


def copy_run(run_dir: Path, to: Path) -> Path:
    """A copy of a run folder (file times kept), to use as a run of its own."""
    shutil.copytree(run_dir, to)
    return to
