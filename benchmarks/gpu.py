"""The GPU suite: our training and sampling against nanoGPT's own scripts on one card, in one
command that writes gpu.json and a table (gpu.md).

    bash benchmarks/gpu_run.sh --prepare                  # here: .gpu_site/ (hydra & co) and .anchors/nanoGPT
    OUT=/tmp/out bash benchmarks/gpu_run.sh               # on the GPU machine: the suite, about 8 minutes on an H200
    python benchmarks/gpu.py --smoke --out /tmp/x         # every path on the CPU at tiny sizes, about a minute
    python benchmarks/gpu.py --budget 600 --iters 2000    # more time, a longer shakespeare_char run
    python benchmarks/gpu.py --smoke --only toolchain,sampling --out /tmp/x   # chosen sections alone

Sections, in this order; each is recorded whether it succeeds, fails (the error and the end of
its output) or is skipped (the reason), and gpu.json and gpu.md are rewritten after each one, so a
killed suite leaves what it measured:

  toolchain         torch, CUDA, the card, bf16, flash attention, compiling a small function
  shakespeare_char  (a) nanoGPT's `train.py config/train_shakespeare_char.py` against
                    `python -m nanogpt.train experiment=shakespeare_char`, --iters iterations, both
                    compiled, every hyperparameter passed to both: ms/iter, tokens/s, launch to the
                    first logged iteration, val loss, MFU; ours under TORCH_LOGS=recompiles,graph_breaks
  gpt2_step         (c) a GPT-2 124M training step, batch 12 x 1024: nanoGPT's bench.py (synthetic
                    data) against our training command (GPT-2 BPE tiny Shakespeare), with and without compile
  sampling          (d) KV-cache sampling tokens/s at batch 1 and 8 with (a)'s model against the
                    naive path, and whether greedy decoding gives the same tokens both ways
  time_to_loss      (b) experiment=shakespeare_char_fast: launch to val loss <= --target
  memory            (e) every run's peak memory: the allocator's (ours; nanoGPT prints none) and
                    nvidia-smi's (the most device memory in use above idle while the command ran)

nanoGPT (--anchor) runs from a temporary copy, on shakespeare_char prepared by its own prepare.py
from our packaged tiny Shakespeare; without the folder its parts are skipped and ours still run.
Every command starts with cold compile caches and its output is kept in <out>/logs/. A section
starts only if its estimate fits in what is left of --budget (time_to_loss first shortens its time
budget), and its commands are killed when twice the estimate has passed. The exit status is 1
if anything failed.

This file is the runner (budget, commands, the order of the sections); the sections live in
gpu_toolchain.py, gpu_training.py and gpu_sampling.py, the table in gpu_report.py. Workers, the
parts measured inside a Python process, run as `gpu.py --worker NAME JSON`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from gpu_report import render
from gpu_sampling import sample_worker, sampling
from gpu_toolchain import memory, toolchain, toolchain_worker
from gpu_training import FAST_MIN_BUDGET_S, FAST_OVERHEAD_S, gpt2_step, overrides, shakespeare_char, time_to_loss
from harness import ANCHOR, ROOT, CommandFailed, Skip, child_env, git_version, writable_copy, write_text

from nanogpt.data.bundled import read_bundled
from nanogpt.metrics import read_metrics

RESULT = "GPU_SUITE_RESULT "  # a worker prints its result as JSON on a line that starts so
WORKERS: dict[str, Callable[..., dict[str, Any]]] = {"toolchain": toolchain_worker, "sample": sample_worker}
SECTIONS = ("toolchain", "shakespeare_char", "gpt2_step", "sampling", "time_to_loss", "memory")

# Guessed seconds per section on an H200 with cold compile caches, and at smoke sizes on a CPU.
# A section's commands are killed after twice its estimate (at least a minute), or GRACE_S after
# the budget runs out.
ESTIMATES = {"toolchain": 30.0, "gpt2_step": 180.0, "sampling": 45.0, "memory": 0.0}
SMOKE_ESTIMATES = {
    "toolchain": 30.0,
    "shakespeare_char": 30.0,
    "gpt2_step": 30.0,
    "sampling": 20.0,
    "time_to_loss": 30.0,
    "memory": 0.0,
}
GRACE_S = 30.0


@dataclass
class Finished:
    """A command that exited 0: its stdout lines, each with its arrival in seconds after the launch."""

    wall_s: float
    lines: list[tuple[float, str]]
    stderr: str
    gpu_memory_mb: float | None  # nvidia-smi's most memory in use above idle, None without nvidia-smi

    def first(self, pattern: re.Pattern[str]) -> float | None:
        """Seconds from the launch to the first stdout line that pattern finds."""
        return next((at for at, line in self.lines if pattern.search(line)), None)


@dataclass
class OurRun:
    """A run of our training command and the records of its metrics.jsonl."""

    done: Finished
    records: list[dict[str, Any]]
    run_dir: Path

    def events(self, event: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("event") == event]

    def peak_memory_mb(self) -> float | None:
        return next((r.get("peak_memory_mb") for r in self.events("end")), None)


class GpuMemoryWatch:
    """Polls nvidia-smi while a command runs: the most device memory in use, less what was in
    use before it started. It counts the CUDA context and the allocator's cache, which the
    allocator's own peak leaves out, and it sees processes that print no memory figure."""

    def __init__(self) -> None:
        self.idle = _gpu_memory_used_mb()
        self.peak = self.idle
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(0.5):
            used = _gpu_memory_used_mb()
            if used is not None and self.peak is not None:
                self.peak = max(self.peak, used)

    def stop(self) -> float | None:
        self._stop.set()
        self._thread.join()
        return None if self.idle is None or self.peak is None else self.peak - self.idle


