"""What a checkpoint costs: the whole atomic write (torch.save to a temp file, fsync, rename,
fsync of the folder) against the training time between two checkpoints.

    python benchmarks/checkpoint_cost.py                       # the `small` model, eval_interval 250
    python benchmarks/checkpoint_cost.py --n-layer 12 --n-head 12 --n-embd 768 --block-size 1024 --vocab 50304
    python benchmarks/checkpoint_cost.py --device cpu          # on the CPU where there is a GPU (default: auto)

Builds the model with a populated AdamW state (one real step), times save_checkpoint over
--repeats writes (median), times a training step (median of --steps after one warm-up), and
prints the write as a share of eval_interval steps. Writes JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from harness import RESULTS, ROOT, markdown_table, resolve_device, time_ms, write_json

from nanogpt.checkpoint import CKPT_FORMAT, capture_rng_state, save_checkpoint
from nanogpt.config import OptimizerConfig
from nanogpt.model import GPT, GPTConfig
from nanogpt.optim import build_optimizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-layer", type=int, default=6)
    parser.add_argument("--n-head", type=int, default=6)
    parser.add_argument("--n-embd", type=int, default=384)
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=65)
    parser.add_argument("--eval-interval", type=int, default=250)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto (as system.device)")
    args = parser.parse_args()
    args.device = resolve_device(args.device)

    model = GPT(GPTConfig(vocab_size=args.vocab, block_size=args.block_size, n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd))
    model.to(args.device)
    optimizer = build_optimizer(model, OptimizerConfig(), args.device.split(":")[0])
    x = torch.randint(0, args.vocab, (args.batch_size, args.block_size), device=args.device)

    def step() -> None:
        _, loss = model(x, x)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step_s = time_ms(step, args.steps, device=args.device).median / 1000  # after one warm-up step, which also fills AdamW's state
    state = {
        "format": CKPT_FORMAT,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": [capture_rng_state()],
        "config": "{}",
        "iter_num": 1,
    }
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
        write_s = time_ms(lambda: save_checkpoint(Path(tmp) / "ckpt_last.pt", state), args.repeats, warmup=0).median / 1000
        size = (Path(tmp) / "ckpt_last.pt").stat().st_size
    share = write_s / (write_s + args.eval_interval * step_s)
    result = {**vars(args), "checkpoint_mb": size / 2**20, "write_s": write_s, "step_s": step_s, "share_of_interval": share}
    row = [f"{size / 2**20:.1f} MB", f"{write_s * 1000:.0f} ms", f"{step_s * 1000:.0f} ms", f"{args.eval_interval * step_s:.1f} s", f"{share:.2%}"]
    print(markdown_table(["checkpoint", "write+fsync", "step", "interval", "share"], [row], align="rrrrr"))
    write_json(RESULTS / "checkpoint_cost.json", result)


if __name__ == "__main__":
    main()
