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
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness import RESULTS, SHARED_CORPUS, append_json, markdown_table, run_training


def train(overrides: list[str], run_dir: Path) -> tuple[list[dict], float]:
    """Run `python -m nanogpt.train <overrides>` into run_dir (on ../shared's corpus where there
    is one); its metrics.jsonl records and the command's wall time, launch to exit."""
    if SHARED_CORPUS.is_file() and not any(o.startswith("dataset.source=") for o in overrides):
        overrides = [*overrides, f"dataset.source={SHARED_CORPUS}"]
    return run_training(overrides, run_dir)


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
    parser.add_argument("--out", type=Path, default=RESULTS / "train_throughput.json")
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
        "device": start["device"],
        "dtype": start["dtype"],
        "compile": start["compile"],
        "params": start["params"],
        "ms_per_iter": ms,
        "tokens_per_sec": tps,
        "mfu": statistics.median(mfus) if mfus else None,
        "startup_s": statistics.median(r["start"]["startup_s"] for r in runs),
        "peak_memory_mb": max(r["end"].get("peak_memory_mb") or 0 for r in runs),
        "timed_steps": sum(n for _, n in windows),
        "log_lines": len(steps),
        "repeats": args.repeats,
    }
    mfu = f"{result['mfu']:.1%}" if result["mfu"] is not None else "-"
    header = ["config", "device", "dtype", "ms/iter", "tokens/s", "MFU", "start-up", "peak MiB"]
    row = [
        " ".join(args.overrides) or "(defaults)",
        result["device"],
        result["dtype"],
        f"{ms:.1f}",
        f"{tps:,.0f}",
        mfu,
        f"{result['startup_s']:.2f} s",
        f"{result['peak_memory_mb']:.0f}",
    ]
    print(markdown_table(header, [row], align="lllrrrrr"))
    append_json(args.out, result)


if __name__ == "__main__":
    main()