def _gpu_memory_used_mb() -> float | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        return float(out.split()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill a command and what it started (compile workers): it leads its own process group."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def default_anchor() -> Path:
    return ANCHOR if ANCHOR.is_dir() else ROOT / ".anchors" / "nanoGPT"


class Suite:
    """The run's state (settings, budget, results) and what the sections use to run commands."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.smoke: bool = args.smoke
        self.device, self.dtype = ("cpu", "float32") if self.smoke else ("cuda", "bfloat16")
        self.iters: int = args.iters or (10 if self.smoke else 1000)
        self.log_interval = 1 if self.smoke else 10
        self.out: Path = args.out
        (self.out / "logs").mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="gpu-suite-"))
        self.anchor: Path = (args.anchor or default_anchor()).absolute()
        self.watch_gpu = not self.smoke and shutil.which("nvidia-smi") is not None
        self.started = time.monotonic()
        self.deadline = math.inf  # the running section's
        self.peak_flops: float | None = None  # the card's, from the toolchain section
        self.sample_run: Path | None = None  # (a)'s run of ours, whose checkpoint (d) samples from
        self.prepared: set[str] = set()
        self.failed = False
        self.results: dict[str, Any] = {
            "suite": {
                "smoke": self.smoke,
                "budget_s": args.budget,
                "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "version": git_version(),
                "anchor": str(self.anchor) if self.anchor.is_dir() else None,
                "python": sys.executable,
                "finished": False,
            }
        }
        if args.only:
            self.results["suite"]["only"] = args.only

    # ------------------------------------------------------------------ bookkeeping

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def left(self) -> float:
        return self.args.budget - self.elapsed()

    def estimate(self, name: str) -> float:
        if self.smoke:
            return SMOKE_ESTIMATES[name]
        if name == "shakespeare_char":
            return 120 + 0.06 * self.iters  # two compiled runs: start-up and compiles, then the iterations
        if name == "time_to_loss":
            return self.args.fast_budget + FAST_OVERHEAD_S
        return ESTIMATES[name]

    def section(self, name: str, title: str, body: Callable[[Suite], dict[str, Any]], needs_s: float | None = None) -> None:
        """Run one section if at least needs_s (default: its estimate) of the budget is left, and record it."""
        estimate, left = self.estimate(name), self.left()
        print(f"[{self.elapsed():6.1f} s] {name}: {title} (estimate {estimate:.0f} s, budget left {left:.0f} s)", flush=True)
        needs = estimate if needs_s is None else needs_s
        if left < needs:
            self.results[name] = {"status": "skipped", "reason": f"{left:.0f} s of the budget left, the section needs about {needs:.0f} s"}
        else:
            self.deadline = time.monotonic() + min(left + GRACE_S, max(2 * estimate, 60.0))
            self.results[name] = self.guarded(lambda: body(self))
        self.write()

    def guarded(self, body: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """body()'s result with status ok, or the failure or skip it raised, and its duration."""
        started = time.monotonic()
        try:
            result = {"status": "ok", **body()}
        except Skip as skip:
            result = {"status": "skipped", "reason": str(skip)}
        except CommandFailed as exc:
            result = {"status": "failed", "error": str(exc), "tail": exc.tail}
        except Exception as exc:  # a failed part is recorded and the suite goes on
            result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "tail": traceback.format_exc()[-3000:]}
        if result["status"] == "failed":
            self.failed = True
            print(f"           failed: {result['error']}", flush=True)
        elif result["status"] == "skipped":
            print(f"           skipped: {result['reason']}", flush=True)
        result["seconds"] = round(time.monotonic() - started, 1)
        return result

    def write(self) -> None:
        """gpu.json and gpu.md as they stand (each replaced whole, so a reader never sees half a file)."""
        self.results["suite"]["elapsed_s"] = round(self.elapsed(), 1)
        write_text(self.out / "gpu.json", json.dumps(self.results, indent=1) + "\n")
        write_text(self.out / "gpu.md", render(self.results))

    # ------------------------------------------------------------------ commands

    def run(self, label: str, command: list[str], cwd: Path = ROOT, env: dict[str, str] | None = None) -> Finished:
        """Run a command to its end or to the section's deadline, its stdout timed line by line;
        its output goes to <out>/logs/<label>.out and .err. Raises CommandFailed unless it exits 0."""
        timeout = self.deadline - time.monotonic()
        if timeout < 1:
            raise CommandFailed(f"{label}: the section's time is up", "")
        logs = self.out / "logs"
        # Each command compiles from cold caches: a kernel that nanoGPT compiled must not make our
        # start-up look faster, or the other way round.
        cache = self.work / "compile-cache" / label
        child = child_env(
            {
                "PYTHONUNBUFFERED": "1",
                "PYTHONIOENCODING": "utf-8",
                "TORCHINDUCTOR_CACHE_DIR": str(cache),
                "TRITON_CACHE_DIR": str(cache / "triton"),
                **(env or {}),
            }
        )
        if self.smoke:
            child["OMP_NUM_THREADS"] = "1"  # tiny sizes: threads cost more than they give, and tests may run side by side
        expired = threading.Event()
        lines: list[tuple[float, str]] = []
        watch = GpuMemoryWatch() if self.watch_gpu else None
        started = time.monotonic()
        with open(logs / f"{label}.out", "w", encoding="utf-8") as out, open(logs / f"{label}.err", "w") as err:
            proc = subprocess.Popen(
                command,
                cwd=cwd,
                env=child,
                stdout=subprocess.PIPE,
                stderr=err,
                encoding="utf-8",
                errors="replace",
                start_new_session=True,
            )
            timer = threading.Timer(timeout, lambda: (expired.set(), _kill_group(proc)))
            timer.start()
            try:
                assert proc.stdout is not None
                for line in proc.stdout:
                    at = time.monotonic() - started
                    lines.append((at, line.rstrip("\n")))
                    out.write(f"{at:8.2f}  {line}")
                proc.wait()
            finally:
                timer.cancel()
                if proc.poll() is None:  # interrupted: take the command down with us
                    _kill_group(proc)
                    proc.wait()
                memory = watch.stop() if watch is not None else None
        wall = time.monotonic() - started
        stderr = (logs / f"{label}.err").read_text(encoding="utf-8", errors="replace")
        print(f"           {label}: exit {proc.returncode} after {wall:.1f} s", flush=True)
        if expired.is_set() or proc.returncode != 0:
            tail = "\n".join(["stdout:", *(line for _, line in lines[-10:]), "stderr:", *stderr.splitlines()[-40:]])
            if expired.is_set():
                raise CommandFailed(f"{label}: killed after {timeout:.0f} s (the section's share of the budget)", tail)
            raise CommandFailed(f"{label}: exit status {proc.returncode}", tail)
        return Finished(wall_s=wall, lines=lines, stderr=stderr, gpu_memory_mb=memory)

    def worker(self, label: str, name: str, **kwargs: Any) -> dict[str, Any]:
        """Run one of the WORKERS in its own process (a hang or crash stays there)."""
        done = self.run(label, [sys.executable, str(Path(__file__).resolve()), "--worker", name, json.dumps(kwargs)])
        line = next((line for _, line in reversed(done.lines) if line.startswith(RESULT)), None)
        if line is None:
            raise CommandFailed(f"{label}: the worker printed no result", done.stderr[-2000:])
        return json.loads(line[len(RESULT) :])

    def system(self, compiled: bool) -> dict[str, Any]:
        """Our system.* overrides; compile stays off on the CPU (smoke), where it takes longer than the run."""
        return {"system.device": self.device, "system.dtype": self.dtype, "system.compile": compiled and not self.smoke}

    def prepare(self, dataset: str) -> None:
        """Prepare one of our datasets (from the packaged corpus) before a timed run needs it."""
        if dataset not in self.prepared:
            self.run(f"prepare-{dataset}", [sys.executable, "-m", "nanogpt.prepare", f"dataset={dataset}"])
            self.prepared.add(dataset)

    def train(self, label: str, settings: dict[str, Any], env: dict[str, str] | None = None) -> OurRun:
        run_dir = self.work / label
        command = [sys.executable, "-m", "nanogpt.train", *overrides(settings), f"hydra.run.dir={run_dir}"]
        done = self.run(label, command, env=env)
        return OurRun(done, read_metrics(run_dir / "metrics.jsonl"), run_dir)

    def anchor_copy(self) -> Path:
        """A writable copy of nanoGPT (its folder is read-only where it is laid out)."""
        if not self.anchor.is_dir():
            raise Skip(
                f"no nanoGPT folder at {self.anchor}: pass --anchor DIR "
                f"(`bash benchmarks/gpu_run.sh --prepare` copies ../shared/anchors/nanoGPT into .anchors/)"
            )
        copy = self.work / "nanoGPT"
        return copy if copy.exists() else writable_copy(self.anchor, copy)

    def anchor_data(self) -> Path:
        """The nanoGPT copy with shakespeare_char prepared by its own prepare.py, which downloads
        input.txt only when the file is missing: we write our packaged copy (the same text) first."""
        copy = self.anchor_copy()
        data = copy / "data" / "shakespeare_char"
        if not (data / "train.bin").exists():
            (data / "input.txt").write_bytes(read_bundled("tinyshakespeare.txt"))
            self.run("nanogpt-prepare", [sys.executable, "prepare.py"], cwd=data)
        return copy


