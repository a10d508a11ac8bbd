"""What drawing a training batch costs, next to the training step it feeds.

    python benchmarks/data_loader.py                # on the GPU where there is one (--device cpu: the CPU)

For each shape (the README CPU run, the fast CPU preset, the `small` model) it times, in this
process, the loader's work per optimizer step (draw the offsets from the data stream's generator,
gather the windows from the memory-mapped token file) and a whole training step (forward,
backward, clipping, optimizer) of the matching model on random tokens. Medians of --repeats
timings. Prints a table and appends JSON to benchmarks/results/data_loader.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from train_throughput import machine, resolve_device, synchronize  # noqa: E402

from nanogpt.config import OptimizerConfig  # noqa: E402
from nanogpt.data import TokenFile  # noqa: E402
from nanogpt.model import GPT, GPTConfig  # noqa: E402
from nanogpt.optim import build_optimizer  # noqa: E402

MODERN = dict(position="rope", norm="rmsnorm", qk_norm=True, activation="relu2", tie_embeddings=False, zero_init_proj=True)
# name, (n_layer, n_head, n_embd), batch, block, model options, optimizer
SHAPES = [
    ("README CPU run (mini)", (4, 4, 128), 12, 64, {}, "adamw"),
    ("shakespeare_char_cpu_fast", (3, 4, 128), 16, 128, MODERN, "muon"),
    ("small", (6, 6, 384), 64, 256, {}, "adamw"),
]


def median_ms(fn, repeats: int, device: str) -> float:
    fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        t = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20, help="timed steps per shape (the small model's are seconds each)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto (as system.device)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "data_loader.json")
    args = parser.parse_args()
    device = resolve_device(args.device)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.bin"
        np.random.default_rng(0).integers(0, 65, 1_000_000, dtype=np.uint16).tofile(path)  # tiny Shakespeare's size
        for name, (n_layer, n_head, n_embd), batch, block, options, optimizer_name in SHAPES:
            tokens = TokenFile(path, block, device)
            generator = torch.Generator().manual_seed(0)
            load_ms = median_ms(lambda: tokens.windows(tokens.draw_offsets(batch, generator)), 200, device)

            torch.manual_seed(0)
            model = GPT(GPTConfig(vocab_size=65, block_size=block, n_layer=n_layer, n_head=n_head, n_embd=n_embd, **options)).to(device)
            optimizer = build_optimizer(model, OptimizerConfig(name=optimizer_name), device.split(":")[0])
            x, y = tokens.batch(batch, generator)

            def step() -> None:
                _, loss = model(x, y)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            step_ms = median_ms(step, args.repeats if n_embd < 384 or device != "cpu" else max(3, args.repeats // 5), device)
            rows.append({"shape": name, "batch": batch, "block": block, "load_ms": load_ms, "step_ms": step_ms, "share": load_ms / step_ms})

    print(f"{'shape':<28} {'batch x block':>13} {'load ms':>9} {'step ms':>9} {'share':>7}")
    for r in rows:
        print(f"{r['shape']:<28} {str(r['batch']) + ' x ' + str(r['block']):>13} {r['load_ms']:>9.3f} {r['step_ms']:>9.1f} {r['share']:>7.2%}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(args.out.read_text()) if args.out.exists() else []
    args.out.write_text(json.dumps(existing + [{"machine": machine(), "device": device, "threads": torch.get_num_threads(), "rows": rows}], indent=1) + "\n")


if __name__ == "__main__":
    main()
