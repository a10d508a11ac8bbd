"""The package as a user installs it: a wheel built from the project, installed into a fresh
virtual environment, trains and samples from an empty directory with no network."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY

pytestmark = pytest.mark.slow

# The network is cut where Linux lets us: a new network namespace has only a loopback, and it is
# down. Elsewhere every HTTP client of Python is sent to a proxy that refuses connections.
UNSHARE = ["unshare", "--net", "--map-root-user"]
CAN_UNSHARE = shutil.which("unshare") is not None and subprocess.run([*UNSHARE, "true"], capture_output=True).returncode == 0
DEAD_PROXY = "http://127.0.0.1:9"


def _clean_env(home: Path) -> dict[str, str]:
    """The environment of a new user: no PYTHONPATH into the checkout, no caches of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "TIKTOKEN", "HF_", "NANOGPT", "PYTEST"))}
    env.update(HOME=str(home), OMP_NUM_THREADS="1", WANDB_MODE="offline", HYDRA_FULL_ERROR="0")
    for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env[proxy] = DEAD_PROXY
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the project's files (the checkout is left untouched)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("nanogpt", "conf"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("nanogpt-*.whl")
    return path


def test_the_wheel_holds_the_configs_and_the_offline_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"nanogpt/conf/{p.relative_to(ROOT / 'conf')}" for p in (ROOT / "conf").rglob("*.yaml")}
    assert configs and configs <= names
    assert {"nanogpt/assets/tinyshakespeare.txt.gz", "nanogpt/assets/r50k_base.tiktoken.gz", "nanogpt/assets/README.md"} <= names
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    for command in ("nanogpt-train", "nanogpt-sample", "nanogpt-prepare", "nanogpt-export", "nanogpt-report"):
        assert f"{command} = " in entry_points


def test_installed_wheel_trains_and_samples_from_an_empty_directory_offline(wheel, tmp_path):
    venv = tmp_path / "venv"
    # The dependencies (torch, hydra, ...) come from this interpreter's site-packages; nanogpt
    # itself only from the wheel, which the venv's own site-packages puts first.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    bin_dir = venv / "bin"
    subprocess.run([bin_dir / "python", "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel)], check=True, capture_output=True)
    home = tmp_path / "home"
    work = tmp_path / "empty"
    home.mkdir()
    work.mkdir()
    env = _clean_env(home)

    def run(*command: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([*(UNSHARE if CAN_UNSHARE else []), *map(str, command)], cwd=work, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{command} exited {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        return proc

    where = run(bin_dir / "python", "-c", "import nanogpt, nanogpt.config as c; print(nanogpt.__file__); print(c.CONF_DIR)").stdout.split()
    assert all(Path(p).is_relative_to(venv) for p in where), where

    run(bin_dir / "nanogpt-train", *TINY, "max_iters=4", "eval_interval=2", "eval_at_start=false", "hydra.run.dir=outputs/run")
    run_dir = work / "outputs" / "run"
    assert (run_dir / "ckpt_last.pt").is_file() and (run_dir / "metrics.jsonl").is_file()
    assert (work / "data" / "shakespeare_char" / "meta.json").is_file()  # prepared from the packaged corpus

    sample = run(bin_dir / "nanogpt-sample", f"run_dir={run_dir}", "prompt=ROMEO:", "num_samples=1", "max_new_tokens=20", "system.device=cpu")
    assert sample.stdout.startswith("ROMEO:") and len(sample.stdout) >= len("ROMEO:") + 20
    assert sorted(p.name for p in work.iterdir()) == ["data", "outputs"]  # sampling wrote nothing
