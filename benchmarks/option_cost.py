"""What each speedrun model option and Muon cost per training step, in this process.

    python benchmarks/option_cost.py                     # 4/4/128, batch 16, context 128 (the CPU presets' shapes)
    python benchmarks/option_cost.py --device cpu        # on the CPU where there is a GPU (default: auto)

Builds the model with every option off (`gpt2`), with all of them, and with all but one, times a
whole training step (forward, backward, clipping, optimizer) on random tokens, interleaving the
variants so that the machine's load hits them alike, and prints the median per variant. Appends
JSON to benchmarks/results/option_cost.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from data_loader import MODERN  # noqa: E402
from train_throughput import machine, resolve_device, synchronize  # noqa: E402

from nanogpt.config import OptimizerConfig  # noqa: E402
from nanogpt.model import GPT, GPTConfig  # noqa: E402
from nanogpt.optim import build_optimizer  # noqa: E402


def make_step(options: dict, optimizer_name: str, args: argparse.Namespace):
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=65, block_size=args.block, n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd, **options)
    model = GPT(config).to(args.device)
    optimizer = build_optimizer(model, OptimizerConfig(name=optimizer_name), args.device.split(":")[0])
    x, y = torch.randint(0, 65, (2, args.batch, args.block), device=args.device)

    def step() -> None:
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(args.device)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--block", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=8, help="timed rounds of two steps per variant")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto (as system.device)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "option_cost.json")
    args = parser.parse_args()
    args.device = resolve_device(args.device)

    variants = {"gpt2 (AdamW)": ({}, "adamw"), "all options (AdamW)": (MODERN, "adamw"), "all options + Muon": (MODERN, "muon")}
    for key in MODERN:
        if key != "zero_init_proj":  # an initialisation: no cost per step
            variants[f"all but {key} (AdamW)"] = ({k: v for k, v in MODERN.items() if k != key}, "adamw")
    steps = {name: make_step(options, opt, args) for name, (options, opt) in variants.items()}
    for step in steps.values():
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            step()
            times[name].append((time.perf_counter() - start) / 2 * 1000)

    rows = {name: statistics.median(t) for name, t in times.items()}
    print(f"{args.n_layer}/{args.n_head}/{args.n_embd}, batch {args.batch} x {args.block}, float32, {args.device}, {torch.get_num_threads()} threads")
    print(f"{'variant':<32} {'ms/step':>8}")
    for name, ms in rows.items():
        print(f"{name:<32} {ms:>8.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(args.out.read_text()) if args.out.exists() else []
    args.out.write_text(json.dumps(existing + [{"machine": machine(), "args": vars(args) | {"out": str(args.out)}, "ms_per_step": rows}], indent=1) + "\n")


if __name__ == "__main__":
    main()
