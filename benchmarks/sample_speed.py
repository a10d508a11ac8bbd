"""Sampling speed: a decode step against the memory floor, our command against nanoGPT's sample.py,
the naive path against the KV cache, and the command's time to its first token.

    python benchmarks/sample_speed.py                                  # every part (tens of minutes on 2 cores)
    python benchmarks/sample_speed.py --parts floor nanogpt --threads 1
    python benchmarks/sample_speed.py --parts paths --tokens 200 --repeats 1 --batch 1

All parts use the `small` model (6 layers, 6 heads, 384 wide, context 256, vocabulary 65) with
random weights and the command's sampling defaults (temperature 0.8, top_k 200).

- floor: in one process, back to back, the matvec floor (the decode step's 25 matrix-vector
  products alone: F.linear of each weight matrix on a 1-row input, which streams the 43 MB of
  float32 weights once) and the batch-1 KV-cache decode step (one step of a generation's loop:
  the model on one token, then the draw). Prints the ratio of their medians.
- nanogpt: `python -m nanogpt.sample` (its defaults: KV cache, window=halve, float32 on a CPU)
  against nanoGPT's own sample.py (a temporary copy of ../shared/anchors/nanoGPT, run on the same
  weights converted to its ckpt.pt and data/shakespeare_char/meta.pkl), per generated token of
  --cli-tokens: nanoGPT's from runs for 1 and for --cli-tokens tokens, the start-up subtracted;
  ours streamed, from its first generated character to its last (and also as nanoGPT's, as a
  check), then once more with system.dtype=bfloat16. First, a check that both hold the same
  model: nanoGPT's model.py loaded from the converted ckpt.pt gives our logits, and greedy
  decoding (top_k=1, nanoGPT's sliding window) gives the same text from both commands.
- paths: naive (kv_cache=false) and KV cache, window=slide (nanoGPT's) and halve, at each batch
  size: tokens/s of Generator.generate, medians of --repeats.
- start: `python -m nanogpt.sample stream=true` from its launch to its first generated character.

Results go to benchmarks/results/sample_speed.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from harness import ANCHOR, RESULTS, ROOT, child_env, machine, markdown_row, markdown_table, run_command, writable_copy, write_json

from nanogpt.checkpoint import CKPT_FORMAT, save_checkpoint
from nanogpt.data import CharTokenizer
from nanogpt.generation import Generator, sample_tokens
from nanogpt.model import GPT, GPTConfig
from nanogpt.system import System

SHAKESPEARE_CHARS = list("\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
SMALL = dict(vocab_size=len(SHAKESPEARE_CHARS), block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.0, bias=False)
PROMPT = "\n"
CLI_PROMPT = "ROMEO:"
PARTS = ("floor", "nanogpt", "paths", "start")

# ----------------------------------------------------------------------------- decode step vs floor


def matvec_floor(model: GPT):
    """The decode step's matrix-vector products alone, in the forward pass's order: every weight
    matrix read once, the least that a float32 decode step can cost."""
    weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    inputs = [torch.randn(1, w.size(1)) for w in weights]

    def floor() -> None:
        for w, x in zip(weights, inputs):
            F.linear(x, w)

    return floor, len(weights), sum(w.numel() * w.element_size() for w in weights)


def decode_steps(model: GPT, tokens: int) -> Iterator[torch.Tensor]:
    """Batch-1 KV-cache generation with the command's defaults (window=halve), restarted every
    `tokens` tokens: each next() is one decode step (1 in 128 also rebuilds the window's cache)."""
    prompt = torch.tensor([[SHAKESPEARE_CHARS.index(PROMPT)]])
    while True:
        rng = torch.Generator().manual_seed(0)
        yield from sample_tokens(model, prompt, tokens, temperature=0.8, top_k=200, generator=rng, vocab_size=len(SHAKESPEARE_CHARS))


def decode_vs_floor(model: GPT, rounds: int, per_round: int = 5) -> dict:
    """Rounds of per_round floor passes then per_round decode steps, each timed alone. The ratio
    is that of the medians (a window rebuild, 1 step in 128, does not move a median); the mean
    step includes the rebuilds."""
    floor, n_matvecs, weight_bytes = matvec_floor(model)
    steps = decode_steps(model, 1000)
    floors: list[float] = []
    decodes: list[float] = []
    round_ratios: list[float] = []
    with torch.inference_mode():
        for _ in range(300):  # warm-up, and past the first window rebuild
            floor()
            next(steps)
        for _ in range(rounds):
            f, d = [], []
            for _ in range(per_round):
                start = time.perf_counter()
                floor()
                f.append(time.perf_counter() - start)
            for _ in range(per_round):
                start = time.perf_counter()
                next(steps)
                d.append(time.perf_counter() - start)
            floors += f
            decodes += d
            round_ratios.append(sum(d) / sum(f))
    floor_ms, step_ms = statistics.median(floors) * 1e3, statistics.median(decodes) * 1e3
    return {
        "matvecs": n_matvecs,
        "weight_mb": weight_bytes / 1e6,
        "rounds": rounds,
        "per_round": per_round,
        "floor_ms": floor_ms,
        "decode_step_ms": step_ms,
        "decode_step_mean_ms": statistics.mean(decodes) * 1e3,
        "ratio": step_ms / floor_ms,
        "median_round_ratio": statistics.median(round_ratios),
        "floor_gb_per_s": weight_bytes / (floor_ms * 1e-3) / 1e9,
    }


# ----------------------------------------------------------------------------- the commands


def write_run(run_dir: Path, model: GPT) -> None:
    """A run folder holding the model as our training writes it."""
    meta = {"tokenizer": "char", "vocab_size": len(SHAKESPEARE_CHARS), "itos": SHAKESPEARE_CHARS}
    state = {"format": CKPT_FORMAT, "model": model.state_dict(), "model_args": SMALL, "dataset_meta": json.dumps(meta)}
    save_checkpoint(run_dir / "ckpt_best.pt", state)


def write_nanogpt_copy(anchor: Path, folder: Path, model: GPT) -> Path:
    """A writable copy of nanoGPT's scripts with the model as its train.py writes it: out/ckpt.pt
    (model_args, the state dict, the config naming the dataset) and data/shakespeare_char/meta.pkl
    (the character vocabulary, which its sample.py reads from the dataset named in the config)."""
    copy = writable_copy(anchor, folder / "nanoGPT")
    (copy / "out").mkdir()
    state_dict = {name: tensor.clone() for name, tensor in model.state_dict().items()}  # tied weights: two entries, as nanoGPT saves them
    torch.save({"model_args": SMALL, "model": state_dict, "config": {"dataset": "shakespeare_char"}}, copy / "out" / "ckpt.pt")
    meta = {"vocab_size": len(SHAKESPEARE_CHARS), "itos": dict(enumerate(SHAKESPEARE_CHARS)), "stoi": {c: i for i, c in enumerate(SHAKESPEARE_CHARS)}}
    (copy / "data" / "shakespeare_char").mkdir(parents=True, exist_ok=True)
    with open(copy / "data" / "shakespeare_char" / "meta.pkl", "wb") as f:
        pickle.dump(meta, f)
    return copy


def ours(run_dir: Path, tokens: int, *options: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "nanogpt.sample",
        f"run_dir={run_dir}",
        "num_samples=1",
        f"max_new_tokens={tokens}",
        f"prompt={CLI_PROMPT}",
        *options,
    ]


def nanogpts(tokens: int, *options: str) -> list[str]:
    return [
        sys.executable,
        "sample.py",
        "--out_dir=out",
        "--device=cpu",
        "--dtype=float32",
        "--compile=False",
        "--num_samples=1",
        f"--max_new_tokens={tokens}",
        f"--start={CLI_PROMPT}",
        *options,
    ]


def nanogpt_text(stdout: str) -> str:
    """The sample in nanoGPT's output: after its 'Loading meta' line, before its separator."""
    return stdout.split("Loading meta from", 1)[1].split("\n", 1)[1].rsplit("\n---------------", 1)[0]


def nanogpt_logits_error(nano_dir: Path, model: GPT) -> float:
    """The largest difference between the logits of nanoGPT's model, loaded from the converted
    ckpt.pt with its own model.py, and ours, over a random full context."""
    spec = importlib.util.spec_from_file_location("nanogpt_anchor_model", nano_dir / "model.py")
    anchor = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(anchor)
    state = torch.load(nano_dir / "out" / "ckpt.pt", map_location="cpu")
    theirs = anchor.GPT(anchor.GPTConfig(**state["model_args"]))
    theirs.load_state_dict(state["model"])
    idx = torch.randint(0, len(SHAKESPEARE_CHARS), (1, SMALL["block_size"]), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return float((theirs.eval()(idx, idx)[0] - model(idx, idx)[0]).abs().max())


def streamed_ms_per_token(run_dir: Path, tokens: int, env: dict[str, str], *options: str) -> float:
    """Our command with stream=true, timed from its first generated character to its last (one
    character per token): the time of tokens - 1 tokens, start-up and exit excluded."""
    proc = subprocess.Popen(ours(run_dir, tokens, "stream=true", *options), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first_token = proc.stdout.read(len(CLI_PROMPT) + 1)
    first = time.perf_counter()
    other_tokens = proc.stdout.read(tokens - 1)  # blocks until the last token is printed
    last = time.perf_counter()
    proc.stdout.read()
    if proc.wait() != 0 or len(first_token) + len(other_tokens) != len(CLI_PROMPT) + tokens:
        raise RuntimeError(f"nanogpt.sample stream=true failed: {proc.stderr.read().decode()[-2000:]}")
    return (last - first) / (tokens - 1) * 1e3


def cli_vs_nanogpt(model: GPT, anchor: Path, tokens: int, repeats: int, env: dict[str, str]) -> dict:
    """Milliseconds per generated token of each command. nanoGPT's prints its sample at the end:
    (time for `tokens` tokens - time for 1) / (tokens - 1), medians of `repeats` runs for 1 token
    and one run for `tokens` (its start-up is under 1% of that run). Ours streams: timed from its
    first generated character (medians of `repeats`), and, as a check, as nanoGPT's is."""
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        run_dir.mkdir()
        write_run(run_dir, model)
        nano_dir = write_nanogpt_copy(anchor, Path(tmp), model)
        # The same model in both: the same logits, and the same text from greedy decoding over the
        # same sliding window (a weak check on its own: random weights repeat a character or two).
        logits_error = nanogpt_logits_error(nano_dir, model)
        greedy = 100
        _, our_greedy = run_command(ours(run_dir, greedy, "top_k=1", "window=slide"), ROOT, env)
        _, nano_greedy = run_command(nanogpts(greedy, "--top_k=1"), nano_dir, env)
        same_text = our_greedy.removesuffix("\n") == nanogpt_text(nano_greedy)
        print(
            f"same model: logits differ by at most {logits_error:.1e}; greedy, {greedy} tokens: "
            f"{'the same text' if same_text else 'DIFFERENT texts'}",
            flush=True,
        )
        result: dict = {"tokens": tokens, "logits_max_abs_diff": logits_error, "greedy_tokens": greedy, "greedy_same_text": same_text}
        commands = (("ours", lambda n: ours(run_dir, n), ROOT, repeats), ("nanogpt", nanogpts, nano_dir, 1))
        for name, command, cwd, runs in commands:
            one = [run_command(command(1), cwd, env)[0] for _ in range(repeats)]
            full = [run_command(command(tokens), cwd, env)[0] for _ in range(runs)]
            per_token = (statistics.median(full) - statistics.median(one)) / (tokens - 1) * 1e3
            result[name] = {"one_token_s": one, "all_tokens_s": full, "ms_per_token_by_difference": per_token, "ms_per_token": per_token}
            print(
                f"{name:>8}: 1 token {statistics.median(one):.2f} s, {tokens} tokens {statistics.median(full):.2f} s: "
                f"{per_token:.2f} ms per generated token",
                flush=True,
            )
        streamed = [streamed_ms_per_token(run_dir, tokens, env) for _ in range(repeats)]
        result["ours"].update(ms_per_token=statistics.median(streamed), streamed_ms_per_token=streamed)
        print(f"{'ours':>8}: stream=true, from the first generated character: {statistics.median(streamed):.2f} ms per token", flush=True)
        # Not the default on a CPU: the blocks' weights stored in bfloat16 (half the bytes per token).
        bf16 = [streamed_ms_per_token(run_dir, tokens, env, "system.dtype=bfloat16") for _ in range(repeats)]
        result["ours_bfloat16"] = {"ms_per_token": statistics.median(bf16), "streamed_ms_per_token": bf16}
        print(f"{'ours':>8}: the same with system.dtype=bfloat16: {statistics.median(bf16):.2f} ms per token", flush=True)
    result["speedup"] = result["nanogpt"]["ms_per_token"] / result["ours"]["ms_per_token"]
    result["speedup_bfloat16"] = result["nanogpt"]["ms_per_token"] / result["ours_bfloat16"]["ms_per_token"]
    return result


def cli_first_token(run_dir: Path, env: dict[str, str]) -> float:
    """Seconds from launching `python -m nanogpt.sample stream=true` to its first generated character."""
    start = time.perf_counter()
    proc = subprocess.Popen(ours(run_dir, 50, "stream=true"), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    seen = proc.stdout.read(len(CLI_PROMPT) + 1)
    elapsed = time.perf_counter() - start
    proc.kill()
    proc.wait()
    if len(seen) <= len(CLI_PROMPT):
        raise RuntimeError(f"nanogpt.sample printed no token: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
    return elapsed


# ----------------------------------------------------------------------------- naive vs KV cache


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


def paths_table(model: GPT, tokens: int, batches: list[int], repeats: int) -> list[dict]:
    generator = Generator(model, CharTokenizer(SHAKESPEARE_CHARS), System(device="cpu", dtype="float32", compile=False))
    paths = [("naive", False, "slide"), ("kv", True, "slide"), ("naive", False, "halve"), ("kv", True, "halve")]
    rows = []
    # The rows are printed as they are measured: a whole table takes minutes.
    print(markdown_table(["path", "window", "batch", "tokens/s", "first token ms", "vs naive slide", "vs naive same window"], [], "llrrrrr"))
    for batch in batches:
        time_generation(generator, 8, batch, True, "slide")  # warm-up: first-call allocations
        by_path: dict[tuple[str, str], float] = {}
        for name, kv_cache, window in paths:
            runs = [time_generation(generator, tokens, batch, kv_cache, window) for _ in range(repeats)]
            row = {
                "path": name,
                "window": window,
                "batch": batch,
                "tokens": tokens,
                "tokens_per_s": statistics.median(r["tokens_per_s"] for r in runs),
                "first_token_ms": statistics.median(r["first_token_s"] for r in runs) * 1e3,
                "runs": runs,
            }
            by_path[name, window] = row["tokens_per_s"]
            row["speedup_vs_naive_slide"] = row["tokens_per_s"] / by_path["naive", "slide"]
            row["speedup_vs_naive_same_window"] = row["tokens_per_s"] / by_path["naive", window]
            rows.append(row)
            cells = [f"{row['tokens_per_s']:.1f}", f"{row['first_token_ms']:.1f}", f"{row['speedup_vs_naive_slide']:.1f}x"]
            print(markdown_row([name, window, batch, *cells, f"{row['speedup_vs_naive_same_window']:.1f}x"]), flush=True)
    return rows


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--rounds", type=int, default=200, help="floor: rounds of 5 floor passes and 5 decode steps")
    parser.add_argument("--cli-tokens", type=int, default=1000, help="nanogpt: tokens per command run")
    parser.add_argument("--anchor", type=Path, default=ANCHOR, help="nanogpt: nanoGPT's folder (read-only; copied)")
    parser.add_argument("--tokens", type=int, default=1000, help="paths: tokens per generation")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="paths: batch sizes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads, here and in the commands (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=RESULTS / "sample_speed.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    env = child_env({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})

    torch.manual_seed(0)
    model = GPT(GPTConfig(**SMALL)).eval()
    # The load average says how shared the machine was: timings of a shared machine vary by 2x.
    result: dict = {"machine": machine(), "torch": torch.__version__, "model": SMALL, "repeats": args.repeats, "load_average_before": os.getloadavg()}
    print(f"{result['machine']}; load average {result['load_average_before'][0]:.1f}", flush=True)

    if "floor" in args.parts:
        floor = result["decode_vs_floor"] = decode_vs_floor(model, args.rounds)
        print(
            f"\n{'':>26} {'median ms':>9}\n{'matvec floor':>26} {floor['floor_ms']:>9.3f}   "
            f"({floor['matvecs']} products, {floor['weight_mb']:.1f} MB at {floor['floor_gb_per_s']:.1f} GB/s)\n"
            f"{'decode step (batch 1, KV)':>26} {floor['decode_step_ms']:>9.3f}   "
            f"(mean with window rebuilds {floor['decode_step_mean_ms']:.3f})\n"
            f"{'decode step / floor':>26} {floor['ratio']:>9.2f}x  (median of per-round ratios {floor['median_round_ratio']:.2f}x)",
            flush=True,
        )
    if "nanogpt" in args.parts:
        print(f"\npython -m nanogpt.sample vs nanoGPT's sample.py, {CLI_PROMPT!r}, per generated token:", flush=True)
        vs = result["cli_vs_nanogpt"] = cli_vs_nanogpt(model, args.anchor, args.cli_tokens, args.repeats, env)
        print(
            f"{'':>8}  ours {vs['ours']['ms_per_token']:.2f} ms, nanoGPT {vs['nanogpt']['ms_per_token']:.2f} ms: "
            f"{vs['speedup']:.1f}x (bfloat16 weights: {vs['speedup_bfloat16']:.1f}x)",
            flush=True,
        )
    if "paths" in args.parts:
        print(f"\n{args.tokens} tokens; medians of {args.repeats}", flush=True)
        result["rows"] = paths_table(model, args.tokens, args.batch, args.repeats)
    if "start" in args.parts:
        with tempfile.TemporaryDirectory() as tmp:
            write_run(Path(tmp), model)
            starts = [cli_first_token(Path(tmp), env) for _ in range(args.repeats)]
        result["cli_first_token_s"] = {"median": statistics.median(starts), "runs": starts}
        print(f"\npython -m nanogpt.sample stream=true, launch to first token: {statistics.median(starts):.2f} s (median of {len(starts)})")

    result["load_average_after"] = os.getloadavg()
    print(f"load average {result['load_average_after'][0]:.1f}")
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
