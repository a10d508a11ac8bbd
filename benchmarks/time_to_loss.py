"""Wall time from the command's start until the validation loss reaches a target, and the final loss.

    python benchmarks/time_to_loss.py --target 1.70 experiment=shakespeare_char_cpu_fast
    python benchmarks/time_to_loss.py --target 1.886 experiment=shakespeare_char_cpu system.dtype=float32

Runs `python -m nanogpt.train <overrides>` --repeats times, each in a fresh run folder (the
dataset prepared beforehand, so preparation is not timed). "reached" is the command's start-up
plus the training time of the first evaluation at or below the target; "wall" is the whole
command, from launch to exit. Prints a table and appends JSON to
benchmarks/results/time_to_loss.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness import RESULTS, SHARED_CORPUS, append_json, markdown_table, run_command
from train_throughput import train


def run_once(overrides: list[str], workdir: Path, target: float) -> dict:
    records, wall = train(overrides, workdir / f"run-{time.monotonic_ns()}")
    start = next(r for r in records if r["event"] == "start")
    evals = [r for r in records if r["event"] == "eval"]
    end = next(r for r in records if r["event"] == "end")
    hit = next((r for r in evals if r["val_loss"] <= target), None)
    return {
        "wall_s": wall,
        "startup_s": start["startup_s"],
        "iters": evals[-1]["iter"],
        "final_val_loss": evals[-1]["val_loss"],
        "best_val_loss": end["best_val_loss"],
        "reached_s": start["startup_s"] + hit["time"] if hit else None,
        "peak_memory_mb": end.get("peak_memory_mb"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="config overrides, as for python -m nanogpt.train")
    parser.add_argument("--target", type=float, required=True, help="the validation loss to reach")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "time_to_loss.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        # Prepare the dataset once, untimed: a user's second run never pays for it either.
        source = [f"dataset.source={SHARED_CORPUS}"] if SHARED_CORPUS.is_file() else []
        run_command([sys.executable, "-m", "nanogpt.train", *args.overrides, "max_iters=0", f"hydra.run.dir={tmp}/prepare", *source])
        runs = [run_once(args.overrides, Path(tmp), args.target) for _ in range(args.repeats)]

    header = ["run", "iters", "final val", f"reached {args.target}", "wall", "start-up", "peak MiB"]
    rows = [
        [
            i,
            r["iters"],
            f"{r['final_val_loss']:.4f}",
            f"{r['reached_s']:.1f} s" if r["reached_s"] is not None else "never",
            f"{r['wall_s']:.1f} s",
            f"{r['startup_s']:.2f} s",
            f"{r['peak_memory_mb'] or 0:.0f}",
        ]
        for i, r in enumerate(runs, 1)
    ]
    print(markdown_table(header, rows, align="rrrrrrr"))
    reached = [r["reached_s"] for r in runs if r["reached_s"] is not None]
    result = {
        "overrides": args.overrides,
        "target": args.target,
        "runs": runs,
        "median_final_val_loss": statistics.median(r["final_val_loss"] for r in runs),
        "median_wall_s": statistics.median(r["wall_s"] for r in runs),
        "median_reached_s": statistics.median(reached) if len(reached) == len(runs) else None,
    }
    print(
        f"median: final val loss {result['median_final_val_loss']:.4f}, wall {result['median_wall_s']:.1f}s, "
        f"target reached in {len(reached)}/{len(runs)} runs" + (f", median {result['median_reached_s']:.1f}s" if result["median_reached_s"] else "")
    )
    append_json(args.out, result)


if __name__ == "__main__":
    main()