# ---------------------------------------------------------------------- main


def run_sections(suite: Suite, only: list[str]) -> None:
    """The sections in order (those of --only, where given); no CUDA GPU stops the suite after the toolchain."""
    fast_needs = None if suite.smoke else FAST_MIN_BUDGET_S + FAST_OVERHEAD_S  # time_to_loss shortens its run to fit
    plan: list[tuple[str, str, Callable[[Suite], dict[str, Any]], float | None]] = [
        ("toolchain", "torch, CUDA, the card, compiling a small function", toolchain, None),
        ("shakespeare_char", f"(a) nanoGPT vs ours, {suite.iters} iterations", shakespeare_char, None),
        ("gpt2_step", "(c) GPT-2 124M training step, compiled and not", gpt2_step, None),
        ("sampling", "(d) KV-cache sampling at batch 1 and 8", sampling, None),
        ("time_to_loss", f"(b) shakespeare_char_fast to val loss {suite.args.target}", time_to_loss, fast_needs),
        ("memory", "(e) peak memory of every run", memory, -math.inf),  # runs no command
    ]
    for name, title, body, needs_s in plan:
        if only and name not in only:
            suite.results[name] = {"status": "skipped", "reason": "not in --only"}
            continue
        suite.section(name, title, body, needs_s)
        if name == "toolchain" and not suite.smoke and not suite.results["toolchain"].get("cuda_available"):
            suite.failed = True
            suite.results["suite"]["aborted"] = "no CUDA GPU is visible to torch (run with --smoke on a CPU)"
            print(suite.results["suite"]["aborted"], flush=True)
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="folder for gpu.json, gpu.md and logs/")
    parser.add_argument("--smoke", action="store_true", help="every section on the CPU at tiny sizes, no compile")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for the whole suite (default 480)")
    parser.add_argument("--anchor", type=Path, default=None, help="nanoGPT's folder (default ../shared/anchors/nanoGPT, else .anchors/nanoGPT)")
    parser.add_argument("--iters", type=int, default=None, help="shakespeare_char iterations (default 1000; smoke 10)")
    parser.add_argument("--fast-budget", type=float, default=150.0, help="time_budget_s of the shakespeare_char_fast run (default 150)")
    parser.add_argument("--target", type=float, default=1.47, help="the val loss time_to_loss waits for (default 1.47)")
    parser.add_argument("--only", default=None, metavar="A,B", help=f"run these sections alone, in the suite's order ({', '.join(SECTIONS)})")
    parser.add_argument("--worker", nargs=2, metavar=("NAME", "JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        name, payload = args.worker
        print(RESULT + json.dumps(WORKERS[name](**json.loads(payload))), flush=True)
        return
    if args.only is not None:
        args.only = [name.strip() for name in args.only.split(",") if name.strip()]
        unknown = [name for name in args.only if name not in SECTIONS]
        if unknown or not args.only:
            problem = f"unknown section{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}" if unknown else "no section named"
            parser.exit(2, f"{parser.prog}: error: --only: {problem}; the sections are {', '.join(SECTIONS)}\n")

    # SIGTERM unwinds like Ctrl-C, so the running command's process group is killed on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    suite = Suite(args)
    mode = "smoke: CPU, tiny sizes" if suite.smoke else f"{suite.device}, {suite.dtype}"
    print(f"GPU suite ({mode}), budget {args.budget:.0f} s, nanoGPT from {suite.anchor}, results in {args.out}", flush=True)
    try:
        run_sections(suite, args.only or [])
        suite.results["suite"]["finished"] = True
    finally:
        suite.write()
        shutil.rmtree(suite.work, ignore_errors=True)
    print()
    print(render(suite.results))
    print(f"wrote {args.out / 'gpu.json'} and {args.out / 'gpu.md'}")
    sys.exit(1 if suite.failed else 0)


if __name__ == "__main__":
    main()
