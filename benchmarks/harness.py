"""What every script in benchmarks/ shares, written once: this checkout's nanogpt on sys.path, a
description of the machine, timing a function, running a command, writing results as JSON, and
markdown tables.

    from harness import RESULTS, append_json, machine, markdown_table, time_ms

Results record the machine and the command line that produced them, so a figure can be traced
back and rerun. torch is imported only where it is needed: some scripts only time other processes.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SHARED = ROOT.parent / "shared"  # what is laid out beside the checkout: nanoGPT, tiny Shakespeare
ANCHOR = SHARED / "anchors" / "nanoGPT"
SHARED_CORPUS = SHARED / "data" / "tinyshakespeare" / "input.txt"

# A benchmark measures the code beside it, not whichever nanogpt happens to be installed.
if sys.path[:1] != [str(ROOT)]:
    sys.path.insert(0, str(ROOT))

# The CPU flags that decide which kernels torch runs (bfloat16 matmuls need avx512_bf16 or AMX).
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


# ---------------------------------------------------------------------- the machine


def machine_info() -> dict[str, Any]:
    """The machine as fields: CPU model, ISA flags, cores, torch and its threads, the GPU (or None)."""
    import torch

    from nanogpt.system import cpu_flags, cpu_model_name

    flags = cpu_flags()
    return {
        "cpu": cpu_model_name(),
        "isa": [flag for flag in ISA_FLAGS if flag in flags],
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def machine() -> str:
    """The machine on one line: "AMD EPYC 9R14 (avx2 avx512f avx512_bf16), 2 cpus, 2 torch threads[, the GPU]"."""
    m = machine_info()
    text = f"{m['cpu']} ({' '.join(m['isa']) or 'no AVX2'}), {m['cpus']} cpus, {m['torch_threads']} torch threads"
    return text + (f", {m['gpu']}" if m["gpu"] else "")


def git_version() -> str | None:
    """The commit measured, with -dirty for uncommitted changes (None outside a git checkout)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None  # a copy without .git (the GPU machine's)
    return head + ("-dirty" if dirty else "")


# ---------------------------------------------------------------------- timing


def resolve_device(name: str) -> str:
    """A --device: "auto" is the training command's choice (a CUDA GPU, then Apple's, then the CPU)."""
    from nanogpt.system import resolve_system

    return resolve_system(name, "float32", "false").device


def synchronize(device: str | None) -> None:
    """Wait for the work queued on the device, so that a timer stops when it is done."""
    if device is None or device == "cpu":
        return
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    elif device == "mps":
        torch.mps.synchronize()


@dataclass
class Timing:
    """Milliseconds of each timed call."""

    ms: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.ms)

    @property
    def min(self) -> float:
        return min(self.ms)

    @property
    def max(self) -> float:
        return max(self.ms)


def time_ms(fn: Callable[[], Any], repeats: int, warmup: int = 1, device: str | None = None) -> Timing:
    """fn timed `repeats` times after `warmup` untimed calls (first-call allocations and kernels),
    the device synchronized around each call, so that queued work is neither counted twice nor missed."""
    for _ in range(warmup):
        fn()
    ms = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        ms.append((time.perf_counter() - start) * 1000)
    return Timing(ms)


# ---------------------------------------------------------------------- commands


class Skip(Exception):
    """A part that cannot run here; the message says why."""


class CommandFailed(Exception):
    """A command that failed or ran out of time; tail: the end of its output."""

    def __init__(self, message: str, tail: str):
        super().__init__(message)
        self.tail = tail


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment with the checkout first on PYTHONPATH: a command run from another folder
    (nanoGPT's copy, a run folder) still imports this checkout's nanogpt."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **(extra or {})}


def run_command(command: list[str], cwd: Path = ROOT, env: dict[str, str] | None = None, log: Path | None = None) -> tuple[float, str]:
    """Run a command to its end: its wall time in seconds and its stdout. With log, stdout and
    stderr go to that file as they come (a long run can be watched) and the output returned is
    both. Raises CommandFailed with the end of its output unless it exits 0."""
    started = time.perf_counter()
    if log is None:
        proc = subprocess.run(command, cwd=cwd, env=child_env(env), capture_output=True, text=True)
        wall = time.perf_counter() - started
        output, tail = proc.stdout, f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    else:
        with log.open("w") as f:
            f.write(f"$ (cd {cwd} && {shlex.join(command)})\n")
            f.flush()
            proc = subprocess.run(command, cwd=cwd, env=child_env(env), stdout=f, stderr=subprocess.STDOUT)
        wall = time.perf_counter() - started
        output = log.read_text().split("\n", 1)[1]
        tail = f"{output[-3000:]}\n(log: {log})"
    if proc.returncode != 0:
        raise CommandFailed(f"{shlex.join(command[:4])} ... failed (exit {proc.returncode}):\n{tail}", tail)
    return wall, output


def run_training(
    overrides: list[str], run_dir: Path, cwd: Path = ROOT, env: dict[str, str] | None = None, log: Path | None = None
) -> tuple[list[dict], float]:
    """`python -m nanogpt.train <overrides>` into run_dir: its metrics.jsonl records and the
    command's wall time, launch to exit."""
    from nanogpt.metrics import read_metrics

    wall, _ = run_command([sys.executable, "-m", "nanogpt.train", *overrides, f"hydra.run.dir={run_dir}"], cwd, env, log)
    return read_metrics(run_dir / "metrics.jsonl"), wall


def writable_copy(source: Path, dest: Path) -> Path:
    """A copy of a folder that can be written to (nanoGPT's is read-only where it is laid out)."""
    shutil.copytree(source, dest)
    for path in [dest, *dest.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)
    return dest


# ---------------------------------------------------------------------- results


def command_line() -> str:
    return "python " + shlex.join(sys.argv)


def stamped(record: dict[str, Any]) -> dict[str, Any]:
    """The record with the machine and the command line that produced it, unless it says them already."""
    return {**record, "machine": record.get("machine") or machine(), "command": record.get("command") or command_line()}


def write_text(path: Path, text: str) -> None:
    """Replace a file whole (a temporary file renamed over it), so a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_json(path: Path, result: dict[str, Any]) -> None:
    """A script's result, stamped, as the whole file."""
    write_text(path, json.dumps(stamped(result), indent=1, default=str) + "\n")


def append_json(path: Path, record: dict[str, Any]) -> None:
    """A run's record, stamped, added to the list that the file holds (the runs before it are kept)."""
    existing = json.loads(path.read_text()) if path.exists() else []
    write_text(path, json.dumps([*existing, stamped(record)], indent=1, default=str) + "\n")


# ---------------------------------------------------------------------- tables


def markdown_row(cells: Iterable[Any]) -> str:
    return "|" + "".join(f" {cell} |" if cell != "" else " |" for cell in map(str, cells))


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str = "") -> str:
    """A markdown table; align: a letter per column, l or r (default: the first left, the rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    lines = [markdown_row(header), "|" + "".join(" ---: |" if a == "r" else " --- |" for a in align)]
    return "\n".join(lines + [markdown_row(row) for row in rows])
