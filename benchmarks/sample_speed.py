"""Sampling speed: the naive path against the KV cache, and the CLI's time to its first token.

    python benchmarks/sample_speed.py                      # the full table (tens of minutes on 2 cores)
    python benchmarks/sample_speed.py --tokens 200 --repeats 1 --batch 1

The `small` model (6 layers, 6 heads, 384 wide, context 256, vocabulary 65) with random weights
generates --tokens tokens after a one-character prompt with the CLI's sampling defaults
(temperature 0.8, top_k 200), at each batch size, on every path: naive (kv_cache=false) and KV
cache, with window=slide (nanoGPT's behaviour) and window=halve. Each configuration runs --repeats
times; the table shows medians. Then the real `python -m nanogpt.sample stream=true` runs on a
checkpoint of that model, timed from its launch to its first generated character.
Results go to benchmarks/results/sample_speed.json.
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

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's nanogpt, whichever one is installed

from nanogpt.checkpoint import CKPT_FORMAT, save_checkpoint
from nanogpt.data import CharTokenizer
from nanogpt.generation import Generator
from nanogpt.model import GPT, GPTConfig
from nanogpt.system import System, cpu_flags

SHAKESPEARE_CHARS = list("\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
SMALL = dict(vocab_size=len(SHAKESPEARE_CHARS), block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.0, bias=False)
PROMPT = "\n"


def time_generation(generator: Generator, tokens: int, batch: int, kv_cache: bool, window: str) -> dict[str, float]:
    """Wall time of one generate() call, and the time until its first generated text."""
    first: list[float] = []

    def on_text(piece: str) -> None:
        if piece != PROMPT and not first:
            first.append(time.perf_counter())

    start = time.perf_counter()
    generator.generate(PROMPT, num_samples=batch, max_new_tokens=tokens, kv_cache=kv_cache, window=window, on_text=on_text)
    total = time.perf_counter() - start
    return {"tokens_per_s": batch * tokens / total, "first_token_s": first[0] - start, "seconds": total}


def cli_first_token(run_dir: Path) -> float:
    """Seconds from launching `python -m nanogpt.sample stream=true` to its first generated character."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "nanogpt.sample", f"run_dir={run_dir}", "stream=true", "num_samples=1", "max_new_tokens=50", "prompt=ROMEO:"]
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    seen = proc.stdout.read(len("ROMEO:") + 1)
    elapsed = time.perf_counter() - start
    proc.kill()
    proc.wait()
    if len(seen) <= len("ROMEO:"):
        raise RuntimeError(f"nanogpt.sample printed no token: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
    return elapsed


def machine() -> str:
    flags = cpu_flags()
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{os.cpu_count()}-core {cpu}, {isa}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--skip-cli", action="store_true", help="skip the CLI start-up measurement")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sample_speed.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = GPT(GPTConfig(**SMALL)).eval()
    generator = Generator(model, CharTokenizer(SHAKESPEARE_CHARS), System(device="cpu", dtype="float32", compile=False))
    paths = [("naive", False, "slide"), ("kv", True, "slide"), ("naive", False, "halve"), ("kv", True, "halve")]
    rows = []
    print(f"{machine()}; {args.tokens} tokens; medians of {args.repeats}", flush=True)
    print(f"{'path':>6} {'window':>6} {'batch':>5} {'tokens/s':>9} {'first token ms':>14} {'vs naive slide':>14} {'vs naive same window':>20}")
    for batch in args.batch:
        time_generation(generator, 8, batch, True, "slide")  # warm-up: first-call allocations
        by_path: dict[tuple[str, str], float] = {}
        for name, kv_cache, window in paths:
            runs = [time_generation(generator, args.tokens, batch, kv_cache, window) for _ in range(args.repeats)]
            row = {
                "path": name,
                "window": window,
                "batch": batch,
                "tokens": args.tokens,
                "tokens_per_s": statistics.median(r["tokens_per_s"] for r in runs),
                "first_token_ms": statistics.median(r["first_token_s"] for r in runs) * 1e3,
                "runs": runs,
            }
            by_path[name, window] = row["tokens_per_s"]
            row["speedup_vs_naive_slide"] = row["tokens_per_s"] / by_path["naive", "slide"]
            row["speedup_vs_naive_same_window"] = row["tokens_per_s"] / by_path["naive", window]
            rows.append(row)
            print(
                f"{name:>6} {window:>6} {batch:>5} {row['tokens_per_s']:>9.1f} {row['first_token_ms']:>14.1f} "
                f"{row['speedup_vs_naive_slide']:>13.1f}x {row['speedup_vs_naive_same_window']:>19.1f}x",
                flush=True,
            )

    result = {"machine": machine(), "model": SMALL, "prompt": PROMPT, "repeats": args.repeats, "rows": rows}
    if not args.skip_cli:
        with tempfile.TemporaryDirectory() as tmp:
            run_dir = Path(tmp)
            meta = {"tokenizer": "char", "vocab_size": len(SHAKESPEARE_CHARS), "itos": SHAKESPEARE_CHARS}
            state = {"format": CKPT_FORMAT, "model": model.state_dict(), "model_args": SMALL, "dataset_meta": json.dumps(meta)}
            save_checkpoint(run_dir / "ckpt_best.pt", state)
            starts = [cli_first_token(run_dir) for _ in range(args.repeats)]
        result["cli_first_token_s"] = {"median": statistics.median(starts), "runs": starts}
        print(f"python -m nanogpt.sample stream=true, launch to first token: {statistics.median(starts):.2f} s (median of {len(starts)})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
