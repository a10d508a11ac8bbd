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
import tempfile
from pathlib import Path

import numpy as np
import torch
from harness import RESULTS, append_json, markdown_table, resolve_device, time_ms

from nanogpt.config import OptimizerConfig
from nanogpt.data import TokenFile
from nanogpt.model import GPT, GPTConfig
from nanogpt.optim import build_optimizer

MODERN = dict(position="rope", norm="rmsnorm", qk_norm=True, activation="relu2", tie_embeddings=False, zero_init_proj=True)
# name, (n_layer, n_head, n_embd), batch, block, model options, optimizer
SHAPES = [
    ("README CPU run (mini)", (4, 4, 128), 12, 64, {}, "adamw"),
    ("shakespeare_char_cpu_fast", (3, 4, 128), 16, 128, MODERN, "muon"),
    ("small", (6, 6, 384), 64, 256, {}, "adamw"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20, help="timed steps per shape (the small model's are seconds each)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto (as system.device)")
    parser.add_argument("--out", type=Path, default=RESULTS / "data_loader.json")
    args = parser.parse_args()
    device = resolve_device(args.device)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.bin"
        np.random.default_rng(0).integers(0, 65, 1_000_000, dtype=np.uint16).tofile(path)  # tiny Shakespeare's size
        for name, (n_layer, n_head, n_embd), batch, block, options, optimizer_name in SHAPES:
            tokens = TokenFile(path, block, device)
            generator = torch.Generator().manual_seed(0)
            load_ms = time_ms(lambda: tokens.windows(tokens.draw_offsets(batch, generator)), 200, device=device).median

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

            repeats = args.repeats if n_embd < 384 or device != "cpu" else max(3, args.repeats // 5)
            step_ms = time_ms(step, repeats, device=device).median
            rows.append({"shape": name, "batch": batch, "block": block, "load_ms": load_ms, "step_ms": step_ms, "share": load_ms / step_ms})

    header = ["shape", "batch x block", "load ms", "step ms", "share"]
    print(
        markdown_table(
            header, [[r["shape"], f"{r['batch']} x {r['block']}", f"{r['load_ms']:.3f}", f"{r['step_ms']:.1f}", f"{r['share']:.2%}"] for r in rows]
        )
    )
    append_json(args.out, {"device": device, "threads": torch.get_num_threads(), "rows": rows})


if __name__ == "__main__":
    main()
