"""nanoGPT's README CPU run and ours, side by side on this machine: speed and final loss.

    python benchmarks/vs_nanogpt.py                              # 3 seeds x 2,000 iterations, about 10-15 min
    python benchmarks/vs_nanogpt.py --seeds 1337 --max-iters 5   # a smoke run, under a minute

For each seed, back to back: nanoGPT's own train.py (a temporary copy of ../shared/anchors/nanoGPT
or --anchor, on shakespeare_char prepared by its own prepare.py from the same input.txt) running
its README's CPU command

    python train.py config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20
        --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128
        --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0 --seed=S --always_save_checkpoint=True

then ours, `python -m nanogpt.train seed=S` (the default config is that run; default system
settings). nanoGPT's train.py has no seed key (it seeds with 1337 + rank): the copy gets one,
`seed = 1337` among its settings and `torch.manual_seed(seed + seed_offset)`, so that --seed=1337
is its unchanged run. --always_save_checkpoint=True makes its ckpt.pt the final weights rather than
the best of its 20-batch evaluations (it changes what is written, not what is trained).

Speed: ms/iter from each tool's own log, over the iterations after the first --skip, leaving out
those that include an evaluation (nanoGPT times its evaluation into the next iteration; ours
starts a new timing window after one); tokens/s follow (both take 12 x 64 tokens per iteration).

Loss: every final checkpoint, nanoGPT's and ours, goes through one evaluator: its weights loaded
into our GPT (the same function as nanoGPT's: tests/test_vs_nanogpt.py), float32, mean
cross-entropy over every non-overlapping context-length window of the whole val split. The two
means over seeds must agree within --tolerance (exit status 1 otherwise).

Prints a table and writes JSON (--out, default benchmarks/results/vs_nanogpt.json).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the harness, also where a test loads this file by its path
from harness import ANCHOR, RESULTS, SHARED_CORPUS, CommandFailed, git_version, machine_info, markdown_table, run_command, writable_copy, write_json  # noqa: E402

from nanogpt.metrics import read_metrics  # noqa: E402

BATCH_SIZE, BLOCK_SIZE, EVAL_INTERVAL, FULL_ITERS = 12, 64, 250, 2000
NANO_ITER = re.compile(r"^iter (\d+): loss ([\d.]+), time ([\d.]+)ms")
NANO_EVAL = re.compile(r"^step (\d+): train loss ([\d.]+), val loss ([\d.]+)")
OUR_ENV = {"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
# The seed key added to the copy of nanoGPT's train.py: (text that must occur once, replacement).
SEED_PATCH = [
    ("\nconfig_keys = ", "\nseed = 1337\nconfig_keys = "),
    ("torch.manual_seed(1337 + seed_offset)", "torch.manual_seed(seed + seed_offset)"),
]


def cpu_description() -> dict[str, Any]:
    """The CPU's model name, its core count and whether it has AVX512-BF16 (and AMX)."""
    m = machine_info()
    return {
        "model_name": m["cpu"],
        "cpus": m["cpus"],
        "avx512_bf16": "avx512_bf16" in m["isa"],
        "amx_bf16": "amx_bf16" in m["isa"],
        "avx512f": "avx512f" in m["isa"],
    }


def run(label: str, command: list[str], cwd: Path, logs: Path, env: dict[str, str] | None = None) -> tuple[str, float]:
    """Run a command to the end; its output (stdout and stderr) goes to logs/<label>.log as it
    comes and is returned with the wall time. Exits naming the log if the command fails."""
    try:
        wall, output = run_command(command, cwd, {"PYTHONUNBUFFERED": "1", **(env or {})}, log=logs / f"{label}.log")
    except CommandFailed as exc:
        sys.exit(f"{label} failed: {exc}")
    return output, wall


def nanogpt_copy(anchor: Path, work: Path, corpus: Path, logs: Path) -> Path:
    """A writable copy of nanoGPT with a seed key and shakespeare_char prepared by its own
    prepare.py (which downloads input.txt only when it is missing: it is copied in first)."""
    copy = writable_copy(anchor, work / "nanoGPT")
    train_py = copy / "train.py"
    text = train_py.read_text()
    for old, new in SEED_PATCH:
        if text.count(old) != 1:
            sys.exit(f"{anchor / 'train.py'} is not the nanoGPT this benchmark knows: {old!r} occurs {text.count(old)} times, not once")
        text = text.replace(old, new)
    train_py.write_text(text)
    data = copy / "data" / "shakespeare_char"
    shutil.copyfile(corpus, data / "input.txt")
    run("nanogpt-prepare", [sys.executable, "prepare.py"], data, logs)
    return copy


