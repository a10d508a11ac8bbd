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
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from train_throughput import resolve_device, synchronize  # noqa: E402

from nanogpt.checkpoint import CKPT_FORMAT, capture_rng_state, save_checkpoint  # noqa: E402
from nanogpt.config import OptimizerConfig  # noqa: E402
from nanogpt.model import GPT, GPTConfig  # noqa: E402
from nanogpt.optim import build_optimizer  # noqa: E402


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
    step_times = []
    for i in range(args.steps + 1):
        t0 = time.perf_counter()
        _, loss = model(x, x)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(args.device)
        if i:
            step_times.append(time.perf_counter() - t0)
    state = {
        "format": CKPT_FORMAT, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "rng": [capture_rng_state()], "config": "{}", "iter_num": 1,
    }
    write_times = []
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            save_checkpoint(Path(tmp) / "ckpt_last.pt", state)
            write_times.append(time.perf_counter() - t0)
        size = (Path(tmp) / "ckpt_last.pt").stat().st_size
    write_s, step_s = statistics.median(write_times), statistics.median(step_times)
    share = write_s / (write_s + args.eval_interval * step_s)
    result = {**vars(args), "checkpoint_mb": size / 2**20, "write_s": write_s, "step_s": step_s, "share_of_interval": share}
    print(f"{'checkpoint':>12} {'write+fsync':>12} {'step':>10} {'interval':>10} {'share':>7}")
    print(f"{size / 2**20:>10.1f}MB {write_s * 1000:>10.0f}ms {step_s * 1000:>8.0f}ms {args.eval_interval * step_s:>9.1f}s {share:>7.2%}")
    out = ROOT / "benchmarks" / "results" / "checkpoint_cost.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
