"""The per-iteration work of nanoGPT's train.py on a CPU, as a same-machine baseline.

    python benchmarks/nanogpt_baseline.py                       # the README CPU run's shapes
    python benchmarks/nanogpt_baseline.py --n-layer 6 --n-head 6 --n-embd 384 --block-size 256 --batch-size 64 --iters 4

nanoGPT's own script cannot be installed here, so this reproduces what its loop does each
iteration with the same model architecture (ours, which has the same operations): a batch built
row by row with torch.stack from a freshly opened memmap, AdamW without the fused kernel (nanoGPT
enables it on CUDA only), gradient clipping, and loss.item() every iteration (log_interval=1).
Prints the median ms/iter and tokens/s and writes JSON to benchmarks/results/nanogpt_baseline.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nanogpt.model import GPT, GPTConfig

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=12)
    parser.add_argument("--iters", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()

    torch.manual_seed(1337)
    with tempfile.TemporaryDirectory() as tmp:
        data_path = Path(tmp) / "train.bin"
        np.random.default_rng(0).integers(0, 65, 1_000_000, dtype=np.uint16).tofile(data_path)

        def get_batch() -> tuple[torch.Tensor, torch.Tensor]:
            data = np.memmap(data_path, dtype=np.uint16, mode="r")
            ix = torch.randint(len(data) - args.block_size, (args.batch_size,))
            x = torch.stack([torch.from_numpy(data[i : i + args.block_size].astype(np.int64)) for i in ix])
            y = torch.stack([torch.from_numpy(data[i + 1 : i + 1 + args.block_size].astype(np.int64)) for i in ix])
            return x, y

        model = GPT(GPTConfig(vocab_size=65, block_size=args.block_size, n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd))
        decay = [p for p in model.parameters() if p.dim() >= 2]
        other = [p for p in model.parameters() if p.dim() < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}], lr=1e-3, betas=(0.9, 0.99)
        )
        x, y = get_batch()
        times = []
        for it in range(args.warmup + args.iters):
            t0 = time.perf_counter()
            _, loss = model(x, y)
            x, y = get_batch()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss.item()
            if it >= args.warmup:
                times.append(time.perf_counter() - t0)
    ms = statistics.median(times) * 1000
    tokens = args.batch_size * args.block_size / (ms / 1000)
    result = {**vars(args), "ms_per_iter": ms, "tokens_per_sec": tokens}
    print(f"nanoGPT-equivalent loop: {ms:.1f} ms/iter, {tokens:,.0f} tokens/s (median of {len(times)} iterations)")
    out = ROOT / "benchmarks" / "results" / "nanogpt_baseline.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