def our_data(work: Path, corpus: Path, logs: Path) -> Path:
    """Our shakespeare_char, prepared (untimed) from the same input.txt where our default config
    looks for it when run from `work`."""
    folder = work / "data" / "shakespeare_char"
    folder.mkdir(parents=True)
    shutil.copyfile(corpus, folder / "input.txt")
    run("ours-prepare", [sys.executable, "-m", "nanogpt.prepare"], work, logs, env=OUR_ENV)
    return folder


def steady_ms(points: list[tuple[int, float, int]], skip: int) -> dict[str, float | int]:
    """(iteration, ms per iteration, iterations covered) records, the first `skip` iterations
    left out: the mean over iterations (total time / count) and the median record."""
    kept = [(ms, n) for it, ms, n in points if it - n >= skip]
    if not kept:
        return {"mean": float("nan"), "median": float("nan"), "iterations": 0}
    count = sum(n for _, n in kept)
    return {"mean": sum(ms * n for ms, n in kept) / count, "median": statistics.median(ms for ms, _ in kept), "iterations": count}


def run_nanogpt(copy: Path, seed: int, iters: int, eval_interval: int, skip: int, logs: Path) -> dict[str, Any]:
    out_dir = f"out-{seed}"
    command = [
        sys.executable,
        "train.py",
        "config/train_shakespeare_char.py",
        "--device=cpu",
        "--compile=False",
        "--eval_iters=20",
        "--log_interval=1",
        f"--block_size={BLOCK_SIZE}",
        f"--batch_size={BATCH_SIZE}",
        "--n_layer=4",
        "--n_head=4",
        "--n_embd=128",
        f"--max_iters={iters}",
        f"--lr_decay_iters={iters}",
        "--dropout=0.0",
        f"--seed={seed}",
        "--always_save_checkpoint=True",
        f"--out_dir={out_dir}",
    ]
    if eval_interval != EVAL_INTERVAL:
        command.append(f"--eval_interval={eval_interval}")
    output, wall = run(f"nanogpt-{seed}", command, copy, logs)
    lines = output.splitlines()
    # Iteration i's time covers its step and, when i % eval_interval == 0, the evaluation before it.
    points = [(int(m[1]) + 1, float(m[3]), 1) for line in lines if (m := NANO_ITER.match(line)) and int(m[1]) % eval_interval]
    evals = {int(m[1]): float(m[3]) for line in lines if (m := NANO_EVAL.match(line))}
    return {
        "command": command[1:],
        "ms_per_iter": steady_ms(points, skip),
        "wall_s": wall,
        "own_val_loss": evals.get(iters),
        "checkpoint": copy / out_dir / "ckpt.pt",
    }


def run_ours(work: Path, seed: int, iters: int, eval_interval: int, skip: int, logs: Path, extra: list[str]) -> dict[str, Any]:
    run_dir = work / f"ours-{seed}"
    command = [sys.executable, "-m", "nanogpt.train", f"seed={seed}", f"hydra.run.dir={run_dir}", *extra]
    if iters != FULL_ITERS:
        command.append(f"max_iters={iters}")
    if eval_interval != EVAL_INTERVAL:
        command.append(f"eval_interval={eval_interval}")
    _, wall = run(f"ours-{seed}", command, work, logs, env=OUR_ENV)
    records = read_metrics(run_dir / "metrics.jsonl")
    # Each train record's ms_per_iter is the mean since the previous log line (or evaluation).
    points, previous = [], 0
    for record in records:
        if record["event"] == "eval":
            previous = record["iter"]
        elif record["event"] == "train":
            points.append((record["iter"], record["ms_per_iter"], record["iter"] - previous))
            previous = record["iter"]
    start = next(r for r in records if r["event"] == "start")
    final_eval = next((r for r in records if r["event"] == "eval" and r["iter"] == iters), {})
    return {
        "command": command[1:],
        "ms_per_iter": steady_ms(points, skip),
        "wall_s": wall,
        "dtype": start.get("dtype"),
        "own_val_loss": final_eval.get("val_loss"),
        "checkpoint": run_dir / "ckpt_last.pt",
    }


