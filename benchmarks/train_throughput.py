"""Training speed of the real training command: ms/iter, tokens/s and MFU (medians), start-up time
(command start to the first training step) and peak memory.

    python benchmarks/train_throughput.py                                   # the CPU quickstart model
    python benchmarks/train_throughput.py experiment=shakespeare_char_cpu system.dtype=float32
    python benchmarks/train_throughput.py --iters 40 --warmup 10 experiment=shakespeare_char  # small model

Runs `python -m nanogpt.train <overrides>` --repeats times (evaluation pushed past the end so only
training steps are timed) at the config's log_interval, as training runs: each log line waits for
the device, so logging every step would slow a GPU down. Each log line's ms/iter is the mean of
the steps since the one before; the lines whose steps come after the first --warmup steps of a run
give the medians reported. Prints a table and writes JSON to benchmarks/results/train_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_CORPUS = ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"


def machine() -> str:
    """The CPU model and core count (and the GPU, where torch sees one)."""
    name = platform.processor() or platform.machine()
    try:
        name = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    text = f"{name}, {os.cpu_count()} cpus"
    try:
        import torch

        if torch.cuda.is_available():
            text += f", {torch.cuda.get_device_name()}"
    except ImportError:
        pass
    return text


def resolve_device(name: str) -> str:
    """A --device: "auto" is the training command's choice (a CUDA GPU, then Apple's, then the CPU)."""
    from nanogpt.system import resolve_system

    return resolve_system(name, "float32", "false").device


def synchronize(device: str) -> None:
    """Wait for the work queued on the device, so that a timer stops when it is done."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    elif device == "mps":
        torch.mps.synchronize()


def train(overrides: list[str], run_dir: Path) -> tuple[list[dict], float]:
    """Run `python -m nanogpt.train <overrides>` into run_dir (on ../shared's corpus where there
    is one); its metrics.jsonl records and the command's wall time, launch to exit."""
    args = [sys.executable, "-m", "nanogpt.train", *overrides, f"hydra.run.dir={run_dir}"]
    if SHARED_CORPUS.is_file() and not any(o.startswith("dataset.source=") for o in overrides):
        args.append(f"dataset.source={SHARED_CORPUS}")
    started = time.time()
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - started
    if proc.returncode != 0:
        sys.exit(f"training failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()], wall


def run_once(overrides: list[str], iters: int, warmup: int, workdir: Path) -> dict:
    timed = [f"max_iters={iters}", f"eval_interval={iters + 1}", "eval_iters=1", "always_save_checkpoint=false"]
    records, wall = train([*overrides, *timed], workdir / f"run-{time.monotonic_ns()}")
    start = next(r for r in records if r["event"] == "start")
    end = next(r for r in records if r["event"] == "end")
    logged = [r for r in records if r["event"] == "train"]
    # Each log line's ms/iter covers the steps since the line before it (the first: since step 0).
    firsts = [0] + [r["iter"] for r in logged[:-1]]
    windows = [(r, r["iter"] - first) for r, first in zip(logged, firsts) if first >= warmup]
    return {"start": start, "end": end, "windows": windows, "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="config overrides, as for python -m nanogpt.train")
    parser.add_argument("--iters", type=int, default=60, help="training steps per run")
    parser.add_argument("--warmup", type=int, default=10, help="steps left out at the start of each run (whole log windows)")
    parser.add_argument("--repeats", type=int, default=3, help="runs (medians pool their steps)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "train_throughput.json")
    args = parser.parse_args()

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            runs.append(run_once(args.overrides, args.iters, args.warmup, Path(tmp)))
    windows = [w for run in runs for w in run["windows"]]
    if not windows:
        sys.exit(f"no log line after the first {args.warmup} steps: raise --iters or lower log_interval")
    steps = [record for record, _ in windows]
    ms = statistics.median(s["ms_per_iter"] for s in steps)
    tps = statistics.median(s["tokens_per_sec"] for s in steps)
    mfus = [s["mfu"] for s in steps if s.get("mfu") is not None]
    start = runs[0]["start"]
    result = {
        "overrides": args.overrides,
        "device": start["device"], "dtype": start["dtype"], "compile": start["compile"], "params": start["params"],
        "ms_per_iter": ms, "tokens_per_sec": tps, "mfu": statistics.median(mfus) if mfus else None,
        "startup_s": statistics.median(r["start"]["startup_s"] for r in runs),
        "peak_memory_mb": max(r["end"].get("peak_memory_mb") or 0 for r in runs),
        "timed_steps": sum(n for _, n in windows), "log_lines": len(steps), "repeats": args.repeats,
        "machine": machine(),
    }
    print(f"{'config':<48} {'device':<6} {'dtype':<9} {'ms/iter':>8} {'tokens/s':>10} {'MFU':>6} {'start-up':>9} {'peak MiB':>9}")
    mfu = f"{result['mfu']:.1%}" if result["mfu"] is not None else "-"
    print(f"{' '.join(args.overrides) or '(defaults)':<48} {result['device']:<6} {result['dtype']:<9} "
          f"{ms:>8.1f} {tps:>10,.0f} {mfu:>6} {result['startup_s']:>8.2f}s {result['peak_memory_mb']:>9.0f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(args.out.read_text()) if args.out.exists() else []
    args.out.write_text(json.dumps(existing + [result], indent=1) + "\n")


if __name__ == "__main__":
    main()
