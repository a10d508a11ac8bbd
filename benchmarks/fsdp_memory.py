"""What system.strategy=fsdp saves per rank against ddp: the bytes of weights, gradients and
optimizer state each rank holds, its peak RSS, and the time of a training step.

    python benchmarks/fsdp_memory.py                  # gpt2-medium size (24/16/1024, vocab 50304), float32, 2 gloo ranks
    python benchmarks/fsdp_memory.py --smoke          # a tiny model: seconds, to check the script
    python benchmarks/fsdp_memory.py --warmup 1 --steps 2 --tokens 256   # fewer steps, more compute per step

For each strategy (ddp, then fsdp) it spawns --world-size fresh CPU processes (gloo), so that each
process's peak RSS is its own strategy's. Each builds the same GPT (same seed) and wraps it as the
trainer does (nanogpt.training.setup.wrap_model: DDP; nanogpt.fsdp.shard_model: FSDP2, one unit per block),
with the trainer's optimizer (nanogpt.optim.build_optimizer: fused AdamW, default settings), then
takes --warmup + --steps training steps (forward, backward, clip_grad_norm_ at 1.0, AdamW step) on
random batches of --batch-size x --tokens tokens; each rank draws its own (seeded by rank, the same
for both strategies, so their losses must agree to float rounding).

After the last step's optimizer step, before zero_grad, each rank sums the storage bytes of what
it holds: parameters, their .grad and every tensor in optimizer.state (DTensors by .to_local(),
this rank's shard; a storage that several tensors view is counted once). DDP's all-reduce buckets
(a second copy of the gradients, as gradient_as_bucket_view is off) are listed apart. Peak RSS is
resource.getrusage's ru_maxrss. The step time is the median of the --steps after warm-up. Prints a
markdown table and writes JSON to benchmarks/results/fsdp_memory.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from harness import RESULTS, markdown_table, write_json
from torch.distributed.tensor import DTensor

from nanogpt.config import OptimizerConfig
from nanogpt.distributed import Dist
from nanogpt.fsdp import shard_model
from nanogpt.model import GPT, GPTConfig
from nanogpt.optim import build_optimizer
from nanogpt.system import System, cpu_model_name
from nanogpt.training.setup import wrap_model

GPT2_MEDIUM = dict(n_layer=24, n_head=16, n_embd=1024, vocab=50304, block_size=1024)
SMOKE = dict(n_layer=2, n_head=2, n_embd=64, vocab=512, block_size=64, tokens=32, steps=2, warmup=1)
MB = 2**20


def local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if isinstance(t, DTensor) else t


def held_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """Bytes of storage this rank holds for parameters, gradients and optimizer state (a storage
    counted once, under the first kind that views it), and the same as numel x element size."""
    seen: set[int] = set()
    out = {}
    kinds = {
        "params": [p for p in model.parameters()],
        "grads": [p.grad for p in model.parameters() if p.grad is not None],
        "optimizer": [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)],
    }
    for kind, tensors in kinds.items():
        storage = logical = 0
        for t in map(local, tensors):
            logical += t.numel() * t.element_size()
            s = t.untyped_storage()
            if s.data_ptr() not in seen:
                seen.add(s.data_ptr())
                storage += s.nbytes()
        out[kind], out[f"{kind}_logical"] = storage, logical
    return out


def rss_now() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def worker(rank: int, strategy: str, args: argparse.Namespace, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.world_size))
    dist.init_process_group("gloo", rank=rank, world_size=args.world_size)
    world = Dist(rank=rank, local_rank=rank, world_size=args.world_size)
    system = System(device="cpu", dtype="float32", compile=False)
    sharded = strategy == "fsdp"

    torch.manual_seed(1337)
    config = GPTConfig(vocab_size=args.vocab, block_size=args.block_size, n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd)
    raw_model = GPT(config)
    n_params = sum(p.numel() for p in raw_model.parameters())
    rss_built = rss_now()
    if sharded:
        shard_model(raw_model, system, world.world_size)  # before the optimizer, as the trainer does
    model = wrap_model(raw_model, system, world, sharded)
    optimizer = build_optimizer(raw_model, OptimizerConfig(), "cpu")

    gen = torch.Generator().manual_seed(rank)
    times, losses, held = [], [], {}
    for step in range(args.warmup + args.steps):
        x = torch.randint(0, args.vocab, (args.batch_size, args.tokens + 1), generator=gen)
        t0 = time.perf_counter()
        _, loss = model(x[:, :-1], x[:, 1:])
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), 1.0)
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()
        optimizer.step()
        elapsed = time.perf_counter() - t0
        if step == args.warmup + args.steps - 1:
            held = held_bytes(raw_model, optimizer)
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step >= args.warmup:
            times.append(elapsed)
        if rank == 0:
            print(f"  {strategy} step {step}: {elapsed * 1000:.0f} ms, loss {losses[-1]:.4f}", flush=True)

    buckets = 0
    if not sharded:
        buckets = sum(int(b) for b in model._get_ddp_logging_data().get("bucket_sizes", "").split(",") if b)
    result = {
        "rank": rank,
        "strategy": strategy,
        "n_params": n_params,
        **held,
        "total": held["params"] + held["grads"] + held["optimizer"],
        "ddp_buckets": buckets,
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "rss_after_build": rss_built,
        "rss_end": rss_now(),
        "step_ms": [t * 1000 for t in times],
        "median_step_ms": statistics.median(times) * 1000,
        "losses": losses,
    }
    Path(out_dir, f"{strategy}_{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(strategy: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as out_dir:
        mp.spawn(worker, args=(strategy, args, free_port(), out_dir), nprocs=args.world_size, join=True)
        return [json.loads(Path(out_dir, f"{strategy}_{r}.json").read_text()) for r in range(args.world_size)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="a tiny model (seconds), to check the script")
    parser.add_argument("--n-layer", type=int, default=GPT2_MEDIUM["n_layer"])
    parser.add_argument("--n-head", type=int, default=GPT2_MEDIUM["n_head"])
    parser.add_argument("--n-embd", type=int, default=GPT2_MEDIUM["n_embd"])
    parser.add_argument("--vocab", type=int, default=GPT2_MEDIUM["vocab"])
    parser.add_argument("--block-size", type=int, default=GPT2_MEDIUM["block_size"])
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=64, help="tokens per sequence in the training batches")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (the first ones touch fresh memory: gradients, AdamW state)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps after the warm-up")
    parser.add_argument("--world-size", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "fsdp_memory.json")
    args = parser.parse_args()
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)

    results = {strategy: run(strategy, args) for strategy in ("ddp", "fsdp")}
    ddp, fsdp = results["ddp"], results["fsdp"]
    worst = {s: {k: max(r[k] for r in rs) for k in ("total", "peak_rss", "rss_end", "median_step_ms")} for s, rs in results.items()}
    ratio = worst["fsdp"]["total"] / worst["ddp"]["total"]
    overhead = worst["fsdp"]["median_step_ms"] / worst["ddp"]["median_step_ms"]
    loss_diff = max(abs(a - b) for d, f in zip(ddp, fsdp) for a, b in zip(d["losses"], f["losses"]))

    cols = [f"{s.upper()} rank {r['rank']}" for s in results for r in results[s]]
    print(
        f"\n{ddp[0]['n_params'] / 1e6:.1f}M parameters, float32, {args.world_size} gloo ranks on {cpu_model_name()}; "
        f"batch {args.batch_size} x {args.tokens} tokens; median of {args.steps} steps after {args.warmup} warm-up\n"
    )

    def row(label: str, key: str, scale: float = MB, fmt: str = "{:,.1f} MiB") -> list[str]:
        d, f = max(r[key] for r in ddp), max(r[key] for r in fsdp)
        return [label, *(fmt.format(r[key] / scale) for s in results for r in results[s]), f"{f / d:.3f}x" if d else "-"]

    rows = [
        row("parameters", "params"),
        row("gradients", "grads"),
        row("AdamW state", "optimizer"),
        row("**parameters + gradients + AdamW state**", "total"),
        row("DDP all-reduce buckets", "ddp_buckets"),
        row("peak RSS (ru_maxrss)", "peak_rss"),
        row("RSS after the model is built", "rss_after_build"),
        row("RSS after the last step", "rss_end"),
        row("ms/step (median)", "median_step_ms", 1.0, "{:,.0f}"),
    ]
    print(markdown_table(["per rank", *cols, "FSDP/DDP"], rows))
    print(
        f"\nparameters + gradients + AdamW state per rank: DDP {worst['ddp']['total']:,} bytes, "
        f"FSDP {worst['fsdp']['total']:,} bytes: {ratio:.3f}x (issue 18 target: <= 0.6x)"
    )
    print(f"step time FSDP/DDP: {overhead:.2f}x; largest loss difference between the strategies: {loss_diff:.2e}")

    out = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model_name(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "fsdp_over_ddp_bytes": ratio,
        "fsdp_over_ddp_step_time": overhead,
        "fsdp_over_ddp_peak_rss": worst["fsdp"]["peak_rss"] / worst["ddp"]["peak_rss"],
        "max_loss_difference": loss_diff,
        "per_rank": results,
    }
    write_json(args.out, out)


if __name__ == "__main__":
    main()
