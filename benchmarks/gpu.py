"""The GPU suite: our training and sampling against nanoGPT's own scripts on one card, in one
command that writes gpu.json and a table (gpu.md).

    bash benchmarks/gpu_run.sh --prepare                  # here: .gpu_site/ (hydra & co) and .anchors/nanoGPT
    OUT=/tmp/out bash benchmarks/gpu_run.sh               # on the GPU machine: the suite, about 8 minutes on an H200
    python benchmarks/gpu.py --smoke --out /tmp/x         # every path on the CPU at tiny sizes, about a minute
    python benchmarks/gpu.py --budget 600 --iters 2000    # more time, a longer shakespeare_char run

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
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import signal
import stat
import statistics
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

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]  # this checkout's nanogpt, and the sibling benchmarks

from nanogpt.bundled import read_bundled  # noqa: E402
from nanogpt.metrics import read_metrics  # noqa: E402

A100_PEAK_FLOPS = 312e12  # what nanoGPT's estimate_mfu divides by: an A100's bf16 dense peak
RESULT = "GPU_SUITE_RESULT "  # a worker prints its result as JSON on a line that starts so

# nanoGPT's config/train_shakespeare_char.py, with its train.py defaults for the keys the config
# leaves out. Every key is passed to both commands, so both train the same model the same way.
SHAKESPEARE_CHAR: dict[str, Any] = {
    "batch_size": 64, "block_size": 256, "n_layer": 6, "n_head": 6, "n_embd": 384, "dropout": 0.2, "bias": False,
    "learning_rate": 1e-3, "min_lr": 1e-4, "warmup_iters": 100, "lr_decay_iters": 5000, "weight_decay": 0.1,
    "beta1": 0.9, "beta2": 0.99, "grad_clip": 1.0, "eval_iters": 200,
}
OUR_KEYS = {
    "batch_size": "dataset.batch_size", "block_size": "dataset.block_size", "n_layer": "model.n_layer",
    "n_head": "model.n_head", "n_embd": "model.n_embd", "dropout": "model.dropout", "bias": "model.bias",
    "learning_rate": "optimizer.learning_rate", "min_lr": "optimizer.min_lr", "warmup_iters": "optimizer.warmup_iters",
    "lr_decay_iters": "optimizer.lr_decay_iters", "weight_decay": "optimizer.weight_decay", "beta1": "optimizer.beta1",
    "beta2": "optimizer.beta2", "grad_clip": "optimizer.grad_clip", "eval_iters": "eval_iters",
}
SHAKESPEARE_CHAR_VOCAB = 65
TINY = {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32, "batch_size": 4, "eval_iters": 2}
TINY_OURS = {OUR_KEYS[key]: value for key, value in TINY.items()}

# nanoGPT's bench.py model: GPT-2 124M without biases, exact GELU, no dropout, batch 12 x 1024
# (GPT2_SHAPE), on GPT-2 BPE tiny Shakespeare (1024-token windows fit).
GPT2_STEP: dict[str, Any] = {
    "model": "gpt2", "dataset": "shakespeare", "model.bias": False, "model.gelu_approximate": "none", "model.dropout": 0.0,
}
GPT2_SHAPE = {"n_layer": 12, "n_head": 12, "n_embd": 768, "block_size": 1024, "batch_size": 12}
GPT2_VOCAB = 50304  # GPT-2's 50,257 tokens padded, by bench.py and by us
BENCH_BURN_IN, BENCH_STEPS = 10, 20  # bench.py times 20 steps after 10 (fixed in its code)

FAST_EVAL_INTERVAL = 100  # the resolution of the time to the target (the preset evaluates every 250)
FAST_OVERHEAD_S = 35.0  # start-up, final evaluation, checkpoint and exit around the time budget
FAST_MIN_BUDGET_S = 45.0  # a shorter budget mostly compiles: not worth running

# Guessed seconds per section on an H200 with cold compile caches, and at smoke sizes on a CPU.
# A section's commands are killed after twice its estimate (at least a minute), or GRACE_S after
# the budget runs out.
ESTIMATES = {"toolchain": 30.0, "gpt2_step": 180.0, "sampling": 45.0, "memory": 0.0}
SMOKE_ESTIMATES = {
    "toolchain": 30.0, "shakespeare_char": 30.0, "gpt2_step": 30.0, "sampling": 20.0, "time_to_loss": 30.0, "memory": 0.0,
}
GRACE_S = 30.0

NANO_ITER = re.compile(r"^iter (\d+): loss [\d.]+, time ([\d.]+)ms, mfu (-?[\d.]+)%")
NANO_EVAL = re.compile(r"^step (\d+): train loss ([\d.]+), val loss ([\d.]+)")
NANO_BENCH = re.compile(r"^time per iteration: ([\d.]+)ms, MFU: (-?[\d.]+)%")
NANO_BENCH_STEP = re.compile(r"^\d+/\d+ loss: ")
OURS_ITER = re.compile(r"\biter \d+/\d+ \|")
OURS_EVAL = re.compile(r"\beval iter (\d+): train loss")


class Skip(Exception):
    """A part that cannot run here; the message says why."""


class CommandError(Exception):
    """A command that failed or ran out of time, with the end of its output."""

    def __init__(self, message: str, tail: str):
        super().__init__(message)
        self.tail = tail


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
            capture_output=True, text=True, timeout=10,
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


def hydra_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def overrides(settings: dict[str, Any]) -> list[str]:
    return [f"{key}={hydra_value(value)}" for key, value in settings.items()]


def gpt_flops_per_iter(n_layer: int, n_embd: int, block_size: int, vocab_size: int, batch_size: int) -> float:
    """Training FLOPs of one iteration of a bias-free GPT-2-style model, by the formula that both
    nanoGPT's estimate_mfu and our metrics use (PaLM, appendix B): 6 per parameter (position
    embeddings left out) per token, plus the attention products."""
    params = vocab_size * n_embd + n_layer * (12 * n_embd**2 + 2 * n_embd) + n_embd
    return (6 * params + 12 * n_layer * n_embd * block_size) * block_size * batch_size


def steady(samples: list[tuple[int, float]], iters: int) -> float:
    """The median of per-iteration samples (iter, value) from the last 80% of a run: the first
    20% hold compilation and warm-up."""
    late = [value for it, value in samples if it >= 0.2 * iters]
    return statistics.median(late or [value for _, value in samples])


def git_version() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None  # a copy without .git (the GPU machine's)
    return head + ("-dirty" if dirty else "")


def default_anchor() -> Path:
    shared = ROOT.parent / "shared" / "anchors" / "nanoGPT"
    return shared if shared.is_dir() else ROOT / ".anchors" / "nanoGPT"


class Suite:
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
                "smoke": self.smoke, "budget_s": args.budget, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "version": git_version(), "anchor": str(self.anchor) if self.anchor.is_dir() else None,
                "python": sys.executable, "finished": False,
            }
        }

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

    def section(self, name: str, title: str, body: Callable[[], dict[str, Any]], needs_s: float | None = None) -> None:
        """Run one section if at least needs_s (default: its estimate) of the budget is left, and record it."""
        estimate, left = self.estimate(name), self.left()
        print(f"[{self.elapsed():6.1f} s] {name}: {title} (estimate {estimate:.0f} s, budget left {left:.0f} s)", flush=True)
        needs = estimate if needs_s is None else needs_s
        if left < needs:
            self.results[name] = {"status": "skipped", "reason": f"{left:.0f} s of the budget left, the section needs about {needs:.0f} s"}
        else:
            self.deadline = time.monotonic() + min(left + GRACE_S, max(2 * estimate, 60.0))
            self.results[name] = self.guarded(body)
        self.write()

    def guarded(self, body: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """body()'s result with status ok, or the failure or skip it raised, and its duration."""
        started = time.monotonic()
        try:
            result = {"status": "ok", **body()}
        except Skip as skip:
            result = {"status": "skipped", "reason": str(skip)}
        except CommandError as exc:
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
        for name, text in (("gpu.json", json.dumps(self.results, indent=1) + "\n"), ("gpu.md", render(self.results))):
            tmp = self.out / f".{name}.tmp"
            tmp.write_text(text)
            tmp.replace(self.out / name)

    # ------------------------------------------------------------------ commands

    def run(self, label: str, command: list[str], cwd: Path = ROOT, env: dict[str, str] | None = None) -> Finished:
        """Run a command to its end or to the section's deadline, its stdout timed line by line;
        its output goes to <out>/logs/<label>.out and .err. Raises CommandError unless it exits 0."""
        timeout = self.deadline - time.monotonic()
        if timeout < 1:
            raise CommandError(f"{label}: the section's time is up", "")
        logs = self.out / "logs"
        # Each command compiles from cold caches: a kernel that nanoGPT compiled must not make our
        # start-up look faster, or the other way round.
        cache = self.work / "compile-cache" / label
        child_env = {
            **os.environ, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8",
            "TORCHINDUCTOR_CACHE_DIR": str(cache), "TRITON_CACHE_DIR": str(cache / "triton"),
            "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)])), **(env or {}),
        }
        if self.smoke:
            child_env["OMP_NUM_THREADS"] = "1"  # tiny sizes: threads cost more than they give, and tests may run side by side
        expired = threading.Event()
        lines: list[tuple[float, str]] = []
        watch = GpuMemoryWatch() if self.watch_gpu else None
        started = time.monotonic()
        with open(logs / f"{label}.out", "w", encoding="utf-8") as out, open(logs / f"{label}.err", "w") as err:
            proc = subprocess.Popen(
                command, cwd=cwd, env=child_env, stdout=subprocess.PIPE, stderr=err, encoding="utf-8", errors="replace",
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
                raise CommandError(f"{label}: killed after {timeout:.0f} s (the section's share of the budget)", tail)
            raise CommandError(f"{label}: exit status {proc.returncode}", tail)
        return Finished(wall_s=wall, lines=lines, stderr=stderr, gpu_memory_mb=memory)

    def worker(self, label: str, name: str, **kwargs: Any) -> dict[str, Any]:
        """Run one of this file's workers in its own process (a hang or crash stays there)."""
        done = self.run(label, [sys.executable, str(Path(__file__).resolve()), "--worker", name, json.dumps(kwargs)])
        line = next((line for _, line in reversed(done.lines) if line.startswith(RESULT)), None)
        if line is None:
            raise CommandError(f"{label}: the worker printed no result", done.stderr[-2000:])
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
        if not copy.exists():
            shutil.copytree(self.anchor, copy)
            for path in [copy, *copy.rglob("*")]:
                path.chmod(path.stat().st_mode | stat.S_IWUSR)
        return copy

    def anchor_data(self) -> Path:
        """The nanoGPT copy with shakespeare_char prepared by its own prepare.py, which downloads
        input.txt only when the file is missing: we write our packaged copy (the same text) first."""
        copy = self.anchor_copy()
        data = copy / "data" / "shakespeare_char"
        if not (data / "train.bin").exists():
            (data / "input.txt").write_bytes(read_bundled("tinyshakespeare.txt"))
            self.run("nanogpt-prepare", [sys.executable, "prepare.py"], cwd=data)
        return copy

    def mfu(self, flops_per_iter: float, ms_per_iter: float) -> dict[str, float | None]:
        """MFU from ms/iter by one formula for both tools: against the card's peak, and against
        the A100 peak that nanoGPT divides by."""
        per_s = flops_per_iter / (ms_per_iter / 1000)
        return {"mfu_device": per_s / self.peak_flops if self.peak_flops else None, "mfu_a100": per_s / A100_PEAK_FLOPS}

    # ------------------------------------------------------------------ sections

    def toolchain(self) -> dict[str, Any]:
        info = self.worker("toolchain", "toolchain", device=self.device, dtype=self.dtype)
        self.peak_flops = info.get("peak_flops")
        return info

    def shakespeare_char(self) -> dict[str, Any]:
        hyper = {**SHAKESPEARE_CHAR, **(TINY if self.smoke else {})}
        flops = gpt_flops_per_iter(hyper["n_layer"], hyper["n_embd"], hyper["block_size"], SHAKESPEARE_CHAR_VOCAB, hyper["batch_size"])
        result: dict[str, Any] = {
            "iters": self.iters, "device": self.device, "dtype": self.dtype, "compile": not self.smoke, "hyperparameters": hyper,
        }
        result["nanogpt"] = self.guarded(lambda: self.nanogpt_shakespeare_char(hyper, flops))
        result["ours"] = self.guarded(lambda: self.ours_shakespeare_char(hyper, flops))
        if result["nanogpt"]["status"] == result["ours"]["status"] == "ok":
            result["ours_over_nanogpt_tokens_per_sec"] = result["ours"]["tokens_per_sec"] / result["nanogpt"]["tokens_per_sec"]
        return result

    def nanogpt_shakespeare_char(self, hyper: dict[str, Any], flops: float) -> dict[str, Any]:
        copy = self.anchor_data()
        system = [f"--device={self.device}", f"--compile={not self.smoke}", f"--dtype={self.dtype}"]
        n = self.iters
        command = [
            sys.executable, "train.py", "config/train_shakespeare_char.py",
            *(f"--{key}={value!r}" for key, value in hyper.items()),  # repr: its configurator wants floats written as floats
            f"--max_iters={n}", f"--eval_interval={n}", f"--log_interval={self.log_interval}", *system,
        ]
        done = self.run("nanogpt-shakespeare_char", command, cwd=copy)
        iters = [(int(m[1]), float(m[2]), float(m[3])) for _, line in done.lines if (m := NANO_ITER.match(line))]
        evals = {int(m[1]): (float(m[2]), float(m[3])) for _, line in done.lines if (m := NANO_EVAL.match(line))}
        ms = steady([(it, ms) for it, ms, _ in iters], n)
        train_loss, val_loss = evals.get(n, (None, None))
        # Its running MFU before the last iteration, whose time includes the final evaluation.
        reported = next((mfu / 100 for it, _, mfu in reversed(iters) if it < n), None)
        return {
            "command": command[1:], "ms_per_iter": ms, "tokens_per_sec": hyper["batch_size"] * hyper["block_size"] / ms * 1000,
            **self.mfu(flops, ms), "mfu_reported_a100": reported,
            "first_iter_s": done.first(NANO_ITER), "train_loss": train_loss, "val_loss": val_loss, "wall_s": done.wall_s,
            "gpu_memory_used_mb": done.gpu_memory_mb,
            "note": "its first logged iteration comes after its evaluation at iter 0 (eval_iters batches of each split, compiled)",
        }

    def ours_shakespeare_char(self, hyper: dict[str, Any], flops: float) -> dict[str, Any]:
        self.prepare("shakespeare_char")
        n = self.iters
        settings = {
            "experiment": "shakespeare_char", **{OUR_KEYS[key]: value for key, value in hyper.items()},
            "max_iters": n, "eval_interval": n, "log_interval": self.log_interval, "eval_at_start": False, **self.system(compiled=True),
        }
        # Logging recompiles and graph breaks costs nothing until one happens, so the timed run is the logged run.
        run = self.train("ours-shakespeare_char", settings, env={"TORCH_LOGS": "recompiles,graph_breaks"})
        self.sample_run = run.run_dir
        ms = steady([(r["iter"], r["ms_per_iter"]) for r in run.events("train")], n)
        mfus = [(r["iter"], r["mfu"]) for r in run.events("train") if r.get("mfu") is not None]
        final = next((r for r in run.events("eval") if r["iter"] == n), {})
        start = run.events("start")[0]
        logged = run.done.stderr.splitlines() + [line for _, line in run.done.lines]
        recompiles = [i for i, line in enumerate(logged) if "Recompiling" in line]
        graph_breaks = [i for i, line in enumerate(logged) if "Graph break" in line]
        # A few of them with the lines that follow (the guard that failed, the reason for the break).
        examples = ["\n".join(logged[i : i + 4]) for i in (recompiles + graph_breaks)[:4]]
        return {
            "command": ["-m", "nanogpt.train", *overrides(settings)], "ms_per_iter": ms,
            "tokens_per_sec": hyper["batch_size"] * hyper["block_size"] / ms * 1000, **self.mfu(flops, ms),
            "mfu_reported_device": steady(mfus, n) if mfus else None,
            "first_iter_s": run.done.first(OURS_ITER), "startup_s": start.get("startup_s"),
            "train_loss": final.get("train_loss"), "val_loss": final.get("val_loss"), "wall_s": run.done.wall_s,
            "peak_memory_mb": run.peak_memory_mb(), "gpu_memory_used_mb": run.done.gpu_memory_mb,
            "recompiles": len(recompiles), "graph_breaks": len(graph_breaks), "torch_logs_examples": examples,
        }

    def gpt2_step(self) -> dict[str, Any]:
        shape = {key: TINY[key] for key in GPT2_SHAPE} if self.smoke else GPT2_SHAPE
        flops = gpt_flops_per_iter(shape["n_layer"], shape["n_embd"], shape["block_size"], GPT2_VOCAB, shape["batch_size"])
        result: dict[str, Any] = {
            "shape": shape, "device": self.device, "dtype": self.dtype,
            "peak_flops_device": self.peak_flops, "peak_flops_a100": A100_PEAK_FLOPS,
            "note": "nanoGPT's MFU divides by an A100's 312 TFLOPS; mfu_device divides both tools' FLOP/s by this card's "
            "peak (nanogpt.system.peak_flops). bench.py neither clips gradients nor checks the loss; our step does both",
        }
        for compiled in (True, False):
            key = "compile" if compiled else "no_compile"
            part: dict[str, Any] = {
                "nanogpt": self.guarded(lambda: self.nanogpt_bench(compiled, flops)),
                "ours": self.guarded(lambda: self.ours_gpt2_step(compiled, shape, flops)),
            }
            if part["nanogpt"]["status"] == part["ours"]["status"] == "ok":
                part["ours_over_nanogpt_tokens_per_sec"] = part["ours"]["tokens_per_sec"] / part["nanogpt"]["tokens_per_sec"]
            result[key] = part
        return result

    def nanogpt_bench(self, compiled: bool, flops: float) -> dict[str, Any]:
        if self.smoke:
            raise Skip("bench.py calls torch.cuda.synchronize(): it runs on CUDA only")
        command = [sys.executable, "bench.py", "--real_data=False", f"--compile={compiled}"]
        done = self.run(f"nanogpt-bench-{'compile' if compiled else 'no_compile'}", command, cwd=self.anchor_copy())
        match = next((m for _, line in done.lines if (m := NANO_BENCH.match(line))), None)
        if match is None:
            raise CommandError("bench.py printed no 'time per iteration' line", "\n".join(line for _, line in done.lines[-10:]))
        ms = float(match[1])
        return {
            "command": command[1:], "ms_per_iter": ms, **self.mfu(flops, ms),
            "tokens_per_sec": GPT2_SHAPE["batch_size"] * GPT2_SHAPE["block_size"] / ms * 1000,
            "mfu_reported_a100": float(match[2]) / 100, "first_iter_s": done.first(NANO_BENCH_STEP), "wall_s": done.wall_s,
            "gpu_memory_used_mb": done.gpu_memory_mb, "timed": f"mean of {BENCH_STEPS} steps after {BENCH_BURN_IN}",
        }

    def ours_gpt2_step(self, compiled: bool, shape: dict[str, int], flops: float) -> dict[str, Any]:
        self.prepare("shakespeare")
        iters, burn_in = (3, 1) if self.smoke else (BENCH_BURN_IN + BENCH_STEPS, BENCH_BURN_IN)
        settings = {
            **GPT2_STEP, **{OUR_KEYS[key]: value for key, value in shape.items()},
            # Every step logged; evaluation only the one at the end (one batch), which is not timed.
            "max_iters": iters, "eval_interval": iters + 1, "eval_iters": 1, "log_interval": 1, "eval_at_start": False,
            "always_save_checkpoint": False, **self.system(compiled),
        }
        run = self.train(f"ours-gpt2-{'compile' if compiled else 'no_compile'}", settings)
        shutil.rmtree(run.run_dir)  # its two checkpoints of GPT-2 and AdamW state take 3 GB
        steps = [r for r in run.events("train") if r["iter"] > burn_in]
        ms = statistics.mean(r["ms_per_iter"] for r in steps)  # as bench.py: the mean over the steps after the burn-in
        tokens = shape["block_size"] * shape["batch_size"]
        mfus = [r["mfu"] for r in steps if r.get("mfu") is not None]
        return {
            "command": ["-m", "nanogpt.train", *overrides(settings)], "ms_per_iter": ms, "tokens_per_sec": tokens / ms * 1000,
            **self.mfu(flops, ms), "mfu_reported_device": statistics.mean(mfus) if mfus else None,
            "first_iter_s": run.done.first(OURS_ITER), "startup_s": run.events("start")[0].get("startup_s"), "wall_s": run.done.wall_s,
            "peak_memory_mb": run.peak_memory_mb(), "gpu_memory_used_mb": run.done.gpu_memory_mb,
            "compile": settings["system.compile"], "timed": f"mean of {len(steps)} steps after {burn_in}",
        }

    def sampling(self) -> dict[str, Any]:
        run_dir = self.sample_run if self.sample_run is not None and any(self.sample_run.glob("ckpt_*.pt")) else None
        return self.worker(
            "sampling", "sample", run_dir=str(run_dir) if run_dir else None, device=self.device,
            tokens=20 if self.smoke else 1000, batches=[1, 8], repeats=1 if self.smoke else 2,
        )

    def time_to_loss(self) -> dict[str, Any]:
        self.prepare("shakespeare_char")
        target = None if self.smoke else self.args.target
        budget = 10.0 if self.smoke else min(self.args.fast_budget, self.left() - FAST_OVERHEAD_S)
        if budget < FAST_MIN_BUDGET_S and not self.smoke:
            raise Skip(f"only {budget:.0f} s of time budget would be left for training (at least {FAST_MIN_BUDGET_S:.0f} s needed)")
        budget = round(budget)
        settings = {
            "experiment": "shakespeare_char_fast", "time_budget_s": budget, "eval_interval": FAST_EVAL_INTERVAL, **self.system(compiled=True),
        }
        if self.smoke:
            settings.update(TINY_OURS, max_iters=20, eval_interval=5)
        run = self.train("ours-shakespeare_char_fast", settings)
        evals = [r for r in run.events("eval") if r.get("val_loss") is not None]
        seen = {int(m[1]): at for at, line in run.done.lines if (m := OURS_EVAL.search(line))}
        hit = next((r for r in evals if target is not None and r["val_loss"] <= target), None)
        end = run.events("end")[0]
        return {
            "command": ["-m", "nanogpt.train", *overrides(settings)], "target": target, "time_budget_s": budget,
            "shortened_from_s": self.args.fast_budget if budget < self.args.fast_budget and not self.smoke else None,
            "reached": None if target is None else hit is not None,
            # From the launch (the suite's clock, at the line that printed the evaluation), and on
            # the trainer's own clock (the record's time, which time_budget_s counts).
            "reached_s": seen.get(hit["iter"]) if hit else None, "reached_train_s": hit["time"] if hit else None,
            "reached_iter": hit["iter"] if hit else None,
            "iters": evals[-1]["iter"] if evals else None, "final_val_loss": evals[-1]["val_loss"] if evals else None,
            "best_val_loss": end.get("best_val_loss"), "startup_s": run.events("start")[0].get("startup_s"),
            "wall_s": run.done.wall_s, "peak_memory_mb": end.get("peak_memory_mb"), "gpu_memory_used_mb": run.done.gpu_memory_mb,
            "evals": [[r["iter"], round(r["time"], 2), r["val_loss"]] for r in evals],
        }

    def memory(self) -> dict[str, Any]:
        rows: list[dict[str, Any]] = []

        def walk(node: Any, path: tuple[str, ...]) -> None:
            if isinstance(node, dict):
                if node.get("status") == "ok" and ("peak_memory_mb" in node or "gpu_memory_used_mb" in node):
                    rows.append({
                        "run": ".".join(path), "allocator_peak_mb": node.get("peak_memory_mb"), "nvidia_smi_mb": node.get("gpu_memory_used_mb"),
                    })
                for key, value in node.items():
                    walk(value, (*path, key))

        walk({k: v for k, v in self.results.items() if k != "memory"}, ())
        return {
            "rows": rows,
            "note": "allocator_peak_mb: the end record's peak_memory_mb (torch.cuda.max_memory_allocated; peak RSS on a CPU); "
            "nanoGPT's scripts print no memory figure. nvidia_smi_mb: the most device memory in use above idle while the "
            "command ran (CUDA context and allocator cache included), for both tools; none without nvidia-smi",
        }


# ---------------------------------------------------------------------- workers (own processes)


def toolchain_worker(device: str, dtype: str) -> dict[str, Any]:
    import torch

    from nanogpt.system import System, device_name, peak_flops
    from train_throughput import machine

    cuda = device.startswith("cuda")
    info: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(), "device": device,
    }
    if cuda and not torch.cuda.is_available():
        return info
    info.update(
        machine=machine(), device_name=device_name(device), cudnn=torch.backends.cudnn.version(),
        bf16_supported=torch.cuda.is_bf16_supported() if cuda else None,
        flash_sdp_enabled=torch.backends.cuda.flash_sdp_enabled(),
        mem_efficient_sdp_enabled=torch.backends.cuda.mem_efficient_sdp_enabled(),
        peak_flops=peak_flops(System(device=device, dtype=dtype, compile=False)), peak_flops_dtype=dtype,
    )
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if cuda:
        props = torch.cuda.get_device_properties(device)
        info.update(capability=f"{props.major}.{props.minor}", memory_gib=round(props.total_memory / 2**30, 1))
        from torch.nn.attention import SDPBackend, sdpa_kernel

        q = torch.randn(1, 6, 256, 64, device=device, dtype=torch.bfloat16)
        try:
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
            info["flash_attention_runs"] = True
        except RuntimeError as exc:
            info.update(flash_attention_runs=False, flash_attention_error=str(exc).splitlines()[0])

    def small(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.gelu(x) * torch.sigmoid(x) + x

    x = torch.randn(1024, 1024, device=device)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    try:
        start = time.perf_counter()
        compiled = torch.compile(small)(x)
        sync()
        info["compile_s"] = time.perf_counter() - start
        info["compile_matches_eager"] = bool(torch.allclose(compiled, small(x), atol=1e-5, rtol=1e-5))
    except Exception as exc:  # recorded: the training sections will show what it breaks
        info["compile_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return info


def sample_worker(run_dir: str | None, device: str, tokens: int, batches: list[int], repeats: int) -> dict[str, Any]:
    """KV cache against the naive path (window=halve, the default) with the sampling defaults,
    and greedy decoding both ways, on a run's checkpoint or else a random-weight `small` model."""
    from nanogpt.generation import Generator
    from sample_speed import PROMPT, time_generation

    with tempfile.TemporaryDirectory() as scratch:
        source = f"{Path(run_dir).name}/ckpt_best.pt" if run_dir else "random weights: (a) left no checkpoint"
        generator = Generator.from_run(run_dir or random_small_run(Path(scratch)), device=device)
    rows = []
    for batch in batches:
        time_generation(generator, 8, batch, True, "halve")  # warm-up: first-call allocations and kernels
        kv = [time_generation(generator, tokens, batch, True, "halve") for _ in range(repeats)]
        naive = time_generation(generator, tokens, batch, False, "halve")
        kv_tokens_per_s = statistics.median(r["tokens_per_s"] for r in kv)
        rows.append({
            "batch": batch, "kv_tokens_per_s": kv_tokens_per_s, "naive_tokens_per_s": naive["tokens_per_s"],
            "kv_over_naive": kv_tokens_per_s / naive["tokens_per_s"],
            "kv_first_token_ms": statistics.median(r["first_token_s"] for r in kv) * 1000,
        })
    prompt_ids = generator.tokenizer.encode(PROMPT)
    kv_ids, naive_ids = (
        generator.tokenizer.encode(generator.generate(PROMPT, max_new_tokens=tokens, temperature=0.0, kv_cache=kv_cache)[0])
        for kv_cache in (True, False)
    )
    same = next((i for i, (a, b) in enumerate(zip(kv_ids, naive_ids)) if a != b), min(len(kv_ids), len(naive_ids)))
    config = generator.model.config
    return {
        "checkpoint": source, "device": generator.system.device, "dtype": generator.system.dtype,
        "model": f"{config.n_layer}/{config.n_head}/{config.n_embd}, context {config.block_size}", "tokens": tokens,
        "repeats": repeats, "window": "halve", "rows": rows,
        "greedy": {"tokens": tokens, "identical": kv_ids == naive_ids, "matching_leading_tokens": same - len(prompt_ids)},
    }


def random_small_run(folder: Path) -> Path:
    """A run folder holding a random-weight `small` model (sample_speed.py's): sampling speed does
    not depend on the weights."""
    import torch

    from nanogpt.checkpoint import CKPT_FORMAT, save_checkpoint
    from nanogpt.model import GPT, GPTConfig
    from sample_speed import SHAKESPEARE_CHARS, SMALL

    torch.manual_seed(0)
    meta = {"tokenizer": "char", "vocab_size": len(SHAKESPEARE_CHARS), "itos": SHAKESPEARE_CHARS}
    state = {"format": CKPT_FORMAT, "model": GPT(GPTConfig(**SMALL)).state_dict(), "model_args": SMALL, "dataset_meta": json.dumps(meta)}
    save_checkpoint(folder / "ckpt_best.pt", state)
    return folder


WORKERS: dict[str, Callable[..., dict[str, Any]]] = {"toolchain": toolchain_worker, "sample": sample_worker}


# ---------------------------------------------------------------------- the table


def fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return spec.format(value)


def cell(part: dict[str, Any], key: str, spec: str) -> str:
    return fmt(part.get(key), spec) if part.get("status") == "ok" else part.get("status", "–")


COMPARE_HEADER = ["| | ours | nanoGPT | ours / nanoGPT |", "| --- | ---: | ---: | ---: |"]
RATIOS = ("ms_per_iter", "tokens_per_sec")  # the rows where ours / nanoGPT means something


def compare(ours: dict[str, Any], nano: dict[str, Any], rows: list[tuple[str, str, str]]) -> list[str]:
    """Table rows (label, key, format) with ours and nanoGPT side by side."""
    lines = []
    for label, key, spec in rows:
        ratio = "–"
        if key in RATIOS and ours.get("status") == nano.get("status") == "ok" and ours.get(key) and nano.get(key):
            ratio = f"{ours[key] / nano[key]:.2f}"
        lines.append(f"| {label} | {cell(ours, key, spec)} | {cell(nano, key, spec)} | {ratio} |")
    return lines


def render(results: dict[str, Any]) -> str:
    """gpu.md: a table per section measured so far, then whatever was skipped or failed."""
    parts = [render_header(results)]
    for name, part in (("shakespeare_char", render_a), ("gpt2_step", render_c), ("sampling", render_d),
                       ("time_to_loss", render_b), ("memory", render_e)):
        if results.get(name, {}).get("status") == "ok":
            parts.append(part(results[name]))
    parts.append(render_problems(results))
    return "\n\n".join(p for p in parts if p) + "\n"


def render_header(results: dict[str, Any]) -> str:
    suite, tool = results["suite"], results.get("toolchain", {})
    lines = [
        f"# GPU suite: {tool.get('device_name', 'device unknown')}", "",
        f"torch {tool.get('torch', '?')}, CUDA {tool.get('cuda', '-')}, {tool.get('machine', '')}; started {suite['started']}, "
        f"{suite.get('elapsed_s', 0):.0f} s of a {suite['budget_s']:.0f} s budget{'' if suite['finished'] else ' (unfinished)'}; "
        f"version {suite.get('version') or 'unknown'}.",
    ]
    if suite["smoke"]:
        lines += ["", "**Smoke run: CPU, tiny sizes, no compile. The numbers only show that every path runs.**"]
    if "aborted" in suite:
        lines += ["", f"**Aborted: {suite['aborted']}.**"]
    if tool.get("status") == "ok" and "device_name" in tool:
        peak = fmt(tool.get("peak_flops") and tool["peak_flops"] / 1e12, "{:.3g}")
        compiled = fmt(tool.get("compile_s"), "{:.1f} s") + (f" ({tool['compile_error']})" if "compile_error" in tool else "")
        lines += [
            "", f"Peak for MFU: {peak} TFLOPS ({tool.get('peak_flops_dtype')}); bf16 {tool.get('bf16_supported')}; flash SDP "
            f"enabled {tool.get('flash_sdp_enabled')}, runs {tool.get('flash_attention_runs', '-')}; compiling a small function {compiled}.",
        ]
    return "\n".join(lines)


def render_a(a: dict[str, Any]) -> str:
    h, ours = a["hyperparameters"], a["ours"]
    lines = [
        f"## (a) shakespeare_char: {a['iters']} iterations, batch {h['batch_size']} x {h['block_size']}, "
        f"{h['n_layer']}/{h['n_head']}/{h['n_embd']}, {a['dtype']}, compile {a['compile']}", "", *COMPARE_HEADER,
        *compare(ours, a["nanogpt"], [
            ("ms/iter (median of the last 80%)", "ms_per_iter", "{:.2f}"), ("tokens/s", "tokens_per_sec", "{:,.0f}"),
            ("launch to first logged iteration", "first_iter_s", "{:.1f} s"), (f"val loss at iter {a['iters']}", "val_loss", "{:.4f}"),
            ("MFU vs this card's peak", "mfu_device", "{:.1%}"), ("MFU vs A100 312 TFLOPS (nanoGPT's basis)", "mfu_a100", "{:.1%}"),
            ("whole command", "wall_s", "{:.1f} s"),
        ]),
        "", "nanoGPT's first logged iteration follows its evaluation at iter 0.",
    ]
    if ours.get("status") == "ok":
        lines[-1] += (f" Ours under TORCH_LOGS=recompiles,graph_breaks: {ours['recompiles']} recompile(s), "
                      f"{ours['graph_breaks']} graph break line(s).")
    return "\n".join(lines)


def render_c(c: dict[str, Any]) -> str:
    s = c["shape"]
    rows = [
        ("ms/iter", "ms_per_iter", "{:.2f}"), ("tokens/s", "tokens_per_sec", "{:,.0f}"), ("MFU vs this card's peak", "mfu_device", "{:.1%}"),
        ("MFU vs A100 (nanoGPT's basis)", "mfu_a100", "{:.1%}"), ("launch to first iteration", "first_iter_s", "{:.1f} s"),
    ]
    lines = [f"## (c) GPT-2 training step: {s['n_layer']} layers x {s['n_embd']}, batch {s['batch_size']} x {s['block_size']}, {c['dtype']}",
             "", *COMPARE_HEADER]
    for key, name in (("compile", "compiled"), ("no_compile", "not compiled")):
        lines += compare(c[key]["ours"], c[key]["nanogpt"], [(f"{name}: {label}", k, spec) for label, k, spec in rows])
    return "\n".join(lines)


def render_d(d: dict[str, Any]) -> str:
    lines = [
        f"## (d) Sampling: {d['model']}, {d['tokens']} new tokens, {d['device']} {d['dtype']}, window {d['window']}", "",
        "| batch | KV cache tokens/s | first token | naive tokens/s | KV / naive |", "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in d["rows"]:
        lines.append(f"| {r['batch']} | {r['kv_tokens_per_s']:,.0f} | {r['kv_first_token_ms']:.1f} ms | "
                     f"{r['naive_tokens_per_s']:,.0f} | {r['kv_over_naive']:.1f}x |")
    g = d["greedy"]
    lines += ["", f"Greedy decoding, KV cache against naive: {'identical' if g['identical'] else 'different'} "
              f"({g['matching_leading_tokens']} of {g['tokens']} leading tokens match). Checkpoint: {d['checkpoint']}."]
    return "\n".join(lines)


def render_b(b: dict[str, Any]) -> str:
    if b["reached"]:
        reached = (f"reached {fmt(b['reached_s'], '{:.1f} s')} after launch, at iter {b['reached_iter']} "
                   f"({b['reached_train_s']:.1f} s on the trainer's clock)")
    else:
        reached = "not reached" if b["reached"] is False else "not set (smoke)"
    shortened = f" (shortened from {b['shortened_from_s']:.0f} s)" if b["shortened_from_s"] else ""
    return (f"## (b) Time to val loss {b['target'] or '(no target)'}: experiment=shakespeare_char_fast, "
            f"time budget {b['time_budget_s']} s{shortened}\n\n"
            f"Target {reached}; final val loss {fmt(b['final_val_loss'], '{:.4f}')} after {b['iters']} iterations; "
            f"whole command {b['wall_s']:.1f} s.")


def render_e(e: dict[str, Any]) -> str:
    lines = ["## (e) Peak memory", "", "| run | allocator peak (MiB) | nvidia-smi above idle (MiB) |", "| --- | ---: | ---: |"]
    lines += [f"| {r['run']} | {fmt(r['allocator_peak_mb'], '{:,.0f}')} | {fmt(r['nvidia_smi_mb'], '{:,.0f}')} |" for r in e["rows"]]
    return "\n".join(lines)


def render_problems(results: dict[str, Any]) -> str:
    problems: list[str] = []

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, dict):
            if node.get("status") in ("failed", "skipped"):
                problems.append(f"- {'.'.join(path)}: {node['status']}: {node.get('reason') or node.get('error')}")
            for key, value in node.items():
                walk(value, (*path, key))

    walk(results, ())
    return "\n".join(["## Not measured", "", *problems]) if problems else ""


# ---------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="folder for gpu.json, gpu.md and logs/")
    parser.add_argument("--smoke", action="store_true", help="every section on the CPU at tiny sizes, no compile")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for the whole suite (default 480)")
    parser.add_argument(
        "--anchor", type=Path, default=None, help="nanoGPT's folder (default ../shared/anchors/nanoGPT, else .anchors/nanoGPT)"
    )
    parser.add_argument("--iters", type=int, default=None, help="shakespeare_char iterations (default 1000; smoke 10)")
    parser.add_argument("--fast-budget", type=float, default=150.0, help="time_budget_s of the shakespeare_char_fast run (default 150)")
    parser.add_argument("--target", type=float, default=1.47, help="the val loss time_to_loss waits for (default 1.47)")
    parser.add_argument("--worker", nargs=2, metavar=("NAME", "JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        name, payload = args.worker
        print(RESULT + json.dumps(WORKERS[name](**json.loads(payload))), flush=True)
        return

    # SIGTERM unwinds like Ctrl-C, so the running command's process group is killed on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    suite = Suite(args)
    mode = "smoke: CPU, tiny sizes" if suite.smoke else f"{suite.device}, {suite.dtype}"
    print(f"GPU suite ({mode}), budget {args.budget:.0f} s, nanoGPT from {suite.anchor}, results in {args.out}", flush=True)
    try:
        suite.section("toolchain", "torch, CUDA, the card, compiling a small function", suite.toolchain)
        tool = suite.results["toolchain"]
        if not suite.smoke and not tool.get("cuda_available"):
            suite.failed = True
            suite.results["suite"]["aborted"] = "no CUDA GPU is visible to torch (run with --smoke on a CPU)"
            print(suite.results["suite"]["aborted"], flush=True)
        else:
            suite.section("shakespeare_char", f"(a) nanoGPT vs ours, {suite.iters} iterations", suite.shakespeare_char)
            suite.section("gpt2_step", "(c) GPT-2 124M training step, compiled and not", suite.gpt2_step)
            suite.section("sampling", "(d) KV-cache sampling at batch 1 and 8", suite.sampling)
            suite.section(
                "time_to_loss", f"(b) shakespeare_char_fast to val loss {args.target}", suite.time_to_loss,
                needs_s=None if suite.smoke else FAST_MIN_BUDGET_S + FAST_OVERHEAD_S,
            )
            suite.section("memory", "(e) peak memory of every run", suite.memory, needs_s=-math.inf)  # runs no command
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
