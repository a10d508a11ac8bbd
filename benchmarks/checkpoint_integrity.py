"""What checking a checkpoint's bytes costs (issue 32): the zip CRC-32 check that load_checkpoint
makes (testzip over every member) against torch.load itself and against a digest of our own
(sha256 of the file, which a save would have to compute too), on a GPT-2 xl-sized file.

    python benchmarks/checkpoint_integrity.py                    # 1.5 GB of float32 weights
    python benchmarks/checkpoint_integrity.py --gigabytes 0.2    # quicker

Each figure is the median of --repeats, with the file in the page cache (read once first).
Writes JSON to benchmarks/results/checkpoint_integrity.json.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
from pathlib import Path

import torch
from harness import RESULTS, append_json, markdown_table, time_ms

from nanogpt.checkpoint.format import CKPT_FORMAT, peek_iteration, save_checkpoint, verify_archive


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gigabytes", type=float, default=1.5, help="size of the checkpoint's weights (default 1.5, GPT-2 xl)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "checkpoint_integrity.json")
    args = parser.parse_args()

    elements = int(args.gigabytes * 1e9 / 4)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ckpt_last.pt"
        # 48 tensors, as GPT-2 xl has 48 layers: one zip member each.
        state = {"format": CKPT_FORMAT, "iter_num": 1, "model": {f"w{i}": torch.randn(elements // 48) for i in range(48)}}
        save_checkpoint(path, state)
        del state
        size = path.stat().st_size
        sha256_of(path)  # into the page cache
        rows = {
            "torch.load (weights_only)": time_ms(lambda: torch.load(path, map_location="cpu", weights_only=True), args.repeats, warmup=0),
            "zip CRC-32 check (load_checkpoint)": time_ms(lambda: verify_archive(path), args.repeats),
            "sha256 of the file (a digest of our own)": time_ms(lambda: sha256_of(path), args.repeats),
            "the iteration, memory-mapped (resume's choice)": time_ms(lambda: peek_iteration(path), args.repeats),
        }
    gb = size / 1e9
    table = [[name, f"{t.median / 1000:.3f}", f"{t.median / 1000 / gb:.3f}"] for name, t in rows.items()]
    print(f"checkpoint of {gb:.2f} GB, median of {args.repeats}")
    print(markdown_table(["what", "seconds", "seconds per GB"], table, align="lrr"))
    append_json(args.out, {"bytes": size, "repeats": args.repeats, "seconds": {name: t.median / 1000 for name, t in rows.items()}})


if __name__ == "__main__":
    main()
