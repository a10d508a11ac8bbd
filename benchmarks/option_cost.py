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
from pathlib import Path

import torch
from data_loader import MODERN
from harness import RESULTS, Timing, append_json, markdown_table, resolve_device, time_ms

from nanogpt.config import OptimizerConfig
from nanogpt.model import GPT, GPTConfig
from nanogpt.optim import build_optimizer


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
    parser.add_argument("--out", type=Path, default=RESULTS / "option_cost.json")
    args = parser.parse_args()
    args.device = resolve_device(args.device)

    variants = {"gpt2 (AdamW)": ({}, "adamw"), "all options (AdamW)": (MODERN, "adamw"), "all options + Muon": (MODERN, "muon")}
    for key in MODERN:
        if key != "zero_init_proj":  # an initialisation: no cost per step
            variants[f"all but {key} (AdamW)"] = ({k: v for k, v in MODERN.items() if k != key}, "adamw")
    steps = {name: make_step(options, opt, args) for name, (options, opt) in variants.items()}
    for step in steps.values():
        step()
    times = {name: Timing([]) for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            times[name].ms.append(time_ms(lambda: (step(), step()), 1, warmup=0, device=args.device).median / 2)

    rows = {name: t.median for name, t in times.items()}
    print(f"{args.n_layer}/{args.n_head}/{args.n_embd}, batch {args.batch} x {args.block}, float32, {args.device}, {torch.get_num_threads()} threads")
    print(markdown_table(["variant", "ms/step"], [[name, f"{ms:.1f}"] for name, ms in rows.items()]))
    append_json(args.out, {"args": vars(args) | {"out": str(args.out)}, "ms_per_step": rows})


if __name__ == "__main__":
    main()