@torch.no_grad()
def full_val_loss(checkpoint: Path, val: np.ndarray, batch_windows: int = 256) -> dict[str, Any]:
    """The one evaluator: a checkpoint of either tool loaded into our GPT, float32, mean loss over
    all non-overlapping block_size windows of the val tokens (every window is full length, so
    this is the mean over their tokens)."""
    from nanogpt.model import GPT, GPTConfig

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    args = dict(state["model_args"], dropout=0.0)
    model = GPT(GPTConfig(**args)).eval()
    weights = {k.removeprefix("_orig_mod."): v.float() for k, v in state["model"].items()}
    model.load_state_dict(weights)
    block = args["block_size"]
    count = (len(val) - 1) // block
    tokens = torch.from_numpy(val[: count * block + 1].astype(np.int64))
    inputs, targets = tokens[:-1].view(count, block), tokens[1:].view(count, block)
    total = 0.0
    for i in range(0, count, batch_windows):
        x, y = inputs[i : i + batch_windows], targets[i : i + batch_windows]
        _, loss = model(x, y.contiguous())
        total += loss.double().item() * y.numel()
    return {"val_loss": total / (count * block), "windows": count, "tokens": count * block, "iter_num": int(state["iter_num"])}


def table(result: dict[str, Any]) -> str:
    header = ["seed", "tool", "ms/iter mean", "ms/iter median", "tokens/s", "whole command", "own val loss (20 batches)", "full-val loss"]
    rows = []
    for pair in result["runs"]:
        for tool in ("nanogpt", "ours"):
            r = pair[tool]
            rows.append(
                [
                    pair["seed"],
                    f"{tool} ({r['dtype']})" if r.get("dtype") else tool,
                    f"{r['ms_per_iter']['mean']:.1f}",
                    f"{r['ms_per_iter']['median']:.1f}",
                    f"{r['tokens_per_sec']:,.0f}",
                    f"{r['wall_s']:.1f} s",
                    f"{r['own_val_loss']:.4f}" if r["own_val_loss"] is not None else "-",
                    f"{r['full_val']['val_loss']:.4f}",
                ]
            )
    s = result["summary"]
    return "\n".join(
        [
            markdown_table(header, rows, align="rlrrrrrr"),
            "",
            f"full-val loss, mean of {len(result['runs'])}: nanoGPT {s['nanogpt_full_val_mean']:.4f}, ours {s['ours_full_val_mean']:.4f}, "
            f"difference {s['difference']:+.4f} ({'within' if s['agree'] else 'OUTSIDE'} {s['tolerance']})",
            f"tokens/s ours/nanoGPT: {s['ours_over_nanogpt_tokens_per_sec']:.3f} (per seed: {', '.join(f'{r:.3f}' for r in s['ratio_per_seed'])})",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1337, 1338, 1339])
    parser.add_argument("--max-iters", type=int, default=FULL_ITERS, help="iterations per run (fewer: a smoke run)")
    parser.add_argument("--skip", type=int, default=None, help="first iterations left out of the timings (default 20; none below 100 iterations)")
    parser.add_argument("--ours", nargs="*", default=[], metavar="KEY=VALUE", help="overrides added to our command (e.g. system.dtype=float32)")
    parser.add_argument("--tolerance", type=float, default=0.01, help="largest allowed difference of the mean full-val losses")
    parser.add_argument("--anchor", type=Path, default=Path(os.environ.get("NANOGPT_ANCHOR") or ANCHOR), help="nanoGPT's folder")
    parser.add_argument("--corpus", type=Path, default=None, help="tiny Shakespeare's input.txt (default ../shared's, else the packaged copy)")
    parser.add_argument("--out", type=Path, default=RESULTS / "vs_nanogpt.json")
    parser.add_argument("--work", type=Path, default=None, help="keep the copies, runs and logs here (default: a temporary folder, removed)")
    args = parser.parse_args()
    if not (args.anchor / "train.py").is_file():
        sys.exit(f"no nanoGPT at {args.anchor}: pass --anchor DIR or set NANOGPT_ANCHOR")
    iters = args.max_iters
    eval_interval = EVAL_INTERVAL if iters >= EVAL_INTERVAL else iters  # nanoGPT writes no checkpoint before its first evaluation after 0
    skip = args.skip if args.skip is not None else (20 if iters >= 100 else 0)

    work = args.work.absolute() if args.work else Path(tempfile.mkdtemp(prefix="vs-nanogpt-"))
    work.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    try:
        corpus = work / "input.txt"
        if args.corpus is not None:
            shutil.copyfile(args.corpus, corpus)
        elif SHARED_CORPUS.is_file():
            shutil.copyfile(SHARED_CORPUS, corpus)
        else:
            from nanogpt.data.bundled import read_bundled

            corpus.write_bytes(read_bundled("tinyshakespeare.txt"))
        copy = nanogpt_copy(args.anchor, work, corpus, logs)
        ours_data = our_data(work, corpus, logs)
        val = np.fromfile(copy / "data" / "shakespeare_char" / "val.bin", dtype=np.uint16)
        for split in ("train", "val"):  # one val split for both: the two preparations must agree
            if (copy / "data" / "shakespeare_char" / f"{split}.bin").read_bytes() != (ours_data / f"{split}.bin").read_bytes():
                sys.exit(f"our {split}.bin differs from nanoGPT's prepare.py's: the comparison would be unfair")

        result: dict[str, Any] = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "cpu": cpu_description(),
            "version": git_version(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "anchor": str(args.anchor),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "torch_threads": torch.get_num_threads(),
            "max_iters": iters,
            "eval_interval": eval_interval,
            "skip": skip,
            "seeds": args.seeds,
            "nanogpt_seed_patch": [new for _, new in SEED_PATCH],
            "runs": [],
        }
        print(f"CPU: {result['cpu']['model_name']}, {result['cpu']['cpus']} cpus, avx512_bf16: {result['cpu']['avx512_bf16']}", flush=True)
        for seed in args.seeds:
            pair: dict[str, Any] = {"seed": seed}
            for tool, runner in (
                ("nanogpt", lambda: run_nanogpt(copy, seed, iters, eval_interval, skip, logs)),
                ("ours", lambda: run_ours(work, seed, iters, eval_interval, skip, logs, args.ours)),
            ):
                r = runner()
                r["tokens_per_sec"] = BATCH_SIZE * BLOCK_SIZE / (r["ms_per_iter"]["mean"] / 1000)
                r["full_val"] = full_val_loss(r.pop("checkpoint"), val)
                pair[tool] = r
                print(
                    f"seed {seed} {tool}: {r['ms_per_iter']['mean']:.1f} ms/iter, full-val loss {r['full_val']['val_loss']:.4f}, {r['wall_s']:.0f} s",
                    flush=True,
                )
            pair["ours_over_nanogpt_tokens_per_sec"] = pair["ours"]["tokens_per_sec"] / pair["nanogpt"]["tokens_per_sec"]
            result["runs"].append(pair)

        nano_losses = [p["nanogpt"]["full_val"]["val_loss"] for p in result["runs"]]
        our_losses = [p["ours"]["full_val"]["val_loss"] for p in result["runs"]]
        nano_ms = statistics.mean(p["nanogpt"]["ms_per_iter"]["mean"] for p in result["runs"])
        our_ms = statistics.mean(p["ours"]["ms_per_iter"]["mean"] for p in result["runs"])
        difference = statistics.mean(our_losses) - statistics.mean(nano_losses)
        result["summary"] = {
            "nanogpt_full_val_mean": statistics.mean(nano_losses),
            "ours_full_val_mean": statistics.mean(our_losses),
            "difference": difference,
            "tolerance": args.tolerance,
            "agree": abs(difference) <= args.tolerance,
            "nanogpt_ms_per_iter": nano_ms,
            "ours_ms_per_iter": our_ms,
            "ours_over_nanogpt_tokens_per_sec": nano_ms / our_ms,
            "ratio_per_seed": [p["ours_over_nanogpt_tokens_per_sec"] for p in result["runs"]],
        }
        write_json(args.out, result)
        cpu = result["cpu"]
        print(f"\nCPU: {cpu['model_name']} ({cpu['cpus']} cpus; avx512_bf16 {'yes' if cpu['avx512_bf16'] else 'no'}), torch {torch.__version__}")
        print(table(result))
        print(f"written to {args.out}")
        if not result["summary"]["agree"]:
            sys.exit(1)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
